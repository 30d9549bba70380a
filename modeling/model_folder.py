"""Check a `from_pretrained` GPT-2 folder before anything loads it (torch-free, cheap: reads headers only).

Every command that reads a model folder (eval.evaluate, modeling.convert, model_card.build, modeling.interp,
load_hf_model) calls `check_model_folder` first, so a damaged folder is one `error:` line naming the file instead
of a traceback from deep inside transformers or safetensors, and a folder of another architecture
(`model_type: llama`) is refused before any model is built.
"""

import json
from pathlib import Path

from .errors import UserError, first_line

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
SUPPORTED_MODEL_TYPE = "gpt2"
# A fast tokenizer needs tokenizer.json, a slow one vocab.json + merges.txt; tokenizer_config.json is read by both.
TOKENIZER_JSON_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


def read_json_file(path: Path, what: str) -> dict:
    """A JSON object from `path`, or UserError naming the file and what is wrong with it."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{what} {path} is damaged (not valid JSON: {first_line(e)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} is damaged (a JSON {type(data).__name__}, expected an object)")
    return data


def check_model_config(path: Path) -> dict:
    """config.json of a GPT-2 folder: valid JSON and model_type gpt2."""
    config = read_json_file(path, "model config")
    if config.get("model_type") != SUPPORTED_MODEL_TYPE:
        raise UserError(f"model config {path} has model_type {config.get('model_type')!r}; "
                        f"only {SUPPORTED_MODEL_TYPE!r} is supported")
    return config


def check_safetensors(path: Path) -> None:
    """The safetensors header parses and the file holds every byte it announces (truncation, corruption)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise UserError(f"model weights {path} not found")
    try:
        with safe_open(str(path), framework="numpy") as f:
            if not list(f.keys()):
                raise UserError(f"model weights {path} hold no tensors")
    except (SafetensorError, OSError) as e:
        raise UserError(f"model weights {path} are damaged or truncated ({first_line(e)})") from None


def check_tokenizer_folder(folder: Path) -> None:
    """The folder holds a loadable tokenizer: tokenizer.json, or vocab.json + merges.txt; JSON files parse."""
    has_fast = (folder / "tokenizer.json").is_file()
    has_slow = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    if not (has_fast or has_slow):
        raise UserError(f"{folder} has no tokenizer files (tokenizer.json, or vocab.json + merges.txt): "
                        "pass --tokenizer DIR")
    for name in TOKENIZER_JSON_FILES:
        if (folder / name).is_file():
            read_json_file(folder / name, "tokenizer file")
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
    check_safetensors(folder / WEIGHTS)
    if tokenizer:
        check_tokenizer_folder(folder)
    return config
