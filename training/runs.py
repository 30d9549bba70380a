"""A run folder as the commands that answer from a run read it (data-order, trace, replay, attribute): the
recipe it trained with (its data order), how far it got, and its data.

What fixes the data order a trace answers from: seq_len, global_batch_size and data_seed (the sampler,
training/data_dir.py `WindowSampler.for_run`) and the run's number of steps. A `--config` given next to `--run_dir`
must agree with the run's training_config.json in all four (one error line naming each difference), and a run that
changed any of them on a resume (run_info.json `segments`) is refused: one sampler cannot answer for it. An
interrupted run trained only `steps_done` updates: exposures stop there.
"""

from dataclasses import fields, replace
from pathlib import Path

from gpt2_owt.core.errors import UserError, first_line
from gpt2_owt.core.readers import read_json
from gpt2_owt.core.records import sha256_file
from gpt2_owt.modeling.checkpoint_series import is_hub_id
from gpt2_owt.training.config import TrainConfig, parse_config
from gpt2_owt.training.data_dir import DATA_ORDER_FIELDS, MANIFEST, read_recipe
from gpt2_owt.training.manifest import manifest_content
from gpt2_owt.training.run_dir import RUN_INFO, TRAINING_CONFIG, not_a_run_folder

def config_from_json(path: str | Path) -> TrainConfig:
    """A resolved training_config.json (a run's, or a release's copy) as a TrainConfig."""
    saved = read_json(path)
    return TrainConfig(**{f.name: saved[f.name] for f in fields(TrainConfig) if f.name in saved})


def run_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig a run folder was trained with (its training_config.json)."""
    path = Path(run_dir) / TRAINING_CONFIG
    if not path.is_file():
        raise not_a_run_folder(run_dir, TRAINING_CONFIG)
    return config_from_json(path)


def data_order(cfg: TrainConfig) -> dict:
    return {**read_recipe(cfg), "steps": cfg.total_steps()}


def resolve_config(config: str | None, run_dir: str | None, overrides: list[str]) -> TrainConfig:
    """The recipe a trace answers from: the run's own (--run_dir), or --config plus overrides, which must then give
    the run's data order when a run is named too."""
    if not config and not run_dir:
        raise UserError("--config RECIPE.yaml (or --run_dir) is required: it gives seq_len, global_batch_size, "
                        "data_seed, steps")
    if not config:
        if overrides:
            raise UserError(f"config overrides {overrides} need --config (a run folder's config is fixed)")
        return run_config(run_dir)
    cfg = parse_config(["--config", config, *overrides], validate=False)
    # what `train` refuses has no data order to answer for (e.g. seq_len past the model's n_positions)
    cfg.validate_recipe()
    cfg.check_model_fits()
    if not run_dir:
        return cfg
    run = run_config(run_dir)
    ran, given = data_order(run), data_order(cfg)
    differ = [f"{k} {given[k]} (the run: {ran[k]})" for k in ran if given[k] != ran[k]]
    if differ:
        raise UserError(f"--config {config} gives another data order than {run_dir}/{TRAINING_CONFIG}: "
                        f"{', '.join(differ)}; drop --config to use the run's own recipe")
    return replace(run, data_dir=cfg.data_dir or run.data_dir)  # the same order; what it exported is the run's


def steps_done(run_dir: str | Path, cfg: TrainConfig) -> int:
    """Updates the run trained (run_info.json steps_done: fewer than the recipe's steps when it was interrupted);
    refuses a run that changed its data order on a resume."""
    info_path = Path(run_dir) / RUN_INFO
    if not info_path.is_file():
        raise not_a_run_folder(run_dir, RUN_INFO)
    info = read_json(info_path)
    for segment in info.get("segments") or []:
        changed = sorted(set(segment.get("changes", {})) & {*DATA_ORDER_FIELDS, "total_steps", "data_manifest_sha256"})
        if changed:
            raise UserError(f"{run_dir} changed its data order when it resumed at step {segment.get('from_step')} "
                            f"({', '.join(changed)}; run_info.json segments): one sampler cannot trace it")
    done = info.get("steps_done")
    if not isinstance(done, int) or not 0 <= done <= cfg.total_steps():
        raise UserError(f"{run_dir}/{RUN_INFO} has no valid steps_done ({done!r}) for a {cfg.total_steps()}-step run")
    return done


