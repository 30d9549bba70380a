"""Evaluation throughput on CPU for the tiny preset: windows/s and tokens/s, batch size 1 vs batched.

    python benchmarks/bench_eval.py [--batch_sizes 1,8,16] [--documents 2] [--lambada 256] [--threads N]

Scores the real harness windows (eval/windows.py) of the first WikiText-2 test documents (rolling windows of the
model's full length, 256 for `tiny`) and of the first LAMBADA examples with eval/scoring.py, the code the
`eval.evaluate` command runs. The baseline is batch size 1 measured in the same run; each batched row prints its
speed-up over it.
"""

import time
from dataclasses import dataclass

import torch
from transformers import HfArgumentParser

from eval.data import lambada_texts, wikitext_pages
from eval.scoring import score_windows
from eval.tasks import lambada_request, wikitext_detokenizer
from eval.windows import loglikelihood_window, rolling_windows
from modeling import EOT_TOKEN_ID, build_model, load_tokenizer


@dataclass
class BenchArgs:
    batch_sizes: str = "1,8,16"
    documents: int = 2  # WikiText documents (their rolling windows)
    lambada: int = 256  # LAMBADA examples
    threads: int | None = None
    repeats: int = 2  # best of N


def wikitext_windows(tokenizer, n_docs: int, max_length: int):
    pages = wikitext_pages().items[:n_docs]
    return [w for tokens in tokenizer([wikitext_detokenizer(p) for p in pages])["input_ids"]
            for w in rolling_windows(tokens, EOT_TOKEN_ID, max_length)]


def lambada_windows(tokenizer, n: int, max_length: int):
    contexts, targets = zip(*map(lambada_request, lambada_texts().items[:n]))
    ctx_ids = tokenizer(list(contexts))["input_ids"]
    whole_ids = tokenizer([c + t for c, t in zip(contexts, targets)])["input_ids"]
    return [loglikelihood_window(c, w[len(c):], max_length) for c, w in zip(ctx_ids, whole_ids)]


def measure(model, windows, batch_size: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        score_windows(model, windows, batch_size, desc=f"batch {batch_size}")
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None):
    (args,) = HfArgumentParser(BenchArgs).parse_args_into_dataclasses(args=argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model("tiny", seed=0).eval()
    tokenizer = load_tokenizer()
    tokenizer.model_max_length = 1 << 30
    max_length = model.config.n_positions
    workloads = {"wikitext rolling": wikitext_windows(tokenizer, args.documents, max_length),
                 "lambada_openai": lambada_windows(tokenizer, args.lambada, max_length)}
    print(f"tiny preset, CPU, torch {torch.__version__}, {torch.get_num_threads()} threads, max_length {max_length}")
    print(f"{'workload':<17} {'batch':>5} {'windows':>7} {'seconds':>8} {'windows/s':>10} {'tokens/s':>10} "
          f"{'scored tok/s':>12} {'vs batch 1':>10}")
    for name, windows in workloads.items():
        tokens = sum(len(w.input_ids) for w in windows)
        scored = sum(w.num_scored for w in windows)
        baseline = None
        for batch_size in map(int, args.batch_sizes.split(",")):
            seconds = measure(model, windows, batch_size, args.repeats)
            baseline = baseline or seconds
            print(f"{name:<17} {batch_size:>5} {len(windows):>7} {seconds:>8.2f} {len(windows) / seconds:>10.1f} "
                  f"{tokens / seconds:>10.0f} {scored / seconds:>12.0f} {baseline / seconds:>9.2f}x")


if __name__ == "__main__":
    main()
