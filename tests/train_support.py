"""Helpers for the trainer tests: running the trainer (in process or launched), reading its outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_YAML = REPO_ROOT / "training" / "configs" / "tiny.yaml"
ACCELERATE_CONFIGS = REPO_ROOT / "accelerate_configs"


def train_args(data_dir: Path, output_dir: Path, **overrides) -> list[str]:
    args = ["--config", str(TINY_YAML), "--data_dir", str(data_dir), "--output_dir", str(output_dir),
            "--report_to", "none"]
    for key, value in overrides.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        args += [f"--{key}", *map(str, values)]
    return args


def run_inprocess(data_dir: Path, output_dir: Path, **overrides) -> int:
    """Run the trainer in this process (single process, no launcher); resets Accelerate's singletons after."""
    from accelerate.state import AcceleratorState, GradientState

    from gpt2_owt.training.train import main

    try:
        return main(train_args(data_dir, output_dir, **overrides))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def cli_env(**extra) -> dict:
    """Environment for trainer subprocesses; the same thread count as this process by default, so a subprocess
    computes bit-for-bit what an in-process run computes."""
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS=str(torch.get_num_threads()),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def accelerate_cmd(config_file: str, num_processes: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIGS / config_file),
            "--num_processes", str(num_processes), *extra]


def run_cli(cmd: list[str], timeout: int = 600, **env) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO_ROOT, env=cli_env(**env), capture_output=True, text=True, timeout=timeout)


def load_export(folder: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def final_weights(run: Path) -> dict:
    """The tensors of a run's final export (hf/final/model.safetensors)."""
    from safetensors.torch import load_file
    from gpt2_owt.training.run_dir import FINAL, HF_EXPORTS

    return load_file(str(run / HF_EXPORTS / FINAL / "model.safetensors"))


def metric_rows(output_dir: Path, key: str) -> list[dict]:
    """The metrics.jsonl rows of a run that hold `key` (train rows: "train_loss", validation rows: "val_loss")."""
    with open(output_dir / "metrics.jsonl") as f:
        return [row for row in map(json.loads, f) if key in row]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# metrics.jsonl keys that measure speed: the only ones allowed to differ between a resumed and an uninterrupted run
# (plus every `*_seconds` phase of the per-interval time breakdown)
TIMING_KEYS = {"tokens_per_sec", "memory_gb", "mfu"}


def untimed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS and not k.endswith("_seconds")} for r in rows]
