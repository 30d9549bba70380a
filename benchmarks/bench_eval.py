"""`gpt2-owt eval` vs lm-evaluation-harness 0.4.13, side by side, same model / tasks / max_length / batch.

    python benchmarks/bench_eval.py                          # full WikiText-2 + LAMBADA, tiny and ~30M models
    python benchmarks/bench_eval.py --models tiny --limit 50 # a quick look (subset: times not comparable)

For each model (random init, seed 0, saved as a from_pretrained folder with the shipped tokenizer) both tools run as
whole processes (imports, model load, data, tokenization, scoring, metrics), alternately, with the same thread count,
offline on the shipped data: ours on tasks wikitext,lambada_openai; the harness's `lm_eval --model hf` on
wikitext_local,lambada_openai_local (eval/harness_tasks.py: the harness's own task yamls reading our local files).
The harness runs with its CLI defaults (its stderr computations are part of its time). Prints both metric sets, the largest
relative difference, each wall time and the ratio ours / harness (goal <= 0.5).
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import HfArgumentParser

from gpt2_owt.eval.harness_tasks import write_harness_tasks
from gpt2_owt.modeling.config import load_config
from gpt2_owt.modeling.hf_folder import save_hf_folder
from gpt2_owt.modeling.model import build_model, count_parameters

REPO_ROOT = Path(__file__).resolve().parents[1]
# name -> config overrides of the `tiny` preset; "30m": 6 layers x 384 wide, 1024 positions (29.9M parameters)
MODELS = {
    "tiny": {},
    "30m": {"n_layer": 6, "n_embd": 384, "n_head": 6, "n_positions": 1024},
}
OURS_TASKS = {"wikitext": "wikitext_local", "lambada_openai": "lambada_openai_local"}


@dataclass
class BenchArgs:
    models: str = "tiny,30m"
    max_length: int = 256
    batch_size: int = 8
    limit: int | None = None  # first N documents/examples per task (quick checks only)
    threads: int | None = None  # default: torch's default in this process
    timeout: int = 7200  # per process, seconds


def save_model(name: str, folder: Path) -> tuple[Path, int]:
    config = load_config("tiny")
    for key, value in MODELS[name].items():
        setattr(config, key, value)
    model = build_model(config, seed=0)
    return save_hf_folder(model, folder), count_parameters(model)


def timed(cmd: list[str], env: dict, timeout: int) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return seconds


def run_ours(model_dir: Path, out: Path, args: BenchArgs, env: dict) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "gpt2_owt.eval.evaluate", "--model", str(model_dir), "--tasks", ",".join(OURS_TASKS),
           "--max_length", str(args.max_length), "--batch_size", str(args.batch_size), "--device", "cpu",
           "--output", str(out)]
    cmd += ["--limit", str(args.limit)] if args.limit is not None else []
    seconds = timed(cmd, env, args.timeout)
    tasks = json.loads(out.read_text())["tasks"]
    return seconds, {task: tasks[task]["metrics"] for task in OURS_TASKS}


def run_harness(model_dir: Path, tasks_dir: Path, out: Path, args: BenchArgs, env: dict) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "lm_eval", "run", "--model", "hf",
           "--model_args", f"pretrained={model_dir},max_length={args.max_length}",
           "--tasks", ",".join(OURS_TASKS.values()), "--include_path", str(tasks_dir), "--device", "cpu",
           "--batch_size", str(args.batch_size), "--output_path", str(out)]
    cmd += ["--limit", str(args.limit)] if args.limit is not None else []
    seconds = timed(cmd, env, args.timeout)
    (results_file,) = out.rglob("results_*.json")
    results = json.loads(results_file.read_text())["results"]
    return seconds, {ours: {k.split(",")[0]: v for k, v in results[theirs].items()
                            if k.endswith(",none") and "stderr" not in k}
                     for ours, theirs in OURS_TASKS.items()}


def max_rel_diff(ours: dict, theirs: dict) -> float:
    return max(abs(ours[t][m] - v) / abs(v) for t, block in theirs.items() for m, v in block.items() if v)


def print_metrics(label: str, metrics: dict) -> None:
    for task, block in metrics.items():
        print(f"  {label:<8} {task:<15} " + "  ".join(f"{m}={v:.6f}" for m, v in block.items()))


def main(argv=None):
    (args,) = HfArgumentParser(BenchArgs).parse_args_into_dataclasses(args=argv)
    threads = args.threads or torch.get_num_threads()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1")
    print(f"CPU: {os.cpu_count()} logical cores visible, {threads} threads per process, torch {torch.__version__}; "
          f"max_length {args.max_length}, batch size {args.batch_size}, "
          f"{'limit ' + str(args.limit) if args.limit is not None else 'full WikiText-2 test + LAMBADA OpenAI'}")
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        tmp = Path(tmp)
        tasks_dir = tmp / "harness_tasks"
        write_harness_tasks(tasks_dir)
        for i, name in enumerate(args.models.split(",")):
            model_dir, num_parameters = save_model(name, tmp / name)
            runs = [("ours", lambda: run_ours(model_dir, tmp / f"{name}_ours.json", args, env)),
                    ("harness", lambda: run_harness(model_dir, tasks_dir, tmp / f"{name}_harness", args, env))]
            measured = dict((label, fn()) for label, fn in (runs if i % 2 == 0 else runs[::-1]))  # alternate order
            (ours_s, ours_m), (harness_s, harness_m) = measured["ours"], measured["harness"]
            print(f"\nmodel {name} ({num_parameters / 1e6:.1f}M parameters)")
            print_metrics("ours", ours_m)
            print_metrics("harness", harness_m)
            print(f"  max relative difference {max_rel_diff(ours_m, harness_m):.2e}")
            print(f"  wall time: ours {ours_s:.1f} s, harness {harness_s:.1f} s, ratio ours/harness "
                  f"{ours_s / harness_s:.2f}")


if __name__ == "__main__":
    main()
