"""`trace memorization`'s greedy decoding (tracing/memorization.py `greedy_continuations`) against a plain per-batch
transformers `generate` loop, the shape of Pythia's predictable-memorization/eval_memorization.py: the same model,
training sequences and batch size, in one process; the tokens must be identical (goal: >= 2x sequences/s).

    python benchmarks/bench_memorization.py --run_dir runs/demo/<stamp>/run [--checkpoint final] [--sample 512]
        [--seed 0] [--prefix_len 32] [--suffix_len 32] [--batch_size 64] [--repeats 3]

The sequences are `--sample N` training sequences of the run drawn as `trace memorization --sample N --seed S` draws
them (its own selection code), read through the run's sampler. The baseline calls, per batch of prefixes,
`model.generate(prefix, do_sample=False, max_new_tokens=suffix_len, eos_token_id=None)` (greedy with the KV cache;
no EOS stop, as the memorization rows are defined: Pythia's min_length does the same by forbidding EOS). Both time
the decoding only (the model loaded once), best of --repeats; the share of memorized sequences is printed with the
speed since ours gains most where the suffix is reproduced (module docstring of tracing/memorization.py).
"""

import json
import os
import platform
import time
from dataclasses import dataclass

import numpy as np
import torch

from gpt2_owt.core.hf_argparser import HfArgumentParser
from gpt2_owt.modeling.checkpoint_series import load_checkpoint, run_checkpoints, select_checkpoint
from gpt2_owt.tracing.memorization import greedy_continuations, match_scores, select_sequences, training_sequences
from gpt2_owt.training.data_dir import WindowSampler, open_split
from gpt2_owt.training.runs import run_config, steps_done


@dataclass
class BenchArgs:
    run_dir: str
    checkpoint: str = "final"
    sample: int = 512
    seed: int = 0
    prefix_len: int = 32
    suffix_len: int = 32
    batch_size: int = 64
    repeats: int = 3


def generate_loop(model, prefixes: np.ndarray, suffix_len: int, batch_size: int) -> np.ndarray:
    """The baseline: one `generate` call per batch (greedy, KV cache, no EOS stop)."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(prefixes), batch_size):
            prefix = torch.from_numpy(np.ascontiguousarray(prefixes[start:start + batch_size]))
            generated = model.generate(prefix, attention_mask=torch.ones_like(prefix), do_sample=False,
                                       max_new_tokens=suffix_len, min_new_tokens=suffix_len, eos_token_id=None,
                                       pad_token_id=0)
            out.append(generated[:, prefix.shape[1]:].numpy())
    return np.concatenate(out)


def best_of(repeats: int, fn):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv=None):
    args = HfArgumentParser(BenchArgs).parse_args_into_dataclasses(args=argv)[0]
    cfg = run_config(args.run_dir)
    split = open_split(cfg.data_dir, "train")
    sampler = WindowSampler.for_run(cfg, split)
    sequence = select_sequences(sampler, steps_done(args.run_dir, cfg), sample=args.sample, seed=args.seed)
    tokens = training_sequences(sampler, split, sequence, args.prefix_len + args.suffix_len).tokens
    prefixes, suffixes = tokens[:, :args.prefix_len], tokens[:, args.prefix_len:]
    checkpoint = select_checkpoint(run_checkpoints(args.run_dir), args.checkpoint, args.run_dir)
    model = load_checkpoint(checkpoint)
    ours_s, ours = best_of(args.repeats, lambda: greedy_continuations(model, prefixes, suffixes, args.batch_size))
    base_s, base = best_of(args.repeats, lambda: generate_loop(model, prefixes, args.suffix_len, args.batch_size))
    memorized, fraction, _ = match_scores(ours, suffixes)
    n = len(tokens)
    result = {
        "run_dir": args.run_dir, "checkpoint": checkpoint.label, "model_config": cfg.model_config,
        "sequences": n, "prefix_len": args.prefix_len, "suffix_len": args.suffix_len, "batch_size": args.batch_size,
        "memorized_fraction": float(memorized.mean()), "mean_match_fraction": float(fraction.mean()),
        "identical_tokens": bool(np.array_equal(ours, base)),
        "ours_seconds": round(ours_s, 3), "generate_seconds": round(base_s, 3),
        "ours_sequences_per_s": round(n / ours_s, 1), "generate_sequences_per_s": round(n / base_s, 1),
        "speedup": round(base_s / ours_s, 2),
        "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
                    f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
    }
    print(json.dumps(result, indent=1))
    if not result["identical_tokens"]:
        raise SystemExit("the greedy tokens differ from generate's")


if __name__ == "__main__":
    main()
