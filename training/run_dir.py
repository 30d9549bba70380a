"""The training run folder (`run_dir/` = the trainer's `output_dir`): its layout, written down once, and `RunDir`,
the one writer of everything in it except the Accelerate state inside checkpoints.

    run_dir/
      training_config.json   the resolved TrainConfig, every field (the model card's hyperparameter table reads it)
      run_info.json          environment of the run: git commit, package versions, hardware, world size, command
                             line, data manifest sha256, wall time and tokens so far (updated as the run goes)
      data_manifest.json     copy of the data_dir's manifest.json the run trained on
      metrics.jsonl          one JSON object per line: {"step", "tokens", "train_loss"|"val_loss", "lr", ...}
      checkpoints/stepN/     Accelerate `save_state` folders + checkpoint_info.json, complete-or-absent
                             (training/checkpointer.py owns them)
      hf/stepN/              `from_pretrained` exports (safetensors + config + generation_config + tokenizer
                             + export_info.json), written by modeling/hf_folder.save_hf_folder
      hf/final/              the export at the end of training
      logs/                  tracker output (tensorboard), when report_to is not "none"
      fed_batches.jsonl      sha256 of every batch fed, when record_fed_batches is on (data-order audits)
      sequence_losses/       float32 training loss of every sequence of every global batch (record_sequence_losses,
                             on by default): info.json + steps_SSSSSSSS.f32 shards of [1000 steps, global_batch_size],
                             row = update step (0-based), column = row of the global batch (training/sequence_losses.py)

Step numbers (core/steps.py): metrics.jsonl rows say "step" N (the state after N updates); per-update rows
(fed_batches.jsonl, sequence_losses/) say "update" u (0-based). On resume from checkpoint step S, metrics rows with
step <= S and per-update rows with update < S are kept; the rest were written after the checkpoint by the killed
run and are written again.

Keys (readers must tolerate extra keys; the dicts below are the one list of each record's keys):
    training_config.json   every TrainConfig field (resolved: seeds, compile, fused_adamw), plus RESOLVED_KEYS
    run_info.json          RUN_INFO_KEYS
    metrics.jsonl          train rows {"step", "tokens", "train_loss", "lr", "grad_norm", "tokens_per_sec", "mfu",
                           "elapsed_seconds", "memory_gb", "<phase>_seconds" (training/timing.py)};
                           val rows {"step", "tokens", "val_loss"}
    fed_batches.jsonl      {"update", "tokens_sha256"}
    checkpoints/*/checkpoint_info.json   training/checkpointer.py CHECKPOINT_INFO_KEYS (its owner)
    hf/*/export_info.json  {"step", "tokens", "weights_sha256"} (sha256 of model.safetensors; modeling/hf_folder.py)
    .writer.lock           held by the trainer while it runs (core/folder_lock.py): one writer per run folder

Torch-free (standard library only): upload.py and model_card read run folders through this module.
"""

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from gpt2_owt.core.errors import UserError
from gpt2_owt.core.folder_lock import LOCK_FILE  # noqa: F401  (part of this layout; folder_lock owns it)
from gpt2_owt.core.readers import DamagedFile, read_json, read_jsonl
from gpt2_owt.core.records import write_json_atomic
from gpt2_owt.core.steps import parse_step_name
from gpt2_owt.modeling.hf_folder import EXPORT_INFO, WEIGHTS  # noqa: F401  (part of this layout; the HF-folder writer owns them)

TRAINING_CONFIG = "training_config.json"
RUN_INFO = "run_info.json"
DATA_MANIFEST = "data_manifest.json"
METRICS = "metrics.jsonl"
FED_BATCHES = "fed_batches.jsonl"
CHECKPOINTS = "checkpoints"
SEQUENCE_LOSSES = "sequence_losses"  # per-sequence training losses (training/sequence_losses.py)
CHECKPOINT_INFO = "checkpoint_info.json"
HF_EXPORTS = "hf"
FINAL = "final"
LOGS = "logs"
PER_UPDATE_ROWS = (FED_BATCHES,)  # jsonl files of one row per update: {"update": u, ...}
RUN_FILES = (TRAINING_CONFIG, RUN_INFO, DATA_MANIFEST, METRICS, FED_BATCHES)
RUN_FOLDERS = (CHECKPOINTS, HF_EXPORTS, LOGS, SEQUENCE_LOSSES)
COMPLETED = "completed"

