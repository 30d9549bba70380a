"""Learning-rate sweep of the tiny recipe (training/configs/tiny.yaml) on the demo's data: which peak learning rate
and warmup train the demo's 200 steps without a loss spike, and to the lowest loss.

    python benchmarks/bench_tiny_lr.py [--data_dir DATA] [--steps 200] [--settings 3e-3:6 1e-3:20 ...]
                                       [--json OUT.json]

Each setting is a real `gpt2-owt train` run of tiny.yaml (one process, fp32, min_lr = learning_rate / 10, no exports)
in its own child process; every setting sees the same batches in the same order. Per setting it reports the largest
rise of the validation loss above its running minimum (the same held-out windows at every evaluation, so a rise
means the model got worse; the curve starts at the untrained model's loss, its first training loss), the largest
rise of the training loss (which a hard batch also causes: compare the settings at the same step), the largest
gradient norm, the mean training loss of the last 20 steps and the final validation loss. A setting is stable when
its validation rise stays within `--spike` (default 0.05 nats). Without --data_dir, the demo's data (both OpenWebText
samples in training/sample_data, val_fraction 0.05, as scripts/demo.sh prepares them) is prepared into a temporary
folder.

Measured 2026-12-05/06, 2 vCPU AMD EPYC (shared with other jobs), torch 2.13.0+cpu, fp32, one process, the demo's
data (290,333 train tokens), 200 updates, validation every 20:

| lr : warmup | val loss rise (step) | train loss rise (step) | max grad norm (step) | train loss, last 20 | val loss, step 200 | stable |
|---|---|---|---|---|---|---|
| 3e-3 : 6 (tiny.yaml) | 0.55 (20): 10.84 at init -> 11.39 | 3.58 (21): 8.19 -> 11.70 | 15.9 (at the spike, after 13.4) | run stopped at step 61 | 8.10 at step 60 | no |
| 1e-3 : 20 | not recorded | 1.25 (76) | 8.16 | 7.449 | 7.65 | - |
| 1e-3 : 50 | 0 | 1.33 (76) | 42.2 (61; clipped to 1, loss 8.13 where 6e-4 had 7.83) | 7.409 | 7.603 | yes |
| **6e-4 : 20** (the demo's) | 0 | 1.26 (76) | 3.16 (71) | 7.524 | 7.729 | yes |

The training-loss rise at step 76 (7.85 -> 8.80 -> 7.55 at 6e-4) is the same batch at every rate: a hard batch, not
an instability. The demo (scripts/demo.sh) trains at 6e-4 with a 10% warmup: 1e-3 / 50 reaches a lower loss, but its
gradient-norm outlier at step 61 is the first sign of 3e-3's instability, and a newcomer's first run should show none.
The 3e-3 run was stopped at step 61 to give the CPU to the others (the spike is the point of it); the 1e-3 / 20 row
was measured before the validation rise was reported. The tests keep tiny.yaml's 3e-3 (their runs are 2-60 updates).
"""

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from gpt2_owt.core.errors import UserError, cli_main
from gpt2_owt.core.hf_argparser import HfArgumentParser
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
    spike: float = field(default=0.05, metadata={"help": "a rise of the validation loss above its running minimum "
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


def largest_rise(rows: list[dict], key: str) -> tuple[float, int | None]:
    """The largest rise of rows[key] above its running minimum, and the step where it happened."""
    best, rise, at = float("inf"), 0.0, None
    for r in rows:
        if r[key] - best > rise:
            rise, at = r[key] - best, r["step"]
        best = min(best, r[key])
    return rise, at


def summarise(rows: list[dict], spike: float) -> dict:
    """Largest rise of the validation loss (the same held-out windows at every evaluation: the model got worse) and of
    the training loss (also a hard batch: every setting sees the same batches) above their running minimum, largest
    grad norm, end losses."""
    train = [r for r in rows if "train_loss" in r]
    # the first evaluation comes after eval_interval updates, maybe after a spike: the untrained model's loss (its
    # first training loss, ~ln 50257 on any text) is where the validation curve starts
    val = [{"step": 0, "val_loss": train[0]["train_loss"]}] + [r for r in rows if "val_loss" in r]
    val_rise, val_step = largest_rise(val, "val_loss")
    rise, rise_step = largest_rise(train, "train_loss")
    last = train[-20:]
    return {"max_val_rise": round(val_rise, 3), "val_rise_at_step": val_step, "stable": val_rise <= spike,
            "max_rise": round(rise, 3), "rise_at_step": rise_step,
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
    print("\n| learning_rate | warmup | val loss rise (step) | train loss rise (step) | max grad norm "
          "| train loss, last 20 | val loss | stable |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['learning_rate']:g} | {r['warmup_steps']} | {r['max_val_rise']} ({r['val_rise_at_step']}) | "
              f"{r['max_rise']} ({r['rise_at_step']}) | {r['max_grad_norm']} | {r['train_loss_last20']} | "
              f"{r['val_loss']} | {'yes' if r['stable'] else 'no'} |")
    stable = [r for r in results if r["stable"]]
    if stable:
        best = min(stable, key=lambda r: r["val_loss"])
        print(f"\nbest stable setting: lr {best['learning_rate']:g}, warmup {best['warmup_steps']} "
              f"(val loss {best['val_loss']})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
