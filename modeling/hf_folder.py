"""`from_pretrained` folders: write one atomically (weights + config + generation config + shipped tokenizer),
read one back as a `GPT2LMHeadModel`.

A folder written here loads with `GPT2LMHeadModel.from_pretrained(dir)` and `AutoTokenizer.from_pretrained(dir)`
with no network, and its tokenizer files are byte-identical to `modeling/tokenizer/`.
"""

import json
import os
import shutil
from pathlib import Path

import torch
from transformers import GPT2LMHeadModel

from .config import load_config
from .errors import UserError
from .tokenizer import copy_tokenizer_files


def save_hf_folder(model: GPT2LMHeadModel, output_dir: str | Path, extra_json: dict | None = None,
                   overwrite: bool = False) -> Path:
    """Write `model` + tokenizer (+ `extra_json` files, name -> dict) to `output_dir`, all or nothing.

    Everything goes to a temporary sibling folder first, then is renamed into place, so an interrupted run
    leaves no half-written release folder.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())) and not overwrite:
        raise UserError(f"output folder {output_dir} already exists and is not empty (pass --overwrite)")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_dir.with_name(f".{output_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)  # model.safetensors, config.json, generation_config.json
        copy_tokenizer_files(tmp)
        for name, data in (extra_json or {}).items():
            (tmp / name).write_text(json.dumps(data, indent=2) + "\n")
        if output_dir.exists():
            shutil.rmtree(output_dir) if output_dir.is_dir() else output_dir.unlink()
        os.replace(tmp, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output_dir


def load_hf_model(model_dir: str | Path) -> GPT2LMHeadModel:
    """A GPT-2 `from_pretrained` folder as an fp32 `GPT2LMHeadModel` in eval mode (UserError if it is not one)."""
    config = load_config(model_dir)  # checks the folder, config.json and model_type
    try:
        model = GPT2LMHeadModel.from_pretrained(str(model_dir), config=config, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load model weights from {model_dir}: {str(e).strip().splitlines()[0]}") from None
    return model.eval()
