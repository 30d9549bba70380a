"""Checkpoint folders (`run_dir/checkpoints/stepN/`): what their info records, and which one a resume may trust.

    checkpoints/stepN/      accelerator.save_state output, written under `.tmp-stepN` and renamed when complete
      checkpoint_info.json   {"step", "tokens", "elapsed_seconds", "world_size", "zero_stage",
                              "identity": {...},            the run identity at that step (see run_identity)
                              "model", "seq_len", "global_batch_size",   (kept for older readers)
                              "files": {relative path: sha256}}          every other file of the folder

A folder is trusted only if its info parses and every file it lists is there with its recorded sha256: a checkpoint
truncated by a full disk, a half-deleted folder or a hand-edited info file is detected instead of loaded.
`--resume_from_checkpoint auto` walks back from the newest checkpoint to the newest intact one; an explicit path
must be intact.
"""

import contextlib
import json
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

from gpt2_owt.modeling import UserError, sha256_file
from gpt2_owt.modeling.records import write_json_atomic
from gpt2_owt.training.run_dir import CHECKPOINT_INFO, list_step_dirs

INFO = CHECKPOINT_INFO
# Training-config fields that define the run: a resume that changes one is a different run unless allowed.
IDENTITY_FIELDS = ("seq_len", "global_batch_size", "total_steps", "learning_rate", "min_lr", "warmup_steps",
                   "weight_decay", "adam_beta1", "adam_beta2", "adam_eps", "grad_clip", "init_seed", "data_seed")
# Identity entries that fix tensor shapes: never allowed to change (the state would not even load).
SHAPE_FIELDS = ("model",)
# How torch.save (PytorchStreamWriter) words a failed write, e.g. on a full disk.
TORCH_WRITE_ERRORS = ("PytorchStreamWriter", "unexpected pos", "iostream error", "file write failed")


def run_identity(config_fields: dict, model: dict, data_manifest_sha256: str) -> dict:
    """What a resume must not silently change: model shape, data (manifest sha256), batch layout, optimizer and
    schedule hyperparameters. `config_fields` is a resolved training_config.json (TrainConfig fields + total_steps)."""
    return {"model": model, "data_manifest_sha256": data_manifest_sha256,
            **{k: config_fields.get(k) for k in IDENTITY_FIELDS}}


def identity_changes(old: dict, new: dict) -> dict:
    """{key: [old, new]} for every identity entry that differs (entries the old record lacks are not compared)."""
    return {k: [old[k], new.get(k)] for k in old if old[k] != new.get(k)}


def file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != INFO}


def write_info(folder: Path, info: dict) -> dict:
    """checkpoint_info.json = `info` + the sha256 of every file already in `folder` (call it last)."""
    info = info | {"files": file_hashes(folder)}
    write_json_atomic(folder / INFO, info)
    return info


def read_info(folder: Path) -> dict:
    """The checkpoint's info if the folder is intact, else UserError saying what is wrong."""
    path = folder / INFO
    if not path.is_file():
        raise UserError(f"{folder} is not a complete checkpoint (no {INFO})")
    try:
        info = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"checkpoint {folder} is damaged: {INFO} is not valid JSON") from None
    if not isinstance(info, dict) or not isinstance(info.get("step"), int) or not isinstance(info.get("files"), dict):
        raise UserError(f"checkpoint {folder} is damaged: {INFO} lacks its step or file list")
    for name, digest in info["files"].items():
        file = folder / name
        if not file.is_file():
            raise UserError(f"checkpoint {folder} is damaged: {name} is missing")
        if sha256_file(file) != digest:
            raise UserError(f"checkpoint {folder} is damaged: {name} does not match its sha256 in {INFO}")
    return info


