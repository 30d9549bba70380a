"""GPT-2 model definition for gpt2-owt: config presets, the shipped tokenizer, model construction.

Imports nothing from `training`, `eval`, `model_card` or `upload`. Names are loaded lazily (PEP 562), so
`from modeling import UserError` or `import modeling.records` does not import torch/transformers; only the names
that need them (build_model, load_config, load_tokenizer, ...) do, on first use.

Torch-free modules: errors (UserError, cli_main), records (hashing, JSON, versions), tokenizer (files, hashes,
fingerprint), flops (FLOPs per token, device peaks), hf_folder's file names.
"""

import importlib

# name -> submodule that defines it
_EXPORTS = {
    "CONFIGS_DIR": "config", "list_presets": "config", "load_config": "config", "resolve_config_path": "config",
    "UserError": "errors", "cli_main": "errors",
    "build_model": "model", "count_parameters": "model", "fuse_gelu": "model",
    "sha256_file": "records",
    "EOT_TOKEN_ID": "tokenizer", "TOKENIZER_DIR": "tokenizer", "TOKENIZER_FILES": "tokenizer",
    "TOKENIZER_SHA256": "tokenizer", "VOCAB_SIZE": "tokenizer", "copy_tokenizer_files": "tokenizer",
    "load_tokenizer": "tokenizer", "tiktoken_encoding": "tokenizer", "tokenizer_fingerprint": "tokenizer",
    "verify_tokenizer_files": "tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