def update_limit(cfg: TrainConfig, run_dir: str | Path | None) -> tuple[int, str]:
    """(N, whose) for the one "past the run" rule of every command asked about an update: the updates that exist
    are 0..N-1, N being a run folder's steps_done (an interrupted run did fewer than its recipe's steps) or, for a
    recipe alone, its steps; `whose` says so in the refusal."""
    if run_dir is not None:
        done = steps_done(run_dir, cfg)
        return done, f"{run_dir} trained updates 0..{done - 1} ({done} steps)" if done else f"{run_dir} trained none"
    total = cfg.total_steps()
    budget = f"max_steps {total}" if cfg.max_steps is not None else f"max_tokens {cfg.max_tokens}: {total} steps"
    return total, f"the recipe's {budget} trains updates 0..{total - 1}"


def check_update(flag: str, update: int, limit: tuple[int, str]) -> None:
    """Refuse an update past the run (see update_limit): the answer would describe an update that never happened."""
    done, whose = limit
    if update >= done:
        raise UserError(f"{flag} {update} is past the run: {whose}")


def parse_updates(spec: str, done: int) -> tuple[int, int]:
    """`--updates A:B` -> (A, B) with 0 <= A < B <= done (the updates the run did; B excluded)."""
    parts = spec.split(":")
    try:
        start, end = (int(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        start = end = None
    if start is None:
        raise UserError(f"--updates {spec!r}: expected A:B (the updates A <= u < B), e.g. 0:10")
    if not 0 <= start < end <= done:
        raise UserError(f"--updates {spec}: the run did updates 0..{done - 1} (A:B needs 0 <= A < B <= {done})")
    return start, end


def release_config(repo_id: str, data_dir: str | Path) -> TrainConfig:
    """A published release's recipe (training_config.json on its main branch), after checking that data_dir is the
    data it trained on (the release's copy of the data manifest, manifest.json, equal but for when and by which
    command the data was prepared: `manifest_content`)."""
    from huggingface_hub import hf_hub_download  # the Hub client: only for a release
    from huggingface_hub.errors import HfHubHTTPError

    if not is_hub_id(repo_id):
        raise UserError(f"--repo_id {repo_id!r} is not a Hub repo id (user/name)")
    if not (Path(data_dir) / MANIFEST).is_file():
        raise UserError(f"--repo_id needs --data_dir: the prepared data the release trained on ({data_dir} has no "
                        f"{MANIFEST})")
    try:
        manifest = hf_hub_download(repo_id, MANIFEST)
        config = hf_hub_download(repo_id, TRAINING_CONFIG)
    except HfHubHTTPError as e:
        raise UserError(f"cannot read {TRAINING_CONFIG} and {MANIFEST} of the release {repo_id}: "
                        f"{first_line(e)}") from None
    if manifest_content(read_json(manifest)) != manifest_content(read_json(Path(data_dir) / MANIFEST)):
        raise UserError(f"{repo_id} was not trained on {data_dir} (its {MANIFEST} differs from the data_dir's)")
    return config_from_json(config)


def run_data_dir(run_dir: Path, cfg: TrainConfig, data_dir: str | Path | None) -> Path:
    """The data a run trained on: `data_dir`, or the folder its recipe names, checked to be that data."""
    data_dir = Path(data_dir or cfg.data_dir or "")
    if not (data_dir / MANIFEST).is_file():
        raise UserError(f"data_dir {data_dir} of the run is not a prepared data folder (give --data_dir)")
    check_run_matches(run_dir, data_dir)
    return data_dir


def check_run_matches(run_dir: Path, data_dir: Path) -> None:
    info_path = run_dir / RUN_INFO
    if not info_path.is_file():
        raise not_a_run_folder(run_dir, RUN_INFO)
    if read_json(info_path).get("data_manifest_sha256") != sha256_file(data_dir / MANIFEST):
        raise UserError(f"{run_dir} was not trained on {data_dir} (data manifest sha256 differs)")