def find_resumable(checkpoints: Path) -> tuple[Path, dict] | None:
    """The newest intact checkpoint under `checkpoints` (skipping damaged newer ones with one line each), or None
    if there is none at all. Only damaged ones: UserError."""
    found = list_step_dirs(checkpoints)
    for _, folder in reversed(found):
        try:
            return folder, read_info(folder)
        except UserError as e:
            print(f"warning: {e}; trying the previous checkpoint", file=sys.stderr)
    if found:
        raise UserError(f"no intact checkpoint in {checkpoints} (all {len(found)} are damaged): resume from an "
                        "earlier copy or start again with --overwrite_output_dir")
    return None


def check_identity(folder: Path, info: dict, identity: dict, allow_changed: bool) -> dict:
    """The identity changes this resume makes ({key: [old, new]}); UserError unless allowed (never for the model)."""
    old = info.get("identity") or {k: info.get(k) for k in ("model", "seq_len", "global_batch_size")}
    changes = identity_changes(old, identity)
    refused = {k: v for k, v in changes.items() if k in SHAPE_FIELDS or not allow_changed}
    if refused:
        made = ", ".join(f"{k}={old}" for k, (old, _) in refused.items())
        has = ", ".join(f"{k}={new}" for k, (_, new) in refused.items())
        hint = "" if set(refused) <= set(SHAPE_FIELDS) else (
            " (pass --allow_changed_config true to continue with the change; run_info.json records it)")
        raise UserError(f"checkpoint {folder} was made with {made}, this run has {has}{hint}")
    return changes


def check_layout(folder: Path, info: dict, world_size: int, zero_stage: int | None) -> None:
    """A plain (DDP / one process) checkpoint resumes at any world size: its state is whole. A DeepSpeed one holds
    optimizer state partitioned per process: it resumes only with the same world size and ZeRO stage."""
    saved_world, saved_stage = info.get("world_size"), info.get("zero_stage")
    if saved_stage is None and zero_stage is None:
        return
    if (saved_world, saved_stage) != (world_size, zero_stage):
        def layout(world, stage):
            return f"{world} process{'es' if world != 1 else ''} " + (
                "without DeepSpeed" if stage is None else f"with DeepSpeed ZeRO-{stage}")

        how = "without DeepSpeed (at any number of processes)" if saved_stage is None else (
            f"with `accelerate launch --num_processes {saved_world}` and the same ZeRO-{saved_stage} DeepSpeed config")
        raise UserError(f"checkpoint {folder} was written by {layout(saved_world, saved_stage)} and this run has "
                        f"{layout(world_size, zero_stage)}: resume it {how} (README: resume at another world size)")


def add_segment(segments: list[dict], step: int, changes: dict) -> list[dict]:
    """`segments` plus one {"from_step", "changes": {key: {"old", "new"}}, "recorded_at"} for an allowed identity
    change at `step` (not twice when a resume with the same change is repeated)."""
    if not changes:
        return list(segments)
    segment = {"from_step": step, "changes": {k: {"old": old, "new": new} for k, (old, new) in changes.items()}}
    if segments and {k: segments[-1].get(k) for k in segment} == segment:
        return list(segments)
    return [*segments, segment | {"recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}]


@contextlib.contextmanager
def complete_or_absent(tmp: Path, final: Path):
    """Around writing a folder at `tmp` that is then renamed to `final`: a write error (full disk, read-only or
    missing location) removes `tmp` and becomes one UserError, so nothing half-written is left under either name."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        if isinstance(e, OSError):
            cause = f"{e.strerror or e} ({e.filename or tmp})"
        elif any(s in str(e) for s in TORCH_WRITE_ERRORS):  # torch.save reports a failed write as a RuntimeError
            full = shutil.disk_usage(tmp.parent).free < (1 << 20)
            cause = f"{'No space left on device' if full else str(e).splitlines()[0]} ({tmp})"
        else:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot write {final}: {cause}; nothing half-written was kept and earlier checkpoints are "
                        "intact: free space, then continue with --resume_from_checkpoint auto") from None
