"""The training run folder (`run_dir/` = the trainer's `output_dir`): its layout, written down once.

    run_dir/
      training_config.json   the resolved TrainConfig, every field (the model card's hyperparameter table reads it)
      run_info.json          environment of the run: git commit, package versions, hardware, world size, command
                             line, data manifest sha256, wall time and tokens so far (updated as the run goes)
      data_manifest.json     copy of the data_dir's manifest.json the run trained on
      metrics.jsonl          one JSON object per line: {"step", "tokens", "train_loss"|"val_loss", "lr", ...}
      checkpoints/step_N/    Accelerate `save_state` folders (complete-or-absent: written to a temp name, renamed)
      hf/step_N/             `from_pretrained` exports (safetensors + config + generation_config + tokenizer)
      hf/final/              the export at the end of training
      logs/                  tracker output (tensorboard), when report_to is not "none"
      fed_batches.jsonl      sha256 of every batch fed, when trace_batches is on (data-order audits)

Keys (what the model card reads; readers must tolerate extra keys):
    training_config.json   every TrainConfig field, plus "gradient_accumulation_steps", "world_size",
                           "total_steps", "tokens_per_step" as resolved for this run
    run_info.json          {"git_commit", "command": [argv], "versions": {package: version},
                            "hardware": {"device_type", "device_name", "num_processes", "num_machines",
                                         "distributed_type", "mixed_precision", "deepspeed_zero_stage"},
                            "started_at", "finished_at", "wall_time_seconds", "status": running|completed|interrupted,
                            "steps_done", "tokens_seen", "num_parameters", "flops_per_token", "data_dir",
                            "data_manifest_sha256"}
    metrics.jsonl          train rows {"step", "tokens", "train_loss", "lr", "grad_norm", "tokens_per_sec", "mfu",
                           "elapsed_seconds", "memory_gb"}; val rows {"step", "tokens", "val_loss"}
    hf/*/export_info.json  {"step", "tokens", "weights_sha256"} (sha256 of model.safetensors)
"""

import json
import re
from pathlib import Path

TRAINING_CONFIG = "training_config.json"
RUN_INFO = "run_info.json"
DATA_MANIFEST = "data_manifest.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
HF_EXPORTS = "hf"
FINAL = "final"

_STEP_DIR = re.compile(r"^step_(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step_{step}"


def parse_step_dir(name: str) -> int | None:
    m = _STEP_DIR.match(name)
    return int(m.group(1)) if m else None


def list_step_dirs(parent: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every `step_N` folder directly under `parent`, sorted by step."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    found = [(parse_step_dir(p.name), p) for p in parent.iterdir() if p.is_dir()]
    return sorted((s, p) for s, p in found if s is not None)


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
