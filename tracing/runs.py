"""A run folder as the tracing commands read it: the recipe it trained with (its data order) and its data."""

from dataclasses import fields
from pathlib import Path

from gpt2_owt.modeling import UserError, sha256_file
from gpt2_owt.modeling.records import read_json
from gpt2_owt.training.run_dir import RUN_INFO, TRAINING_CONFIG
from gpt2_owt.training.config import TrainConfig, parse_config
from gpt2_owt.training.data_dir import MANIFEST


def run_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig a run folder was trained with (its training_config.json)."""
    path = Path(run_dir) / TRAINING_CONFIG
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run folder (no {TRAINING_CONFIG})")
    saved = read_json(path)
    return TrainConfig(**{f.name: saved[f.name] for f in fields(TrainConfig) if f.name in saved})


def resolve_config(config: str | None, run_dir: str | None, overrides: list[str]) -> TrainConfig:
    if config:
        return parse_config(["--config", config, *overrides], validate=False)
    if run_dir:
        if overrides:
            raise UserError(f"config overrides {overrides} need --config (a run folder's config is fixed)")
        return run_config(run_dir)
    raise UserError("--config RECIPE.yaml (or --run_dir) is required: it gives seq_len, global_batch_size, seed, steps")


def check_run_matches(run_dir: Path, data_dir: Path) -> None:
    info_path = run_dir / RUN_INFO
    if not info_path.is_file():
        raise UserError(f"{run_dir} is not a run folder (no {RUN_INFO})")
    if read_json(info_path).get("data_manifest_sha256") != sha256_file(data_dir / MANIFEST):
        raise UserError(f"{run_dir} was not trained on {data_dir} (data manifest sha256 differs)")
