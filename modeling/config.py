"""Model configuration presets: `modeling/configs/<name>.json`, plain Hugging Face `config.json` files.

`gpt2-124m` is OpenAI GPT-2 small's exact shape (124,439,808 parameters with tied embeddings) with all dropout
at 0.0, nanoGPT's choice for pretraining on OpenWebText. `tiny` is a 2-layer CPU preset with the same vocabulary.
"""

import json
from pathlib import Path

from transformers import GPT2Config

from gpt2_owt.core.errors import UserError

CONFIGS_DIR = Path(__file__).parent / "configs"


def list_presets() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.json"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A preset name (`gpt2-124m`), a path to a config.json, or a folder holding one."""
    s = str(name_or_path)
    if s in list_presets():
        return CONFIGS_DIR / f"{s}.json"
    path = Path(s)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return path
    raise UserError(
        f"model config {s!r} is neither a preset ({', '.join(list_presets())}) nor an existing config.json path"
    )


def load_config(name_or_path: str | Path) -> GPT2Config:
    path = resolve_config_path(name_or_path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read model config {path}: {e}") from None
    if data.get("model_type") != "gpt2":
        raise UserError(f"model config {path} has model_type {data.get('model_type')!r}; only 'gpt2' is supported")
    return GPT2Config.from_dict(data)
