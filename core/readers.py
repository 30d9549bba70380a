"""The one reader of files another stage wrote: JSON, JSONL, safetensors headers, a model config against its
weights. A damaged, missing or foreign file is one `UserError` naming the file and what is wrong with it, never a
JSONDecodeError / KeyError / segfault from deep inside a command.

    read_json(path, "run info")            -> dict (or `expect=list`)
    read_jsonl(path, "metrics")            -> list[dict]; a torn last line (an interrupted append) is dropped with a
                                              warning, a damaged line before it is an error
    safetensors_header(path)               -> (header, data_start); truncation and bad offsets are errors
    check_config_matches_weights(config, config_path, weights_path)
                                           -> a config.json that disagrees with its weights' shapes is one line
                                              naming both files

`DamagedFile` is a UserError and a ValueError, so `except ValueError` (a torn file read back for resuming) still
catches it. Torch-free (standard library only): light commands (verify, upload, model card) read through it.
"""

import json
import struct
import sys
from pathlib import Path

from .errors import UserError, first_line


class DamagedFile(UserError, ValueError):
    """A file that exists but does not hold what its writer writes."""


def _kind(value) -> str:
    return {dict: "an object", list: "a list"}.get(type(value), f"a {type(value).__name__}")


def read_json(path: str | Path, what: str = "file", expect: type = dict):
    """The JSON value in `path`, which must be of type `expect` (dict by default)."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"{what} {path} not found") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a folder, not a file") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DamagedFile(f"{what} {path} is damaged (not valid JSON: {first_line(e)})") from None
    if not isinstance(data, expect):
        raise DamagedFile(f"{what} {path} is damaged ({_kind(data)}, expected {_kind(expect())})")
    return data


def read_jsonl(path: str | Path, what: str = "file", missing_ok: bool = True) -> list[dict]:
    """The JSON objects of a .jsonl file ([] if it does not exist and `missing_ok`). A last line without its newline
    that does not parse is a row torn by an interrupted append: dropped with a warning (resume rewrites it)."""
    path = Path(path)
    if missing_ok and not path.exists():
        return []
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} {path} not found") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise DamagedFile(f"{what} {path} is damaged (not UTF-8 text: {first_line(e)})") from None
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):  # no newline after it: the writer stopped mid-row
                print(f"warning: {what} {path}: dropped its torn last line {number} (an interrupted write)",
                      file=sys.stderr)
                break
            raise DamagedFile(f"{what} {path} is damaged at line {number} (not valid JSON: {first_line(e)})") from None
        if not isinstance(row, dict):
            raise DamagedFile(f"{what} {path} is damaged at line {number} ({_kind(row)}, expected an object)")
        rows.append(row)
    return rows


def safetensors_header(path: str | Path, what: str = "model weights") -> tuple[dict, int]:
    """(header, byte offset where the tensor data starts) of a .safetensors file whose every tensor lies inside the
    file: a truncated or corrupted file is a DamagedFile naming it."""
    path = Path(path)

    def damaged(why: str) -> DamagedFile:
        return DamagedFile(f"{what} {path} are damaged or truncated ({why})")

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise damaged(f"{size} bytes, shorter than a header")
            (length,) = struct.unpack("<Q", head)
            if length > size - 8:
                raise damaged(f"header of {length:,} bytes announced, the file has {size:,}")
            header = json.loads(f.read(length))
    except FileNotFoundError:
        raise UserError(f"{what} {path} not found") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise damaged(f"header is not valid JSON: {first_line(e)}") from None
    if not isinstance(header, dict):
        raise damaged("header is not a JSON object")
    start = 8 + length
    tensors = {name: meta for name, meta in header.items() if name != "__metadata__"}
    if not tensors:
        raise damaged("holds no tensors")
    for name, meta in tensors.items():
        offsets = meta.get("data_offsets") if isinstance(meta, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] and isinstance(meta.get("shape"), list)):
            raise damaged(f"tensor {name} has no valid shape/data_offsets")
        if start + offsets[1] > size:
            raise damaged(f"tensor {name} ends at byte {start + offsets[1]:,}, the file has {size:,}")
    return header, start


# GPT-2 config field -> (tensor, axis) that holds it; names as saved from GPT2LMHeadModel or GPT2Model.
CONFIG_SHAPES = {"vocab_size": ("wte.weight", 0), "n_embd": ("wte.weight", 1), "n_positions": ("wpe.weight", 0)}


def check_config_matches_weights(config: dict, config_path: str | Path, weights_path: str | Path) -> None:
    """A GPT-2 config.json whose sizes disagree with the tensors in its model.safetensors (an edited config, files
    from two models): one line naming both files, before any model is built."""
    header, _ = safetensors_header(weights_path)
    shapes = {name.removeprefix("transformer."): meta["shape"] for name, meta in header.items()
              if name != "__metadata__"}
    found = {}
    for key, (tensor, axis) in CONFIG_SHAPES.items():
        if tensor in shapes and len(shapes[tensor]) > axis:
            found[key] = (shapes[tensor][axis], f"{tensor} {shapes[tensor]}")
    layers = {int(name.split(".")[1]) for name in shapes if name.startswith("h.") and name.split(".")[1].isdigit()}
    if layers:
        found["n_layer"] = (max(layers) + 1, f"{max(layers) + 1} blocks h.0..h.{max(layers)}")
    for key, (actual, where) in found.items():
        if key in config and config[key] != actual:
            raise UserError(f"model config {config_path} does not match the weights {weights_path}: {key} is "
                            f"{config[key]} in the config, {actual} in the weights ({where})")
