"""A tiny random-init GPT-2 saved as a `from_pretrained` folder with the shipped tokenizer (evaluation tests)."""

import shutil
from pathlib import Path

from gpt2_owt.modeling.config import load_config
from gpt2_owt.modeling.model import build_model
from gpt2_owt.modeling.tokenizer import TOKENIZER_DIR, TOKENIZER_SHA256


def save_tiny_model(folder: Path, **config_overrides) -> Path:
    """`modeling.build_model("tiny", seed=0)` + the shipped tokenizer files; config fields overridable."""
    config = load_config("tiny")
    for key, value in config_overrides.items():
        setattr(config, key, value)
    build_model(config, seed=0).save_pretrained(folder)
    for name in sorted(TOKENIZER_SHA256):
        shutil.copy(TOKENIZER_DIR / name, folder / name)
    return folder