# training_config.json: every TrainConfig field, plus these values the trainer resolved for this run
RESOLVED_KEYS = ("gradient_accumulation_steps", "world_size", "total_steps", "tokens_per_step")
# run_info.json, every key
RUN_INFO_KEYS = {
    "git_commit": "commit of this repository the run started from (None outside a git checkout)",
    "command": "argv of the (last) start",
    "versions": "{python, torch, transformers, accelerate, deepspeed, datasets, tokenizers, huggingface_hub}",
    "hardware": "{device_type, device_name, num_processes, num_machines, distributed_type, mixed_precision, "
                "deepspeed_zero_stage, deepspeed_torch_autocast}",
    "started_at": "ISO time of the first start (kept over resumes)",
    "finished_at": "ISO time the status left running (None while running)",
    "wall_time_seconds": "training wall time over every start",
    "status": "running | completed | interrupted (completed never goes back)",
    "steps_done": "updates done (the step of the newest state)",
    "tokens_seen": "steps_done * tokens_per_step",
    "num_parameters": "parameters of the trained model (padded output rows included)",
    "flops_per_token": "training FLOPs per token (modeling/flops.py)",
    "data_dir": "absolute path of the data_dir trained on",
    "data_manifest_sha256": "sha256 of its manifest.json (= data_manifest.json here)",
    "segments": "[{from_step, changes: {key: {old, new}}, recorded_at}]: allowed identity changes at a resume",
    "determinism": "deterministic-mode flags in force (training/determinism.py recorded())",
}


def not_a_run_folder(run_dir: str | Path, missing: str) -> UserError:
    """The error for a --run_dir without a run's `missing` file; a folder holding a run in run/ (the demo's
    runs/demo/<timestamp>/, a sweep's folder per run) gets the path it meant."""
    inner = Path(run_dir) / "run"
    hint = f": did you mean {inner}? (it holds a run)" if (inner / TRAINING_CONFIG).is_file() else ""
    return UserError(f"{run_dir} is not a run folder (no {missing}){hint}")


