"""GPT-2 model definition for gpt2-owt: config presets, the shipped tokenizer, model construction.

Imports nothing from `training`, `eval`, `model_card` or `upload`.
"""

from .config import CONFIGS_DIR, list_presets, load_config, resolve_config_path
from .errors import UserError, cli_main
from .model import build_model, count_parameters
from .tokenizer import (
    EOT_TOKEN_ID,
    copy_tokenizer_files,
    TOKENIZER_DIR,
    TOKENIZER_FILES,
    TOKENIZER_SHA256,
    VOCAB_SIZE,
    load_tokenizer,
    tiktoken_encoding,
    sha256_file,
    tokenizer_fingerprint,
    verify_tokenizer_files,
)

__all__ = [
    "CONFIGS_DIR", "EOT_TOKEN_ID", "TOKENIZER_DIR", "TOKENIZER_FILES", "TOKENIZER_SHA256", "VOCAB_SIZE", "UserError",
    "build_model", "cli_main", "copy_tokenizer_files", "count_parameters", "list_presets", "load_config", "load_tokenizer",
    "resolve_config_path", "sha256_file", "tiktoken_encoding", "tokenizer_fingerprint", "verify_tokenizer_files",
]
