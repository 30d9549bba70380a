"""The one owner of a run's checkpoints (`run_dir/checkpoints/stepN/`): save, latest, load, verify, prune, and what
checkpoint_info.json records (torchtitan's CheckpointManager shape). The trainer saves and resumes through it,
`gpt2-owt replay` loads through it, upload publishes the folders it wrote.

    checkpoints/stepN/       accelerator.save_state output (model, optimizer, schedule, RNG states; under DeepSpeed
                             its per-process partitions), written under `.tmp-stepN` and renamed when complete
      checkpoint_info.json   CHECKPOINT_INFO_KEYS below, written last

A folder is trusted only if its info parses, holds every key, and every file it lists is there with its recorded
sha256: a checkpoint truncated by a full disk, a half-deleted folder or a hand-edited info file is detected instead
of loaded. `latest()` (what `--resume_from_checkpoint auto` uses) walks back from the newest checkpoint to the newest
intact one; an explicit folder must be intact.
"""

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

from gpt2_owt.core.errors import UserError
from gpt2_owt.core.records import sha256_file, write_json_atomic
from gpt2_owt.core.steps import step_name
from gpt2_owt.training.data_dir import DATA_ORDER_FIELDS, read_recipe
from gpt2_owt.training.run_dir import CHECKPOINT_INFO, CHECKPOINTS, list_step_dirs

# checkpoint_info.json, every key (the one list: save() writes exactly these, verify() requires them)
CHECKPOINT_INFO_KEYS = {
    "step": "updates done (core/steps.py): the folder is checkpoints/step<step>",
    "tokens": "tokens trained on: step * tokens_per_step",
    "elapsed_seconds": "training wall time up to this step, over every resume",
    "world_size": "processes that wrote it",
    "zero_stage": "DeepSpeed ZeRO stage (null: plain Accelerate state, loadable at any world size)",
    "identity": "the run identity at this step (run_identity): what a resume must not silently change",
    "files": "{path relative to the folder: sha256} of every other file in the folder",
}
# The run identity's training-config fields: a resume that changes one is a different run unless allowed.
IDENTITY_FIELDS = (*DATA_ORDER_FIELDS, "total_steps", "learning_rate", "min_lr", "warmup_steps", "weight_decay",
                   "adam_beta1", "adam_beta2", "adam_eps", "grad_clip", "init_seed")
# Model-config keys of the identity (they fix the tensors' shapes and meaning): never allowed to change.
MODEL_IDENTITY_KEYS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "activation_function",
                       "layer_norm_epsilon", "tie_word_embeddings", "scale_attn_by_inverse_layer_idx",
                       "reorder_and_upcast_attn")
SHAPE_FIELDS = ("model",)
# How torch.save (PytorchStreamWriter) words a failed write, e.g. on a full disk.
TORCH_WRITE_ERRORS = ("PytorchStreamWriter", "unexpected pos", "iostream error", "file write failed")


# ---------------------------------------------------------------------------------------------- run identity
def model_identity(model_config: dict, vocab_rows: int) -> dict:
    """The model's shape as a checkpoint must match it: config keys plus the output rows it trains with (padding)."""
    return {k: model_config.get(k) for k in MODEL_IDENTITY_KEYS} | {"vocab_rows": vocab_rows}


def run_identity(config_fields: dict, model: dict, data_manifest_sha256: str | None) -> dict:
    """What a resume must not silently change: model shape, data (manifest sha256), batch layout, optimizer and
    schedule hyperparameters, seeds. `config_fields` is a resolved training_config.json (TrainConfig + total_steps)."""
    return {"model": model, "data_manifest_sha256": data_manifest_sha256,
            **read_recipe(config_fields, IDENTITY_FIELDS)}


def identity_changes(old: dict, new: dict) -> dict:
    """{key: [old, new]} for every identity entry that differs (entries the old record lacks are not compared)."""
    return {k: [old[k], new.get(k)] for k in old if old[k] != new.get(k)}


def check_identity(folder: Path, info: dict, identity: dict, allow_changed: bool) -> dict:
    """The identity changes this resume makes ({key: [old, new]}); UserError unless allowed (never for the model)."""
    old = info["identity"]
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
    saved_world, saved_stage = info["world_size"], info["zero_stage"]
    if saved_stage is None and zero_stage is None:
        return
    if (saved_world, saved_stage) != (world_size, zero_stage):
        def layout(world, stage):
            return f"{world} process{'es' if world != 1 else ''} " + (
                "without DeepSpeed" if stage is None else f"with DeepSpeed ZeRO-{stage}")

        how = "without DeepSpeed (at any number of processes)" if saved_stage is None else (
            f"with `accelerate launch --num_processes {saved_world}` and the same ZeRO-{saved_stage} DeepSpeed config")
        raise UserError(f"checkpoint {folder} was written by {layout(saved_world, saved_stage)} and this run has "
                        f"{layout(world_size, zero_stage)}: resume it {how} (docs/checkpoints.md: resume at another "
                        "world size)")


