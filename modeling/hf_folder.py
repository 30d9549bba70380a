"""`from_pretrained` folders: the one writer (weights + config + generation config + shipped tokenizer, written
atomically), and the reader returning a `GPT2LMHeadModel`.

A folder written here loads with `GPT2LMHeadModel.from_pretrained(dir)` and `AutoTokenizer.from_pretrained(dir)`
with no network, and its tokenizer files are byte-identical to `modeling/tokenizer/`. The trainer's exports
(run_dir/hf/*), conversions and tests all go through `save_hf_folder`.

The file names below are torch-free to import (upload.py and the model card check folders without torch).
"""

import json
import os
import shutil
from pathlib import Path

from gpt2_owt.core.errors import UserError
from gpt2_owt.core.records import sha256_file, write_json_atomic

from .model_folder import check_model_folder
from .tokenizer import copy_tokenizer_files

WEIGHTS = "model.safetensors"
MODEL_CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
EXPORT_INFO = "export_info.json"  # {"step", "tokens", ..., "weights_sha256"} of a training export


def save_hf_folder(model, output_dir: str | Path, extra_json: dict | None = None, overwrite: bool = False,
                   state_dict: dict | None = None, export_info: dict | None = None) -> Path:
    """Write `model` + tokenizer (+ `extra_json` files, name -> dict) to `output_dir`, all or nothing.

    `state_dict` replaces the model's own tensors (the trainer passes the full weights gathered under ZeRO-3);
    `export_info` is written as export_info.json with "weights_sha256" of the written model.safetensors added.
    Everything goes to a temporary sibling folder first, then is renamed into place, so an interrupted run
    leaves no half-written folder.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())) and not overwrite:
        raise UserError(f"output folder {output_dir} already exists and is not empty (pass --overwrite)")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_dir.with_name(f".{output_dir.name}.tmp-{os.getpid()}")
    for stale in output_dir.parent.glob(f".{output_dir.name}.tmp-*"):  # left by a writer that was killed
        shutil.rmtree(stale, ignore_errors=True)
    try:
        model.save_pretrained(tmp, state_dict=state_dict)  # model.safetensors, config.json, generation_config.json
        copy_tokenizer_files(tmp)
        for name, data in (extra_json or {}).items():
            (tmp / name).write_text(json.dumps(data, indent=2) + "\n")
        if export_info is not None:
            write_json_atomic(tmp / EXPORT_INFO, {**export_info, "weights_sha256": sha256_file(tmp / WEIGHTS)})
        if output_dir.exists():
            shutil.rmtree(output_dir) if output_dir.is_dir() else output_dir.unlink()
        os.replace(tmp, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output_dir


def load_hf_model(model_dir: str | Path):
    """A GPT-2 `from_pretrained` folder as an fp32 `GPT2LMHeadModel` in eval mode (UserError if it is not one)."""
    import torch
    from transformers import GPT2LMHeadModel

    from .config import load_config

    check_model_folder(model_dir)  # the folder, config.json, model_type and the safetensors header: one line each
    config = load_config(model_dir)
    try:
        model = GPT2LMHeadModel.from_pretrained(str(model_dir), config=config, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load model weights from {model_dir}: {str(e).strip().splitlines()[0]}") from None
    return model.eval()