def list_step_dirs(parent: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every `stepN` folder directly under `parent`, sorted by step."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    found = [(parse_step_name(p.name), p) for p in parent.iterdir() if p.is_dir()]
    return sorted((s, p) for s, p in found if s is not None)


def read_rows(path: str | Path, what: str = "rows") -> list[dict]:
    """The JSON objects of a .jsonl file, [] if it does not exist; a torn last line (an interrupted append) is dropped
    with a warning, any other damage is one line naming the file (core/readers.py)."""
    return read_jsonl(path, what)


def read_metrics(run_dir: str | Path) -> list[dict]:
    return read_rows(Path(run_dir) / METRICS, "metrics")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def add_segment(segments: list[dict], step: int, changes: dict) -> list[dict]:
    """run_info's `segments` plus one {"from_step", "changes": {key: {"old", "new"}}, "recorded_at"} for an allowed
    identity change at `step` ({key: [old, new]}; not recorded twice when a resume with the same change repeats)."""
    if not changes:
        return list(segments)
    segment = {"from_step": step, "changes": {k: {"old": old, "new": new} for k, (old, new) in changes.items()}}
    if segments and {k: segments[-1].get(k) for k in segment} == segment:
        return list(segments)
    return [*segments, segment | {"recorded_at": now_iso()}]


class RunDir:
    """Writes the run folder. Call it from the main process only (the trainer guards every call)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.run_info: dict = {}

    # ------------------------------------------------------------------ start of a run
    def holds_run(self) -> bool:
        return (self.path / TRAINING_CONFIG).is_file() or (self.path / CHECKPOINTS).is_dir()

    def clear(self) -> None:
        """Remove an earlier run's files (a fresh start over it); other files in the folder are left alone."""
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for name in RUN_FOLDERS:
            shutil.rmtree(self.path / name, ignore_errors=True)

    def start(self, training_config: dict, data_manifest: Path, run_info: dict, resuming: bool) -> None:
        """Write training_config.json, copy the data manifest and write run_info.json (status running). On resume,
        started_at and wall_time_seconds carry over from the previous run_info.json."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path / TRAINING_CONFIG, training_config)
        shutil.copyfile(data_manifest, self.path / DATA_MANIFEST)
        previous = self.previous_run_info() if resuming else {}
        self.run_info = {"started_at": previous.get("started_at", now_iso()), "finished_at": None,
                         "wall_time_seconds": previous.get("wall_time_seconds", 0.0), **run_info, "status": "running"}
        if previous.get("status") == COMPLETED:  # its status never goes back; keep what it completed with
            self.run_info |= {k: previous.get(k) for k in ("status", "finished_at", "steps_done", "tokens_seen",
                                                           "num_parameters")}
        write_json_atomic(self.path / RUN_INFO, self.run_info)

    def previous_run_info(self) -> dict:
        """run_info.json as an earlier start left it ({} if there is none)."""
        path = self.path / RUN_INFO
        return read_json(path) if path.is_file() else {}

    def update_run_info(self, status: str | None = None, **fields) -> None:
        """Merge `fields` into run_info.json. `status` moves running -> interrupted|completed; once "completed" it
        stays so (a late checkpoint or signal does not make a finished run look unfinished)."""
        info = self.run_info
        info.update(fields)
        if status is not None and info.get("status") != COMPLETED:
            info["status"] = status
            info["finished_at"] = now_iso() if status != "running" else None
        write_json_atomic(self.path / RUN_INFO, info)

    # ------------------------------------------------------------------ jsonl rows
    def append_row(self, name: str, row: dict) -> None:
        with open(self.path / name, "a") as f:
            f.write(json.dumps(row) + "\n")

    def log_metrics(self, row: dict) -> None:
        self.append_row(METRICS, row)

    def log_fed_batch(self, update: int, tokens_sha256: str) -> None:
        self.append_row(FED_BATCHES, {"update": update, "tokens_sha256": tokens_sha256})

    def truncate_rows(self, steps_done: int) -> None:
        """Resume at checkpoint step S: keep metrics rows with step <= S and per-update rows with update < S (see the
        step numbers above); the dropped rows come from updates the killed run did after its checkpoint. Every file
        is read (and a damaged row refused, naming the file) before any is rewritten."""
        kept = {}
        for name in (METRICS, *PER_UPDATE_ROWS):
            path = self.path / name
            if not path.is_file():
                continue
            # a metrics row of step s follows update s - 1; a per-update row of update u is kept if u < steps_done
            key, last_kept = ("step", steps_done) if name == METRICS else ("update", steps_done - 1)
            lines = path.read_text().split("\n")[:-1]  # after the last newline: a torn row
            kept[name] = [line for number, line in enumerate(lines, 1)
                          if line.strip() and _row_number(path, number, line, key) <= last_kept]
        for name, lines in kept.items():
            tmp = self.path / f".{name}.tmp-{os.getpid()}"
            tmp.write_text("".join(line + "\n" for line in lines))
            os.replace(tmp, self.path / name)

    # ------------------------------------------------------------------ exports
    def export_dir(self, name: str) -> Path:
        return self.path / HF_EXPORTS / name


def _row_number(path: Path, number: int, line: str, key: str) -> int:
    """The step/update number of one row of a run log; a row that is not JSON with that integer is damage."""
    try:
        value = json.loads(line).get(key)
    except (json.JSONDecodeError, AttributeError):
        value = None
    if isinstance(value, bool) or not isinstance(value, int):
        raise DamagedFile(f"run log {path} is damaged at line {number} (not a JSON row with an integer {key!r}): "
                          "restore it from a backup of the run")
    return value
