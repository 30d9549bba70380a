"""The trace index (tracing/index.py) at >= 50M tokens: build tokens/s and peak memory, `find` latency against a
vectorised numpy scan of train.bin, and `trace spans` latency for 64-token texts (generation excluded; goal
< 0.5 s) against the same scan finding every start's longest match.

    python benchmarks/bench_trace.py [--tokens 50_000_000] [--num_proc 2] [--mem_gb 4] [--shards 1]
                                     [--workdir /tmp/bench_trace]

The corpus is the bundled OpenWebText sample (training/sample_data, 5,038 documents) repeated with a varied suffix
per copy (" [copy k]") until it holds about --tokens tokens, written as JSONL and prepared by `gpt2-owt prepare`
into a data_dir (the real pipeline; a later run with the same --workdir reuses it). Every copy after the first has a
seeded --mutation_rate of its tokens replaced by tokens drawn from the sample: real OpenWebText has no 25-fold
verbatim repeats, and verbatim repeats make every suffix comparison of the indexer's merge run the length of a
document (--mutation_rate 0 measures that worst case). The baseline is the fastest plain numpy scan: candidate
positions of the first id, then each further id checked on the survivors (`scan_positions`, which `find` itself uses
for ids so common that a scan beats gathering and sorting the suffix-array entries).
Spans: three 64-token texts standing in for generations (a stretch of train.bin, "recombined": eight 8-token
pieces from random places, "novel": tokens drawn at random from the corpus); `spans` (the whole report: maximal
spans, the kept ones' counts, documents and exposures under the 124M recipe) against the scan's longest match
from every start (the same rules applied after), whose maximal spans must be identical.
"""

import json
import os
import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gpt2_owt.core.hf_argparser import HfArgumentParser

from gpt2_owt.modeling.tokenizer import tiktoken_encoding
from gpt2_owt.tracing.find import find
from gpt2_owt.tracing.index import INDEX_DIR, INDEX_INFO, TraceIndex, build_index, scan_positions
from gpt2_owt.tracing.spans import maximal_spans, spans
from gpt2_owt.training.config import parse_config
from gpt2_owt.training.data_dir import MANIFEST

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = [REPO_ROOT / "training/sample_data/owt_first37_docs.jsonl",
           REPO_ROOT / "training/sample_data/owt20p_lines_sample5001.jsonl"]


@dataclass
class BenchArgs:
    tokens: int = 50_000_000
    num_proc: int = 2
    mem_gb: int = 4
    shards: int = 1  # index shards (each its own suffix array: one more binary search per shard per query)
    workdir: str = "/tmp/bench_trace"
    repeats: int = 5  # best of N per query
    mutation_rate: float = 0.05  # share of each later copy's tokens replaced (0: verbatim repeats, the worst case)


