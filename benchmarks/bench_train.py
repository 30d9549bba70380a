"""Trainer overhead on CPU: tokens/s and peak RSS of `training.train` against a bare PyTorch loop doing the same
work (same model, init, AdamW groups, batches, micro-batching, clipping and schedule), measured in the same run.

    python benchmarks/bench_train.py [--data_dir DATA] [--steps 10] [--repeats 2]

Each measurement runs in its own child process (peak RSS = that process's ru_maxrss). Throughput is the median
per-step tokens/s over the second half of the steps (the first half warms up allocators and caches; the median
shrugs off load spikes from other processes on a shared machine), and the best of `repeats` runs is kept,
alternating trainer and baseline so machine load hits both alike. Target: trainer / bare >= 0.95.
Without --data_dir, the genuine OpenWebText sample in ../shared/data is prepared into a temporary data_dir.
"""

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from modeling import CONFIGS_DIR, UserError, cli_main

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GPT2_OWT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# (name, model config overrides of the tiny preset, seq_len, global batch, micro batch)
CASES = [
    ("tiny (6.9M)", {}, 128, 16, 8),
    ("~30M", {"n_layer": 6, "n_embd": 384, "n_head": 6, "n_positions": 1024}, 128, 8, 4),
]


@dataclass
class BenchArgs:
    data_dir: str | None = field(default=None, metadata={"help": "prepared data_dir (default: prepare the OWT sample)"})
    steps: int = field(default=10, metadata={"help": "optimizer steps per run (even; the second half is timed)"})
    repeats: int = field(default=2, metadata={"help": "runs per variant; the fastest counts"})


# ---------------------------------------------------------------------------------------------------- child runs
def child_trainer(spec: dict) -> dict:
    """The real trainer, single process; the median of its logged per-step tokens/s over the second half."""
    from training.train import main

    half = spec["steps"] // 2
    with tempfile.TemporaryDirectory() as out:
        main(["--model_config", spec["model_config"], "--data_dir", spec["data_dir"], "--output_dir", out,
              "--seq_len", str(spec["seq_len"]), "--global_batch_size", str(spec["global"]),
              "--micro_batch_size", str(spec["micro"]), "--max_steps", str(spec["steps"]), "--warmup_steps", "1",
              "--log_interval", "1", "--eval_interval", "0", "--eval_iters", "1", "--checkpoint_interval", "0",
              "--export_steps", "--export_interval", "0", "--report_to", "none"])
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train_loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, spec["steps"] + 1))
    return {"tokens_per_sec": statistics.median(r["tokens_per_sec"] for r in train_rows[half:]),
            "final_loss": train_rows[-1]["train_loss"]}


def child_bare(spec: dict) -> dict:
    """The same work written as a plain PyTorch loop, no Accelerate, no files."""
    import torch

    from modeling import build_model, load_config
    from training.config import parse_config
    from training.data_dir import WindowSampler, open_split, read_windows
    from training.train import build_optimizer, build_scheduler, lm_loss

    cfg = parse_config(["--model_config", spec["model_config"], "--data_dir", spec["data_dir"], "--output_dir", "-",
                        "--seq_len", str(spec["seq_len"]), "--global_batch_size", str(spec["global"]),
                        "--micro_batch_size", str(spec["micro"]), "--max_steps", str(spec["steps"]),
                        "--warmup_steps", "1"])
    model = build_model(load_config(cfg.model_config), seed=cfg.seed)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg)
    split = open_split(cfg.data_dir, "train")
    sampler = WindowSampler(split.num_tokens, cfg.seq_len, cfg.global_batch_size, cfg.seed)
    accum = cfg.global_batch_size // cfg.micro_batch_size
    half, rates = cfg.max_steps // 2, []
    for step in range(cfg.max_steps):
        t0 = time.time()
        tokens = torch.from_numpy(read_windows(split, sampler.global_batch_windows(step), cfg.seq_len))
        total = 0.0
        for m in range(accum):
            loss = lm_loss(model, tokens[m * cfg.micro_batch_size : (m + 1) * cfg.micro_batch_size])
            (loss / accum).backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        final_loss = float(total / accum)  # the trainer syncs the loss every step too (log_interval 1)
        rates.append(cfg.tokens_per_step() / (time.time() - t0))
    return {"tokens_per_sec": statistics.median(rates[half:]), "final_loss": final_loss}


def run_child(kind: str, spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--_child", kind, json.dumps(spec)], cwd=REPO_ROOT,
                         capture_output=True, text=True, env=dict(os.environ, TQDM_DISABLE="1"))
    if out.returncode:
        raise SystemExit(f"{kind} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------- driver
def prepare_sample(root: Path) -> str:
    from training.prepare_data import run as prepare

    return str(prepare(["--dataset", "json", "--data_files",
                        str(SHARED_DATA / "openwebtext-sample" / "owt_first37_docs.jsonl"), "--val_fraction", "0.1",
                        "--num_proc", "1", "--output_dir", str(root / "data"), "--cache_dir", str(root / "cache")]))


@cli_main
def main(argv=None) -> None:
    import torch
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(BenchArgs).parse_args_into_dataclasses(args=argv)
    if args.steps < 2 or args.steps % 2:
        raise UserError(f"--steps must be an even number >= 2, got {args.steps}")

    print(f"bench_train: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.steps} steps per run (second half timed), best of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or prepare_sample(Path(tmp))
        for name, overrides, seq_len, global_bs, micro in CASES:
            config_path = Path(tmp) / f"{name.split()[0]}.json"
            config_path.write_text(json.dumps(json.loads((CONFIGS_DIR / "tiny.json").read_text()) | overrides))
            spec = {"model_config": str(config_path), "data_dir": data_dir, "seq_len": seq_len, "global": global_bs,
                    "micro": micro, "steps": args.steps}
            best = {"trainer": None, "bare": None}
            for _ in range(args.repeats):
                for kind in ("trainer", "bare"):
                    r = run_child(kind, spec)
                    if best[kind] is None or r["tokens_per_sec"] > best[kind]["tokens_per_sec"]:
                        best[kind] = r | {"peak_rss_mb": max(r["peak_rss_mb"], (best[kind] or r)["peak_rss_mb"])}
            t, b = best["trainer"], best["bare"]
            same = math.isclose(t["final_loss"], b["final_loss"], rel_tol=1e-4)
            print(f"{name:>12}: seq {seq_len} x batch {global_bs} (micro {micro})  trainer {t['tokens_per_sec']:8.0f} "
                  f"tok/s, peak RSS {t['peak_rss_mb']:6.0f} MB | bare loop {b['tokens_per_sec']:8.0f} tok/s, peak RSS "
                  f"{b['peak_rss_mb']:6.0f} MB | throughput ratio {t['tokens_per_sec'] / b['tokens_per_sec']:.3f} "
                  f"(target >= 0.95), RSS ratio {t['peak_rss_mb'] / b['peak_rss_mb']:.2f}, same loss: {same}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--_child":
        result = {"trainer": child_trainer, "bare": child_bare}[sys.argv[2]](json.loads(sys.argv[3]))
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
    else:
        main()
