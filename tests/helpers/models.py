"""A tiny random-init GPT-2 saved as a `from_pretrained` folder with the shipped tokenizer (evaluation tests)."""

import shutil
from pathlib import Path

from gpt2_owt import modeling


def save_tiny_model(folder: Path, **config_overrides) -> Path:
    """`modeling.build_model("tiny", seed=0)` + the shipped tokenizer files; config fields overridable."""
    config = modeling.load_config("tiny")
    for key, value in config_overrides.items():
        setattr(config, key, value)
    modeling.build_model(config, seed=0).save_pretrained(folder)
    for name in sorted(modeling.TOKENIZER_SHA256):
        shutil.copy(modeling.TOKENIZER_DIR / name, folder / name)
    return folder

