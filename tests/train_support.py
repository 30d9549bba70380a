"""Helpers for the trainer tests: a small genuine-OWT data_dir, running the trainer, reading its outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from modeling import EOT_TOKEN_ID, tiktoken_encoding, tokenizer_fingerprint
from training import data_dir as dd
from training.manifest import FORMAT, file_entries, write_manifest

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_YAML = REPO_ROOT / "training" / "configs" / "tiny.yaml"
ACCELERATE_CONFIGS = REPO_ROOT / "accelerate_configs"


def write_data_dir(path: Path, documents: list[str], n_val: int = 4) -> Path:
    """A data_dir in the documented layout: the last `n_val` documents are val, the rest train."""
    enc = tiktoken_encoding()
    path.mkdir(parents=True, exist_ok=True)
    splits = {"train": list(range(len(documents) - n_val)), "val": list(range(len(documents) - n_val, len(documents)))}
    for split, rows in splits.items():
        docs = [enc.encode_ordinary(documents[r]) + [EOT_TOKEN_ID] for r in rows]
        tokens = np.array([t for d in docs for t in d], dtype=dd.TOKEN_DTYPE)
        tokens.tofile(path / dd.tokens_file(split))
        np.save(path / dd.doc_offsets_file(split), np.cumsum([0] + [len(d) for d in docs]).astype(np.int64))
        np.save(path / dd.doc_rows_file(split), np.array(rows, dtype=np.int64))
    write_manifest(path, {
        "format": FORMAT, "tokenizer": {"fingerprint": tokenizer_fingerprint()}, "files": file_entries(path),
        "splits": {s: {"tokens": int(dd.open_split(path, s).num_tokens), "documents": len(r)} for s, r in splits.items()},
    })
    return path


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

    from training.train import main

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


def read_rows(output_dir: Path, key: str) -> list[dict]:
    with open(output_dir / "metrics.jsonl") as f:
        return [row for row in map(json.loads, f) if key in row]