# ---------------------------------------------------------------------------------------------- one folder
def file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != CHECKPOINT_INFO}


def verify(folder: str | Path) -> dict:
    """The checkpoint's info if the folder is intact, else UserError saying what is wrong."""
    folder = Path(folder)
    path = folder / CHECKPOINT_INFO
    if not path.is_file():
        raise UserError(f"{folder} is not a complete checkpoint (no {CHECKPOINT_INFO})")
    try:
        info = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"checkpoint {folder} is damaged: {CHECKPOINT_INFO} is not valid JSON") from None
    missing = [k for k in CHECKPOINT_INFO_KEYS if not isinstance(info, dict) or k not in info]
    if missing or not isinstance(info["step"], int) or not isinstance(info["files"], dict):
        lacks = ", ".join(missing) or "a valid step or file list"
        raise UserError(f"checkpoint {folder} is damaged: {CHECKPOINT_INFO} lacks {lacks}")
    for name, digest in info["files"].items():
        file = folder / name
        if not file.is_file():
            raise UserError(f"checkpoint {folder} is damaged: {name} is missing")
        if sha256_file(file) != digest:
            raise UserError(f"checkpoint {folder} is damaged: {name} does not match its sha256 in {CHECKPOINT_INFO}")
    return info


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


# ---------------------------------------------------------------------------------------------- the manager
class Checkpointer:
    """checkpoints/ of one run folder. `save` and `load` are collective (every process calls them); the rest reads
    or deletes folders and is for the main process."""

    def __init__(self, run_dir: str | Path, keep_last: int = 1, milestone_interval: int = 0):
        self.folder = Path(run_dir) / CHECKPOINTS
        self.keep_last, self.milestone_interval = keep_last, milestone_interval

    def steps(self) -> list[tuple[int, Path]]:
        """(step, folder) of every checkpoint, oldest first (intact or not: see verify)."""
        return list_step_dirs(self.folder)

    def latest(self) -> tuple[Path, dict] | None:
        """The newest intact checkpoint (skipping damaged newer ones with one warning line each), None if there is
        none at all; UserError if every one is damaged."""
        found = self.steps()
        for _, folder in reversed(found):
            try:
                return folder, verify(folder)
            except UserError as e:
                print(f"warning: {e}; trying the previous checkpoint", file=sys.stderr)
        if found:
            raise UserError(f"no intact checkpoint in {self.folder} (all {len(found)} are damaged): resume from an "
                            "earlier copy or start again with --overwrite_output_dir")
        return None

    def save(self, accelerator, step: int, info: dict) -> Path:
        """accelerator.save_state into checkpoints/stepN with checkpoint_info.json = `info` (every key but "files")
        + the files' sha256, complete-or-absent: written under a temp name, renamed by the main process once every
        process has written its part (replacing a step an earlier attempt saved), then pruned."""
        if set(info) | {"files"} != set(CHECKPOINT_INFO_KEYS):
            raise ValueError(f"checkpoint info keys {sorted(info)} are not CHECKPOINT_INFO_KEYS without 'files'")
        tmp, final = self.folder / f".tmp-{step_name(step)}", self.folder / step_name(step)
        with complete_or_absent(tmp, final):
            if accelerator.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)  # left over from a killed attempt
                tmp.mkdir(parents=True)
            accelerator.wait_for_everyone()
            accelerator.save_state(str(tmp))
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                write_json_atomic(tmp / CHECKPOINT_INFO, info | {"files": file_hashes(tmp)})
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
        if accelerator.is_main_process:
            self.prune()
        accelerator.wait_for_everyone()
        return final

    @staticmethod
    def load(accelerator, folder: str | Path) -> None:
        """Restore model, optimizer, schedule and RNG states from a verified checkpoint folder (every process)."""
        accelerator.load_state(str(folder))

    def prune(self) -> None:
        """Keep the last `keep_last` checkpoints (the latest always, even with keep_last 0: it is what a resume
        needs) plus milestones (multiples of `milestone_interval`)."""
        found = self.steps()
        kept = {s for s, _ in found[-max(1, self.keep_last):]}
        for s, path in found:
            if s not in kept and not (self.milestone_interval and s % self.milestone_interval == 0):
                shutil.rmtree(path)
