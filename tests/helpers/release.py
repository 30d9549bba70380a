"""The training run and eval results the model-card and upload tests publish.

The run is REAL: `RELEASE_RUN` is the tiny recipe trained by `training.train` itself (the `release_run` session
fixture in conftest.py, through the one `trained_run` fixture), so every key the card reads is what the trainer
writes: renaming a trainer key breaks the card tests. Two steps with exports hf/step0, hf/step1 and hf/final (three
different weights), a validation loss and a checkpoint at every step, fed batches traced. `copy_run` copies it for a
test that changes it; `with_cuda_hardware` rewrites run_info's hardware and wall time to 8 x A100 for one hour (the
only edit, so the card's cost/energy arithmetic has GPU inputs to show). `make_results` writes an eval results.json in
the shape eval/evaluate.py writes (numbers chosen to be recognisable in the card, not measured).
"""

import json
import shutil
from pathlib import Path

import torch

from gpt2_owt.core.readers import read_json
from gpt2_owt.eval.references import task_references
from gpt2_owt.training.run_dir import RUN_INFO

RELEASE_RUN = dict(max_steps=2, warmup_steps=1, seq_len=32, micro_batch_size=4, global_batch_size=4, eval_interval=1,
                   eval_iters=1, checkpoint_interval=1, export_steps=[0, 1], export_interval=0, record_fed_batches="true")
CUDA_HARDWARE = {"device_type": "cuda", "device_name": "NVIDIA A100-SXM4-80GB", "num_processes": 8, "num_machines": 1,
                 "distributed_type": "DEEPSPEED", "mixed_precision": "bf16", "deepspeed_zero_stage": 1}


def copy_run(release_run: Path, run_dir: Path, with_cuda_hardware: bool = False) -> Path:
    """A writable copy of the real release run at `run_dir` (see the module docstring for `with_cuda_hardware`)."""
    shutil.copytree(release_run, run_dir)
    if with_cuda_hardware:
        info = read_json(run_dir / RUN_INFO)
        info.update(hardware={**info["hardware"], **CUDA_HARDWARE}, wall_time_seconds=3600.0)
        (run_dir / RUN_INFO).write_text(json.dumps(info, indent=2))
    return run_dir


RESULTS_TASKS = {
    "wikitext": {"metrics": {"word_perplexity": 41234.5, "byte_perplexity": 7.25, "bits_per_byte": 2.858},
                 "counts": {"documents": 62, "words": 245569, "bytes": 1290590, "tokens": 287644},
                 "settings": {"max_length": 256}, "data": {"source": "wikitext-2-raw-v1/wiki.test.raw", "sha256": "173c"}},
    "lambada_openai": {"metrics": {"acc": 0.0123, "perplexity": 98765.4, "acc_last_token": 0.02},
                       "counts": {"examples": 5153}},
    "owt_val": {"metrics": {"loss": 9.876, "perplexity": 19467.1}, "counts": {"tokens": 987, "windows": 4}},
}


def make_results(path: Path, weights_sha256: str, tasks: dict | None = None) -> Path:
    results = {
        "model": {"name_or_path": "runs/tiny/hf/final", "revision": None, "weights_sha256": weights_sha256,
                  "num_parameters": 6862464},
        "settings": {"max_length": 256, "batch_size": 8, "dtype": "float32", "device": "cpu"},
        "versions": {"transformers": "5.23.0", "torch": torch.__version__},
        "created_at": "2026-11-23T11:00:00+00:00",
        # each task carries its published references, as eval.evaluate writes them
        "tasks": {task: {**block, "references": task_references(task, block["metrics"])}
                  for task, block in (RESULTS_TASKS if tasks is None else tasks).items()},
    }
    path.write_text(json.dumps(results, indent=2))
    return path
