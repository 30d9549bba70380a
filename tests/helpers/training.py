"""Running the trainer (in process or launched), reading its outputs, and the run shapes several test modules share
(each trained once per session through conftest's `trained_run(**SHAPE)`)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
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


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_cmd(config_file: str, num_processes: int, *extra: str) -> list[str]:
    """`accelerate launch` of `config_file` on `num_processes` processes; a free rendezvous port unless `extra` names
    one, so that launches running at the same time (pytest-xdist workers) never meet on Accelerate's default 29500."""
    port = [] if "--main_process_port" in extra else ["--main_process_port", str(free_port())]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIGS / config_file),
            "--num_processes", str(num_processes), *port, *extra]


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


# ---------------------------------------------------------------------------------------------- shared run shapes
# 30 updates with exports step0, step1, step2 and hf/final (step 30) and a checkpoint every 10: the trainer's own
# tests (tests/test_train.py) and the explorer's (tests/test_explore.py) read it.
LONG_RUN = dict(seq_len=32, global_batch_size=4, micro_batch_size=2, max_steps=30, warmup_steps=3, eval_interval=10,
                eval_iters=1, checkpoint_interval=10, keep_last_checkpoints=2, export_steps=[0, 1, 2],
                record_fed_batches="true")

# data_seed 7 while seed stays 1337: the trainer's order comes from data_seed, and so must find's (a sampler built
# from `seed`, as trace once did, reported exposures at updates that never saw the text)
SEED_RUN = dict(seq_len=32, global_batch_size=4, micro_batch_size=4, max_steps=12, warmup_steps=2, data_seed=7,
                record_fed_batches="true", export_steps=[0], export_interval=0, eval_iters=1)