def mutated(doc: np.ndarray, rate: float, pool: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copy of `doc` with a `rate` share of its tokens replaced by tokens drawn from `pool`."""
    out = doc.copy()
    where = rng.random(doc.size) < rate
    out[where] = pool[rng.integers(0, pool.size, int(where.sum()))]
    return out


def write_corpus(folder: Path, target_tokens: int, mutation_rate: float, num_proc: int) -> int:
    """The corpus as a real data_dir: its documents written as JSONL and prepared by `gpt2-owt prepare` (so the
    index build's data_dir verification passes as it does for any prepared data)."""
    from gpt2_owt.training.data_dir import open_split
    from gpt2_owt.training.prepare_data import run as prepare

    enc = tiktoken_encoding()
    texts = [json.loads(line)["text"] for path in SAMPLES for line in path.read_text().splitlines() if line.strip()]
    docs = [np.asarray(enc.encode_ordinary(t), dtype=np.uint16) for t in texts]
    pool, rng = np.concatenate(docs), np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "corpus.jsonl"
    total, copy = 0, 0
    with open(source, "w") as f:
        while total < target_tokens:
            for d in docs:
                d = mutated(d, mutation_rate, pool, rng) if copy else d
                text = enc.decode(d.tolist(), errors="replace") + f" [copy {copy}]"
                f.write(json.dumps({"text": text}) + "\n")
                total += d.size + 5
            copy += 1
    data = prepare(["--dataset", "json", "--data_files", str(source), "--val_fraction", "0.0005",
                    "--num_proc", str(num_proc), "--output_dir", str(folder / "data"),
                    "--cache_dir", str(folder / "hf_cache")])
    return open_split(data, "train").num_tokens


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def scan_match_ends(tokens: np.ndarray, ids: list[int]) -> list[int]:
    """The baseline for `TraceIndex.match_ends`: for each start, the survivors of a scan for its first id extended
    one id at a time while any remain (matches across documents included: the scan sees train.bin whole)."""
    ends = []
    for start in range(len(ids)):
        cand, end = np.flatnonzero(tokens == ids[start]), start
        for k in range(len(ids) - start):
            if k:
                cand = cand[cand + k < tokens.size]
                cand = cand[tokens[cand + k] == ids[start + k]]
            if not cand.size:
                break
            end = start + k + 1
        ends.append(end)
    return ends


def span_texts(tokens: np.ndarray, length: int = 64) -> dict[str, list[int]]:
    rng = np.random.default_rng(1)
    pieces = [tokens[s : s + 8] for s in rng.integers(0, tokens.size - 8, length // 8)]
    return {"train.bin stretch": tokens[(m := tokens.size * 7 // 13) : m + length].tolist(),
            "recombined": np.concatenate(pieces).tolist(),
            "novel": tokens[rng.integers(0, tokens.size, length)].tolist()}


def main() -> None:
    args = HfArgumentParser(BenchArgs).parse_args_into_dataclasses()[0]
    data = Path(args.workdir) / "data"
    if not (data / MANIFEST).is_file():  # the prepared corpus is reused by later runs of the same --workdir
        write_corpus(Path(args.workdir), args.tokens, args.mutation_rate, args.num_proc)
    n = (data / "train.bin").stat().st_size // 2
    print(f"corpus: {n:,} tokens in {data} ({(data / 'train.bin').stat().st_size / 1e6:.0f} MB), "
          f"later copies mutated at rate {args.mutation_rate}")

    t = time.perf_counter()
    build_index(data, data / INDEX_DIR, args.num_proc, args.mem_gb, shards=args.shards)
    build = time.perf_counter() - t
    rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
    size = sum(json.loads((data / INDEX_DIR / INDEX_INFO).read_text())["files"].values())
    print(f"index build: {build:.1f} s = {n / build / 1e6:.2f}M tokens/s with {args.num_proc} threads, "
          f"{args.shards} shard(s); "
          f"peak RSS {rss_self:.2f} GB (this process) / {rss_children:.2f} GB (infini-gram indexer); "
          f"index {size / 1e6:.0f} MB = {size / n:.1f} bytes/token")

    index = TraceIndex(data)
    tokens = np.fromfile(data / "train.bin", dtype=np.uint16)
    cfg = parse_config(["--config", str(REPO_ROOT / "training/configs/gpt2-124m-owt.yaml")], validate=False)
    cfg.max_steps = max(1, n // cfg.tokens_per_step())  # one epoch of this corpus with the 124M recipe
    enc = tiktoken_encoding()
    queries = {"rare 8-gram": tokens[123_456:123_464].tolist(), "10-gram": tokens[(m := tokens.size * 9 // 50) : m + 10].tolist(),
               "'Barack Obama'": enc.encode_ordinary(" Barack Obama"), "' the' (common)": [262],
               "' of the'": enc.encode_ordinary(" of the"), "absent": enc.encode_ordinary(" zzqx qqzv wwxq")}
    print(f"{'query':>18} {'count':>9} {'index s':>9} {'find s':>8} {'scan s':>8} {'scan/index':>10} {'scan/find':>9}")
    for name, ids in queries.items():
        t_index, positions = best_of(lambda: index.positions(ids), args.repeats)
        t_find, report = best_of(lambda: find(index, cfg, ids, limit=10), args.repeats)
        t_scan, scanned = best_of(lambda: scan_positions(tokens, ids), max(1, args.repeats // 2))
        assert np.array_equal(positions, scanned) and report["count"] == scanned.size
        print(f"{name:>18} {scanned.size:>9,} {t_index:>9.4f} {t_find:>8.4f} {t_scan:>8.3f} "
              f"{t_scan / t_index:>9.0f}x {t_scan / t_find:>8.0f}x")

    print(f"\n{'64-token text':>18} {'maximal':>8} {'kept':>5} {'spans s':>8} {'ends s':>8} {'scan s':>8} "
          f"{'scan/spans':>10}")
    for name, ids in span_texts(tokens).items():
        until = cfg.total_steps()
        t_spans, report = best_of(lambda: spans(index, cfg, ids, until), args.repeats)
        t_ends, ends = best_of(lambda: index.match_ends(ids), args.repeats)
        t_scan, scanned = best_of(lambda: scan_match_ends(tokens, ids), 1)
        assert ends.tolist() == scanned and report["num_maximal_spans"] == len(maximal_spans(scanned, ids))
        print(f"{name:>18} {report['num_maximal_spans']:>8} {len(report['spans']):>5} {t_spans:>8.3f} "
              f"{t_ends:>8.3f} {t_scan:>8.2f} {t_scan / t_spans:>9.0f}x")
    print(f"hardware: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})")


if __name__ == "__main__":
    main()
