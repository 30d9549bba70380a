"""GPU throughput of the 124M recipe for each lever combination, against a bare PyTorch loop on the same model and
batches (bf16 autocast, fused AdamW, same levers), measured in the same run. Ready for the first CUDA machine:

    python benchmarks/bench_gpu.py --data_dir DATA [--steps 30] [--micro_batch_sizes 16 32]

Per combination (eager / compiled, padded output layer or not, micro batch 16 / 32; plus DDP and ZeRO-1/2/3 when
there are several GPUs) it prints tokens/s (median over the second half of the steps, from the trainer's own
metrics rows, which exclude eval/export/checkpoint time), MFU, peak memory and the ratio to the bare loop.
On a machine without CUDA it exits with one line. The README's GPU time/cost figures stay labelled estimates until
this has run; then recompute them from its tokens/s.
"""

import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from gpt2_owt.core.errors import UserError, cli_main
from gpt2_owt.training.run_dir import read_metrics

REPO_ROOT = Path(__file__).resolve().parents[1]
SEQ_LEN = 1024
MULTI_GPU_CONFIGS = {"ddp": "multi_gpu.yaml", "zero1": "zero1.yaml", "zero2": "zero2.yaml", "zero3": "zero3.yaml"}


@dataclass
class BenchArgs:
    data_dir: str | None = field(default=None, metadata={"help": "prepared data_dir with >= steps x batch tokens"})
    steps: int = field(default=30, metadata={"help": "optimizer steps per run (even; the second half is timed)"})
    micro_batch_sizes: list[int] = field(default_factory=lambda: [16, 32], metadata={"help": "per-GPU micro batch"})


def trainer_run(data_dir: str, micro: int, world: int, compile_: bool, pad: int, steps: int, launcher: str) -> dict:
    """The real trainer (accelerate launch, one process per GPU), no accumulation: global batch = micro x world."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO_ROOT / "accelerate_configs" / launcher), "--num_processes", str(world), "-m", "gpt2_owt.training.train",
               "--model_config", "gpt2-124m", "--data_dir", data_dir, "--output_dir", out, "--seq_len", str(SEQ_LEN),
               "--micro_batch_size", str(micro), "--global_batch_size", str(micro * world), "--max_steps", str(steps),
               "--warmup_steps", "1", "--log_interval", "1", "--eval_interval", "0", "--eval_iters", "1",
               "--checkpoint_interval", "0", "--export_steps", "--export_interval", "0", "--report_to", "none",
               "--compile", str(compile_).lower(), "--pad_vocab_to_multiple_of", str(pad)]
        proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=3600)
        if proc.returncode:
            return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
        rows = read_metrics(out)
    rows = [r for r in rows if "train_loss" in r][steps // 2 :]
    return {"tokens_per_sec": statistics.median(r["tokens_per_sec"] for r in rows),
            "mfu": statistics.median(r["mfu"] for r in rows) if rows[0]["mfu"] is not None else None,
            "memory_gb": max(r["memory_gb"] for r in rows)}


def bare_run(spec: dict) -> dict:
    """The same model, levers and batches in a plain loop: bf16 autocast, fused AdamW, clipping, no Accelerate."""
    import torch

    from gpt2_owt.modeling.model import build_model
    from gpt2_owt.training import speed
    from gpt2_owt.training.data_dir import WindowSampler, open_split, read_windows
    from gpt2_owt.training.trainer import lm_loss

    device = torch.device("cuda")
    speed.set_matmul_precision(True, on_cuda=True)
    model = build_model("gpt2-124m", seed=1337)
    vocab_size = model.config.vocab_size
    speed.apply_model_options(model, True, spec["pad"], spec["compile"])
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    split = open_split(spec["data_dir"], "train")
    sampler = WindowSampler(num_tokens=split.num_tokens, seq_len=SEQ_LEN, global_batch_size=spec["micro"], seed=1337)
    torch.cuda.reset_peak_memory_stats()
    rates = []
    for step in range(spec["steps"]):
        t0 = time.perf_counter()
        tokens = torch.from_numpy(read_windows(split, sampler.global_batch_windows(step), SEQ_LEN)).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = lm_loss(model, tokens, vocab_size)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # the trainer syncs once per logged step too
        rates.append(spec["micro"] * SEQ_LEN / (time.perf_counter() - t0))
    return {"tokens_per_sec": statistics.median(rates[spec["steps"] // 2 :]),
            "memory_gb": torch.cuda.max_memory_allocated() / 1e9}


def run_bare(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--_bare", json.dumps(spec)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=3600)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(r: dict) -> str:
    if "error" in r:
        return f"failed: {r['error']}"
    mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "n/a"
    return f"{r['tokens_per_sec']:10.0f} tok/s, MFU {mfu}, peak {r['memory_gb']:.1f} GB"


@cli_main
def main(argv=None) -> None:
    import torch
    from transformers import HfArgumentParser

    if not torch.cuda.is_available():
        raise UserError("bench_gpu needs a CUDA GPU (torch.cuda.is_available() is False): nothing measured")
    (args,) = HfArgumentParser(BenchArgs).parse_args_into_dataclasses(args=argv)
    if not args.data_dir:
        raise UserError("--data_dir is required (a prepared OpenWebText data_dir)")
    if args.steps < 2 or args.steps % 2:
        raise UserError(f"--steps must be an even number >= 2, got {args.steps}")
    gpus = torch.cuda.device_count()
    print(f"bench_gpu: {gpus} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}, GPT-2 124M, "
          f"seq {SEQ_LEN}, bf16, {args.steps} steps per run (second half timed)")
    for micro, compile_, pad in itertools.product(args.micro_batch_sizes, (False, True), (0, 64)):
        spec = {"data_dir": args.data_dir, "micro": micro, "compile": compile_, "pad": pad, "steps": args.steps}
        trainer = trainer_run(args.data_dir, micro, 1, compile_, pad, args.steps, "single_gpu.yaml")
        bare = run_bare(spec)
        ratio = (f"{trainer['tokens_per_sec'] / bare['tokens_per_sec']:.3f}"
                 if "error" not in trainer and "error" not in bare else "n/a")
        print(f"1 GPU micro {micro:>2} compile {compile_!s:>5} pad {pad:>2} | trainer {fmt(trainer)} | bare loop "
              f"{fmt(bare)} | ratio {ratio}")
    if gpus > 1:
        for name, launcher in MULTI_GPU_CONFIGS.items():
            for micro in args.micro_batch_sizes:
                r = trainer_run(args.data_dir, micro, gpus, True, 64, args.steps, launcher)
                print(f"{gpus} GPUs {name:>5} micro {micro:>2} compile True pad 64 | trainer {fmt(r)}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--_bare":
        print(json.dumps(bare_run(json.loads(sys.argv[2]))))
    else:
        main()
