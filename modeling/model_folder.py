"""Check a `from_pretrained` GPT-2 folder before anything loads it (torch-free, cheap: reads headers only).

Every command that reads a model folder (eval.evaluate, modeling.convert, model_card.build, modeling.interp,
load_hf_model) calls `check_model_folder` first, so a damaged folder is one `error:` line naming the file instead
of a traceback from deep inside transformers or safetensors, a folder of another architecture
(`model_type: llama`) is refused before any model is built, and a config.json whose sizes disagree with the
weights is one line naming both (not transformers' `ignore_mismatched_sizes` error).
"""

from pathlib import Path

from gpt2_owt.core.errors import UserError, first_line
from gpt2_owt.core.readers import check_config_matches_weights, read_json

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
SUPPORTED_MODEL_TYPE = "gpt2"
# A fast tokenizer needs tokenizer.json, a slow one vocab.json + merges.txt; tokenizer_config.json is read by both.
TOKENIZER_JSON_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


def check_model_config(path: Path) -> dict:
    """config.json of a GPT-2 folder: valid JSON and model_type gpt2."""
    config = read_json(path, "model config")
    if config.get("model_type") != SUPPORTED_MODEL_TYPE:
        raise UserError(f"model config {path} has model_type {config.get('model_type')!r}; "
                        f"only {SUPPORTED_MODEL_TYPE!r} is supported")
    return config


def check_tokenizer_folder(folder: Path) -> None:
    """The folder holds a loadable tokenizer: tokenizer.json, or vocab.json + merges.txt; JSON files parse."""
    has_fast = (folder / "tokenizer.json").is_file()
    has_slow = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    if not (has_fast or has_slow):
        raise UserError(f"{folder} has no tokenizer files (tokenizer.json, or vocab.json + merges.txt): "
                        "pass --tokenizer DIR")
    for name in TOKENIZER_JSON_FILES:
        if (folder / name).is_file():
            read_json(folder / name, "tokenizer file")
    if has_fast:
        from tokenizers import Tokenizer

        try:
            Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as e:  # the Rust parser raises plain Exception for any malformed content
            raise UserError(f"tokenizer file {folder / 'tokenizer.json'} is damaged ({first_line(e)})") from None


def check_model_folder(folder: str | Path, tokenizer: bool = False) -> dict:
    """UserError unless `folder` is a readable GPT-2 `from_pretrained` folder; returns its config.json content."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"model folder {folder} does not exist" if not folder.exists()
                        else f"model folder {folder} is a file, not a from_pretrained folder")
    if not (folder / CONFIG).is_file():
        raise UserError(f"{folder} is not a from_pretrained folder (no {CONFIG})")
    config = check_model_config(folder / CONFIG)
    check_config_matches_weights(config, folder / CONFIG, folder / WEIGHTS)  # reads the header: damage first
    if tokenizer:
        check_tokenizer_folder(folder)
    return config
