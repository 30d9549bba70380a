"""Trainer speed on CPU: tokens/s and peak RSS of `training.train` (eager and with compiled blocks) against a bare
PyTorch loop doing the same work (same model and levers, init, AdamW groups, batches, micro-batching, clipping and
schedule), and against a minimal nanoGPT-style reference model written below (GPT-2 shapes, nn.GELU, SDPA, fused
qkv, vocabulary 50,304 as nanoGPT pads it) trained on the same batches, all measured in the same run; each in fp32
and with bf16 autocast (fp32 weights, `--mixed_precision bf16`; nanoGPT's own default precision).

    python benchmarks/bench_train.py [--data_dir DATA] [--steps 10] [--repeats 2] [--precisions no bf16]
                                     [--variants trainer trainer_compiled bare nanogpt]

Each measurement runs in its own child process (peak RSS = that process's ru_maxrss). Throughput is the median
per-step tokens/s over the second half of the steps (the first half warms up allocators and caches; the median
shrugs off load spikes from other processes on a shared machine), and the best of `repeats` runs is kept,
alternating the variants so machine load hits all alike. Targets: trainer / bare >= 0.95; best trainer setting /
nanoGPT-style eager >= 1.2; compiled trainer / eager trainer >= 1.3 (at 4 layers / 256 wide / ctx 256 / batch 8),
each printed per precision and for the best trainer setting of either precision against the fp32 reference.
Without --data_dir, the genuine OpenWebText sample shipped in training/sample_data is prepared into a temporary data_dir.
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

from gpt2_owt.core.errors import UserError, cli_main
from gpt2_owt.modeling.config import CONFIGS_DIR
from gpt2_owt.training.run_dir import read_metrics

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "training" / "sample_data" / "owt_first37_docs.jsonl"

# (name, model config overrides of the tiny preset, seq_len, global batch, micro batch)
CASES = [
    ("4L/256", {"n_layer": 4, "n_embd": 256, "n_head": 4, "n_positions": 256}, 256, 8, 8),
]
VARIANTS = ("trainer", "trainer_compiled", "bare", "nanogpt")
PRECISIONS = ("no", "bf16")  # the trainer's --mixed_precision values: fp32, bf16 autocast over fp32 weights


@dataclass
class BenchArgs:
    data_dir: str | None = field(default=None, metadata={"help": "prepared data_dir (default: prepare the OWT sample)"})
    steps: int = field(default=10, metadata={"help": "optimizer steps per run (even; the second half is timed)"})
    repeats: int = field(default=2, metadata={"help": "runs per variant; the fastest counts"})
    precisions: list[str] = field(default_factory=lambda: list(PRECISIONS),
                                  metadata={"help": f"--mixed_precision values to measure, of {PRECISIONS}"})
    variants: list[str] = field(default_factory=lambda: list(VARIANTS),
                                metadata={"help": f"what to measure, of {VARIANTS}"})


# ---------------------------------------------------------------------------------------------------- child runs
def child_trainer(spec: dict) -> dict:
    """The real trainer, single process; the median of its logged per-step tokens/s over the second half."""
    from gpt2_owt.training.train import main

    half = spec["steps"] // 2
    with tempfile.TemporaryDirectory() as out:
        main(["--model_config", spec["model_config"], "--data_dir", spec["data_dir"], "--output_dir", out,
              "--seq_len", str(spec["seq_len"]), "--global_batch_size", str(spec["global"]),
              "--micro_batch_size", str(spec["micro"]), "--max_steps", str(spec["steps"]), "--warmup_steps", "1",
              "--log_interval", "1", "--eval_interval", "0", "--eval_iters", "1", "--checkpoint_interval", "0",
              "--export_steps", "--export_interval", "0", "--report_to", "none",
              "--compile", str(spec.get("compile", False)).lower(), "--mixed_precision", spec["precision"]])
        rows = read_metrics(out)
    train_rows = [r for r in rows if "train_loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, spec["steps"] + 1))
    return {"tokens_per_sec": statistics.median(r["tokens_per_sec"] for r in train_rows[half:]),
            "final_loss": train_rows[-1]["train_loss"]}


def autocast(spec: dict):
    """What Accelerate does for --mixed_precision bf16 on CPU: bf16 autocast over fp32 weights."""
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec["precision"] == "bf16")


def child_bare(spec: dict) -> dict:
    """The same work written as a plain PyTorch loop, no Accelerate, no files."""
    import torch

    from gpt2_owt.modeling.config import load_config
    from gpt2_owt.modeling.model import build_model
    from gpt2_owt.training.config import parse_config
    from gpt2_owt.training.data_dir import WindowSampler, open_split, read_windows
    from gpt2_owt.training import speed
    from gpt2_owt.training.trainer import build_optimizer, build_scheduler, lm_loss

    cfg = parse_config(["--model_config", spec["model_config"], "--data_dir", spec["data_dir"], "--output_dir", "-",
                        "--seq_len", str(spec["seq_len"]), "--global_batch_size", str(spec["global"]),
                        "--micro_batch_size", str(spec["micro"]), "--max_steps", str(spec["steps"]),
                        "--warmup_steps", "1"])
    model = build_model(load_config(cfg.model_config), seed=cfg.seed)
    vocab_size = model.config.vocab_size
    speed.apply_model_options(model, cfg.fused_gelu, cfg.pad_vocab_to_multiple_of, compile_model=False)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg)
    split = open_split(cfg.data_dir, "train")
    sampler = WindowSampler.for_run(cfg, split)
    accum = cfg.global_batch_size // cfg.micro_batch_size
    half, rates = cfg.max_steps // 2, []
    for step in range(cfg.max_steps):
        t0 = time.time()
        tokens = torch.from_numpy(read_windows(split, sampler.global_batch_windows(step), cfg.seq_len))
        total = 0.0
        for m in range(accum):
            with autocast(spec):
                loss = lm_loss(model, tokens[m * cfg.micro_batch_size : (m + 1) * cfg.micro_batch_size], vocab_size)
            (loss / accum).backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        final_loss = float(total / accum)  # the trainer syncs the loss every step too (log_interval 1)
        rates.append(cfg.tokens_per_step() / (time.time() - t0))
    return {"tokens_per_sec": statistics.median(rates[half:]), "final_loss": final_loss}


def nanogpt_reference(n_layer: int, n_embd: int, n_head: int, n_positions: int, vocab_size: int = 50304):
    """nanoGPT's model.py in miniature: pre-LN blocks, one fused qkv matmul, SDPA causal attention, nn.GELU (erf),
    tied embedding/output layer, GPT-2 init. Defined here so the baseline is a fixed, known-fast formulation."""
    import math

    import torch
    from torch import nn
    from torch.nn import functional as F

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn, self.c_proj = nn.Linear(n_embd, 3 * n_embd), nn.Linear(n_embd, n_embd)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in self.c_attn(x).split(n_embd, 2))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(n_embd), Attention(), nn.LayerNorm(n_embd)
            self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab_size, n_embd), nn.Embedding(n_positions, n_embd)
            self.h, self.ln_f = nn.ModuleList(Block() for _ in range(n_layer)), nn.LayerNorm(n_embd)
            self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
            self.lm_head.weight = self.wte.weight
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj.weight") else 0.02
                    nn.init.normal_(p, 0.0, std)
                elif name.endswith("bias"):
                    nn.init.zeros_(p)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
            for block in self.h:
                x = block(x)
            logits = self.lm_head(self.ln_f(x))
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))

    return GPT()


def child_nanogpt(spec: dict) -> dict:
    """The nanoGPT-style reference on the same batches: eager, AdamW (foreach, decay on >=2-D), clipping."""
    import torch

    from gpt2_owt.modeling.config import load_config
    from gpt2_owt.training.data_dir import WindowSampler, open_split, read_windows

    c = load_config(spec["model_config"])
    torch.manual_seed(1337)
    model = nanogpt_reference(c.n_layer, c.n_embd, c.n_head, c.n_positions)
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}], lr=6e-4,
                            betas=(0.9, 0.95), foreach=True)
    split = open_split(spec["data_dir"], "train")
    sampler = WindowSampler(num_tokens=split.num_tokens, seq_len=spec["seq_len"], global_batch_size=spec["global"],
                             seed=1337)  # the bare loop's own batches
    accum, micro, rates = spec["global"] // spec["micro"], spec["micro"], []
    for step in range(spec["steps"]):
        t0 = time.time()
        tokens = torch.from_numpy(read_windows(split, sampler.global_batch_windows(step), spec["seq_len"])).long()
        total = 0.0
        for m in range(accum):
            batch = tokens[m * micro : (m + 1) * micro]
            with autocast(spec):
                loss = model(batch[:, :-1], batch[:, 1:])
            (loss / accum).backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        final_loss = float(total / accum)
        rates.append(spec["global"] * spec["seq_len"] / (time.time() - t0))
    return {"tokens_per_sec": statistics.median(rates[spec["steps"] // 2 :]), "final_loss": final_loss}


def run_child(kind: str, spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--_child", kind, json.dumps(spec)], cwd=REPO_ROOT,
                         capture_output=True, text=True, env=dict(os.environ, TQDM_DISABLE="1"))
    if out.returncode:
        raise SystemExit(f"{kind} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------- driver
def prepare_sample(root: Path) -> str:
    from gpt2_owt.training.prepare_data import run as prepare

    return str(prepare(["--dataset", "json", "--data_files",
                        str(SAMPLE), "--val_fraction", "0.1",
                        "--num_proc", "1", "--output_dir", str(root / "data"), "--cache_dir", str(root / "cache")]))


@cli_main
def main(argv=None) -> None:
    import torch
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(BenchArgs).parse_args_into_dataclasses(args=argv)
    if args.steps < 2 or args.steps % 2:
        raise UserError(f"--steps must be an even number >= 2, got {args.steps}")
    for name, given, allowed in (("precisions", args.precisions, PRECISIONS), ("variants", args.variants, VARIANTS)):
        if not given or not set(given) <= set(allowed):
            raise UserError(f"--{name} must be some of {' '.join(allowed)}, got {' '.join(given) or 'nothing'}")

    print(f"bench_train: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.steps} steps per run (second half timed), best of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or prepare_sample(Path(tmp))
        for name, overrides, seq_len, global_bs, micro in CASES:
            config_path = Path(tmp) / f"{name.split()[0].replace('/', 'x')}.json"
            config_path.write_text(json.dumps(json.loads((CONFIGS_DIR / "tiny.json").read_text()) | overrides))
            spec = {"model_config": str(config_path), "data_dir": data_dir, "seq_len": seq_len, "global": global_bs,
                    "micro": micro, "steps": args.steps}
            best = {}
            for _ in range(args.repeats):
                for precision in args.precisions:
                    for kind in args.variants:
                        r = run_child(kind, spec | {"precision": precision})
                        old = best.get((precision, kind))
                        if old is None or r["tokens_per_sec"] > old["tokens_per_sec"]:
                            best[precision, kind] = r | {"peak_rss_mb": max(r["peak_rss_mb"], (old or r)["peak_rss_mb"])}
            rate = {key: v["tokens_per_sec"] for key, v in best.items()}

            def ratio(a: tuple, b: tuple) -> str:  # "n/a" when a variant was not measured
                return f"{rate[a] / rate[b]:.3f}" if a in rate and b in rate else "n/a"

            for precision in args.precisions:
                print(f"{name}: seq {seq_len} x batch {global_bs} (micro {micro}), "
                      f"{'fp32' if precision == 'no' else 'bf16 autocast, fp32 weights'}")
                for kind in args.variants:
                    r = best[precision, kind]
                    print(f"  {kind:>16}: {r['tokens_per_sec']:8.0f} tok/s, peak RSS {r['peak_rss_mb']:6.0f} MB, "
                          f"final loss {r['final_loss']:.4f}")
                t, b = best.get((precision, "trainer")), best.get((precision, "bare"))
                if t and b:
                    same = math.isclose(t["final_loss"], b["final_loss"], rel_tol=1e-4)
                    print(f"  trainer / bare loop {ratio((precision, 'trainer'), (precision, 'bare'))} (target >= 0.95,"
                          f" same loss: {same}), RSS ratio {t['peak_rss_mb'] / b['peak_rss_mb']:.2f}")
                print(f"  compiled / eager trainer "
                      f"{ratio((precision, 'trainer_compiled'), (precision, 'trainer'))} (target >= 1.3)")
                trainers = [(precision, k) for k in ("trainer", "trainer_compiled") if (precision, k) in rate]
                if trainers:
                    print(f"  best trainer / nanoGPT-style eager, same precision "
                          f"{ratio(max(trainers, key=rate.get), (precision, 'nanogpt'))} (target >= 1.2)")
            trainers = [key for key in rate if key[1].startswith("trainer")]
            if trainers:
                top = max(trainers, key=rate.get)
                print(f"best trainer setting ({top[1]}, mixed_precision {top[0]}) / nanoGPT-style eager fp32: "
                      f"{ratio(top, ('no', 'nanogpt'))} (target >= 1.2)")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--_child":
        kind, spec = sys.argv[2], json.loads(sys.argv[3])
        if kind == "trainer_compiled":
            kind, spec = "trainer", spec | {"compile": True}
        result = {"trainer": child_trainer, "bare": child_bare, "nanogpt": child_nanogpt}[kind](spec)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
    else:
        main()
