"""Learning-rate sweep of the tiny recipe (training/configs/tiny.yaml) on the demo's data: which peak learning rate
and warmup train the demo's 200 steps without a loss spike, and to the lowest loss.

    python benchmarks/bench_tiny_lr.py [--data_dir DATA] [--steps 200] [--settings 3e-3:6 1e-3:20 ...]
                                       [--json OUT.json]

Each setting is a real `gpt2-owt train` run of tiny.yaml (one process, fp32, min_lr = learning_rate / 10, no exports)
in its own child process. Per setting it reports the largest rise of the training loss above its running minimum
(a spike: the 3e-3 / warmup-6 recipe measured 8.19 -> 11.72 at step 21), the largest gradient norm, the mean
training loss of the last 20 steps and the final validation loss. A setting is stable when no rise exceeds
`--spike` (default 0.5 nats: the step-to-step noise of a batch of 8 x 64 tokens stays well below it). Without
--data_dir, the demo's data (both OpenWebText samples in training/sample_data, val_fraction 0.05, as
scripts/demo.sh prepares them) is prepared into a temporary folder.

Measured 2026-12-05/06, 2 shared vCPU (x86_64), torch 2.13.0+cpu, fp32, one process, the demo's data (290,333 train
tokens), default --spike 0.5:

| lr : warmup | max rise (step) | max grad norm | train loss, last 20 | val loss | stable |
|---|---|---|---|---|---|
| 3e-3 : 6 (the recipe) | 3.58 (21): 8.19 -> 11.70, grad norm 13.4 then 15.9; val 11.39 at step 20 | 15.9 | run stopped at step 61 | 8.10 (step 60) | no |
| 1e-3 : 20 | 1.25 (76) | 8.16 | 7.449 | 7.65 | no |

The 3e-3 run was stopped at step 61 to give the CPU to the others (the spike is the point of it). Lower rates were
not measured yet: run `--settings 6e-4:20 3e-4:20` before changing training/configs/tiny.yaml.
"""

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from gpt2_owt.modeling import UserError, cli_main
from gpt2_owt.modeling.hf_argparser import HfArgumentParser
from gpt2_owt.training.run_dir import read_metrics

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_YAML = REPO_ROOT / "training" / "configs" / "tiny.yaml"
DEMO_SAMPLES = [REPO_ROOT / "training" / "sample_data" / name
                for name in ("owt_first37_docs.jsonl", "owt20p_lines_sample5001.jsonl")]


@dataclass
class SweepArgs:
    data_dir: str | None = field(default=None, metadata={"help": "prepared data_dir (default: the demo's data)"})
    steps: int = field(default=200, metadata={"help": "updates per run (the demo trains 200)"})
    settings: list[str] = field(default_factory=lambda: ["3e-3:6", "2e-3:20", "1e-3:20", "6e-4:20"],
                                metadata={"help": "peak_learning_rate:warmup_steps pairs to try (3e-3:6 was the "
                                                  "recipe before this sweep)"})
    spike: float = field(default=0.5, metadata={"help": "a rise of the training loss above its running minimum "
                                                        "larger than this (nats) counts as a spike"})
    json: str | None = field(default=None, metadata={"help": "also write the table as JSON here"})


def parse_setting(text: str) -> tuple[float, int]:
    try:
        lr, warmup = text.split(":")
        return float(lr), int(warmup)
    except ValueError:
        raise UserError(f"--settings {text!r}: expected peak_learning_rate:warmup_steps, e.g. 1e-3:20") from None


def prepare_demo_data(root: Path) -> str:
    from gpt2_owt.training.prepare_data import run as prepare

    return str(prepare(["--dataset", "json", "--data_files", *map(str, DEMO_SAMPLES), "--val_fraction", "0.05",
                        "--num_proc", "1", "--output_dir", str(root / "data"), "--cache_dir", str(root / "cache")]))


def train(data_dir: str, out: Path, steps: int, lr: float, warmup: int) -> list[dict]:
    """One tiny.yaml run with this peak lr and warmup; its metrics rows."""
    cmd = [sys.executable, "-m", "gpt2_owt.cli", "train", "--config", str(TINY_YAML), "--data_dir", data_dir,
           "--output_dir", str(out), "--max_steps", str(steps), "--learning_rate", str(lr), "--min_lr", str(lr / 10),
           "--warmup_steps", str(warmup), "--eval_interval", "20", "--eval_iters", "4", "--log_interval", "1",
           "--checkpoint_interval", "0", "--keep_last_checkpoints", "0", "--export_steps", "--export_interval", "0",
           "--record_sequence_losses", "false", "--report_to", "none"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True,
                          env=dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1"))
    if proc.returncode:
        raise UserError(f"training lr {lr} warmup {warmup} failed: {proc.stderr.strip().splitlines()[-1]}")
    return read_metrics(out)


def summarise(rows: list[dict], spike: float) -> dict:
    """Largest rise of the training loss above its running minimum (and where), largest grad norm, end losses."""
    train = [r for r in rows if "train_loss" in r]
    best, rise, rise_step = float("inf"), 0.0, None
    for r in train:
        if r["train_loss"] - best > rise:
            rise, rise_step = r["train_loss"] - best, r["step"]
        best = min(best, r["train_loss"])
    val = [r for r in rows if "val_loss" in r]
    last = train[-20:]
    return {"max_rise": round(rise, 3), "rise_at_step": rise_step, "stable": rise <= spike,
            "max_grad_norm": round(max(r["grad_norm"] for r in train), 2),
            "train_loss_last20": round(sum(r["train_loss"] for r in last) / len(last), 3),
            "val_loss": round(val[-1]["val_loss"], 3), "first_train_loss": round(train[0]["train_loss"], 3)}


@cli_main
def main(argv=None) -> None:
    import platform

    import torch

    (args,) = HfArgumentParser(SweepArgs).parse_args_into_dataclasses(args=argv)
    print(f"bench_tiny_lr: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}; tiny.yaml, {args.steps} updates, min_lr = lr / 10, spike > {args.spike} nats")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or prepare_demo_data(Path(tmp))
        settings = [parse_setting(text) for text in args.settings]
        for i, (lr, warmup) in enumerate(settings):
            summary = summarise(train(data_dir, Path(tmp) / f"run{i}", args.steps, lr, warmup), args.spike)
            results.append({"learning_rate": lr, "warmup_steps": warmup} | summary)
            print(f"[{i + 1}/{len(settings)}] lr {lr:g} warmup {warmup}: {summary}", flush=True)
    print("\n| learning_rate | warmup | max rise (step) | max grad norm | train loss, last 20 | val loss | stable |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['learning_rate']:g} | {r['warmup_steps']} | {r['max_rise']} ({r['rise_at_step']}) | "
              f"{r['max_grad_norm']} | {r['train_loss_last20']} | {r['val_loss']} | {'yes' if r['stable'] else 'no'} |")
    stable = [r for r in results if r["stable"]]
    if stable:
        best = min(stable, key=lambda r: r["val_loss"])
        print(f"\nbest stable setting: lr {best['learning_rate']:g}, warmup {best['warmup_steps']} "
              f"(val loss {best['val_loss']})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
