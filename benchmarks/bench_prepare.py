"""Benchmark: `training.prepare_data` against nanoGPT's data/openwebtext/prepare.py approach, same input, same run.

    python benchmarks/bench_prepare.py                    # >= 50 MB of OWT text, num_proc = all cores
    python benchmarks/bench_prepare.py --target_mb 100 --num_proc 4

Input: the genuine OpenWebText documents of training/sample_data/owt_first37_docs.jsonl repeated into
a temp jsonl of at least --target_mb MB of text (tokenizer speed does not depend on repetition: no cache).
Each pipeline runs in its own subprocess with its own fresh `datasets` cache, timed inside the child from
load_dataset to the finished .bin files (imports excluded for both). Peak memory = the largest sum of PSS (proportional
set size: resident memory with pages shared between forked processes split among them) over the child's whole
process tree (main + workers), sampled every 20 ms by this parent with psutil.

  ours      gpt2-owt prepare (load_dataset -> tiktoken in worker processes -> streamed uint16 files)
  nanogpt   load_dataset -> train_test_split -> datasets.map(encode_ordinary + EOT, num_proc) -> np.memmap
            train.bin/val.bin written in 1024 shards (nanoGPT's prepare.py; shards capped at the split's rows,
            since our val split is smaller than 1024 documents)

Both write the same documents in the same order; the benchmark checks their train.bin/val.bin are byte-identical.
Ours and nanoGPT run --repeats times, alternating (a shared machine's background load hits both alike); reported:
best and median tokens/s, and tokens per CPU-second of the process tree (insensitive to other load). Ours also
runs on the doubled corpus (peak memory should stay flat) and with --streaming.
"""

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "training" / "sample_data" / "owt_first37_docs.jsonl"
VAL_FRACTION, SEED = 0.0005, 2357


# ------------------------------------------------------------------------------------------------ child processes


def run_ours(data: str, out: str, cache: str, num_proc: int, streaming: bool) -> int:
    from gpt2_owt.training.prepare_data import main

    argv = ["--dataset", "json", "--data_files", data, "--output_dir", out, "--cache_dir", cache,
            "--num_proc", str(num_proc), "--val_fraction", str(VAL_FRACTION), "--seed", str(SEED)]
    main(argv + (["--streaming"] if streaming else []))
    return sum(json.loads((Path(out) / "manifest.json").read_text())["splits"][s]["tokens"] for s in ("train", "val"))


def run_nanogpt(data: str, out: str, cache: str, num_proc: int) -> int:
    """nanoGPT data/openwebtext/prepare.py, with our offline copy of the gpt2 encoding and local jsonl input."""
    import numpy as np
    from datasets import load_dataset
    from tqdm import tqdm

    from gpt2_owt.modeling.tokenizer import tiktoken_encoding

    enc = tiktoken_encoding()
    dataset = load_dataset("json", data_files=data, num_proc=num_proc, cache_dir=cache)
    split_dataset = dataset["train"].train_test_split(test_size=VAL_FRACTION, seed=SEED, shuffle=True)
    split_dataset["val"] = split_dataset.pop("test")

    def process(example):
        ids = enc.encode_ordinary(example["text"])
        ids.append(enc.eot_token)
        return {"ids": ids, "len": len(ids)}

    tokenized = split_dataset.map(process, remove_columns=["text"], desc="tokenizing the splits", num_proc=num_proc)
    total = 0
    for split, dset in tokenized.items():
        arr_len = np.sum(dset["len"], dtype=np.uint64)
        arr = np.memmap(os.path.join(out, f"{split}.bin"), dtype=np.uint16, mode="w+", shape=(arr_len,))
        total_batches = min(1024, len(dset))
        idx = 0
        for batch_idx in tqdm(range(total_batches), desc=f"writing {split}.bin"):
            batch = dset.shard(num_shards=total_batches, index=batch_idx, contiguous=True).with_format("numpy")
            arr_batch = np.concatenate(batch["ids"])
            arr[idx: idx + len(arr_batch)] = arr_batch
            idx += len(arr_batch)
        arr.flush()
        total += int(arr_len)
    return total


def child(args) -> None:
    sys.path.insert(0, str(REPO_ROOT))
    Path(args.out).mkdir(parents=True, exist_ok=True) if args.child == "nanogpt" else None
    import datasets  # noqa: F401  (imports outside the timed region, for both)
    import transformers  # noqa: F401

    import gpt2_owt.training.prepare_data  # noqa: F401

    cpu_start, start = cpu_seconds(), time.perf_counter()
    if args.child == "nanogpt":
        tokens = run_nanogpt(args.data, args.out, args.cache, args.num_proc)
    else:
        tokens = run_ours(args.data, args.out, args.cache, args.num_proc, args.child == "ours-streaming")
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    print("RESULT " + json.dumps({"tokens": tokens, "seconds": seconds, "cpu_seconds": cpu}))


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (pool workers are joined before the pipelines return)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# ------------------------------------------------------------------------------------------------ parent


def build_corpus(path: Path, target_bytes: int) -> tuple[int, int]:
    """Repeat the sample's documents into `path` until the text reaches `target_bytes`; return (docs, text bytes)."""
    records = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    lines = [json.dumps({"text": r["text"]}) + "\n" for r in records]
    sizes = [len(r["text"].encode()) for r in records]
    docs = text_bytes = 0
    with open(path, "w", encoding="utf-8") as f:
        while text_bytes < target_bytes:
            for line, size in zip(lines, sizes):
                f.write(line)
                docs, text_bytes = docs + 1, text_bytes + size
    return docs, text_bytes


def tree_memory(proc) -> int:
    """PSS summed over the process tree: forked workers share their parent's pages, which RSS would count twice."""
    import psutil

    try:
        tree = [proc, *proc.children(recursive=True)]
    except psutil.Error:  # the child exited between two samples
        return 0
    total = 0
    for p in tree:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def measure(kind: str, data: Path, work: Path, num_proc: int) -> dict:
    """Run one pipeline in a subprocess; its timing and the peak RSS of its process tree."""
    import psutil

    out, cache = work / f"{kind}-out", work / f"{kind}-cache"
    for p in (out, cache):
        shutil.rmtree(p, ignore_errors=True)
    cmd = [sys.executable, __file__, "--child", kind, "--data", str(data), "--out", str(out), "--cache", str(cache),
           "--num_proc", str(num_proc)]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    peak, done = 0, threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_memory(proc))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed (exit {proc.returncode}); run the command to see why:\n  {' '.join(cmd)}")
    result = json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
    result.update(kind=kind, peak_rss_mb=peak / 2**20, tokens_per_sec=result["tokens"] / result["seconds"],
                  tokens_per_cpu_sec=result["tokens"] / result["cpu_seconds"],
                  sha256={s: hashlib.sha256((out / f"{s}.bin").read_bytes()).hexdigest() for s in ("train", "val")})
    shutil.rmtree(cache, ignore_errors=True)
    return result


def report(label: str, r: dict) -> None:
    print(f"{label:<26} {r['tokens']:>11,} tokens {r['seconds']:6.1f} s {r['tokens_per_sec'] / 1e6:6.3f} M tok/s  "
          f"{r['cpu_seconds']:6.1f} CPU-s {r['tokens_per_cpu_sec'] / 1e6:6.3f} M tok/CPU-s  "
          f"peak PSS {r['peak_rss_mb']:5.0f} MB")


def summarize(runs: dict[str, list[dict]]) -> None:
    """Best and median over the repeats (the best run is the one least slowed by other load on the machine)."""
    stats = {}
    for kind, rs in runs.items():
        speeds = sorted(r["tokens_per_sec"] for r in rs)
        stats[kind] = {"best": speeds[-1], "median": statistics.median(speeds),
                       "cpu": statistics.median(r["tokens_per_cpu_sec"] for r in rs)}
        print(f"{kind:<10} best {speeds[-1] / 1e6:.3f}  median {stats[kind]['median'] / 1e6:.3f} M tok/s "
              f"over {len(rs)} runs; median {stats[kind]['cpu'] / 1e6:.3f} M tok/CPU-s")
    if "nanogpt" in stats:
        o, n = stats["ours"], stats["nanogpt"]
        print(f"speed ratio ours / nanoGPT (target >= 3x): best {o['best'] / n['best']:.2f}x, "
              f"median {o['median'] / n['median']:.2f}x; per CPU-second {o['cpu'] / n['cpu']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target_mb", type=float, default=50.0, help="MB of text in the 1x corpus")
    parser.add_argument("--num_proc", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp folder, deleted)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of ours and nanoGPT at 1x")
    parser.add_argument("--skip_nanogpt", action="store_true")
    parser.add_argument("--child", choices=["ours", "ours-streaming", "nanogpt"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_prepare-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        corpus_1x, corpus_2x = work / "owt_1x.jsonl", work / "owt_2x.jsonl"
        docs1, bytes1 = build_corpus(corpus_1x, int(args.target_mb * 1e6))
        docs2, bytes2 = build_corpus(corpus_2x, 2 * bytes1)
        print(f"corpus 1x: {docs1:,} docs, {bytes1 / 1e6:.1f} MB text; 2x: {docs2:,} docs, {bytes2 / 1e6:.1f} MB; "
              f"num_proc {args.num_proc}; {os.cpu_count()} CPUs visible")
        runs = {"ours": [], "nanogpt": []}
        for i in range(args.repeats):  # alternate, so both see the same background load on a shared machine
            for kind in ("ours",) if args.skip_nanogpt else ("ours", "nanogpt"):
                runs[kind].append(measure(kind, corpus_1x, work, args.num_proc))
                report(f"{kind} (1x) run {i + 1}", runs[kind][-1])
        if args.skip_nanogpt:
            del runs["nanogpt"]
        ours = runs["ours"][0]
        for r in runs.get("nanogpt", []):
            assert r["sha256"] == ours["sha256"], "nanoGPT approach wrote different train.bin/val.bin bytes"
        if "nanogpt" in runs:
            print("train.bin and val.bin byte-identical between ours and the nanoGPT approach")
        ours_streaming = measure("ours-streaming", corpus_1x, work, args.num_proc)
        report("ours --streaming (1x)", ours_streaming)
        assert ours_streaming["sha256"] == ours["sha256"], "streaming output differs"
        ours_2x = measure("ours", corpus_2x, work, args.num_proc)
        report("ours (2x)", ours_2x)
        summarize(runs)
        peak_1x = max(r["peak_rss_mb"] for r in runs["ours"])
        print(f"peak PSS ours 1x -> 2x corpus: {peak_1x:.0f} MB -> {ours_2x['peak_rss_mb']:.0f} MB "
              f"(ratio {ours_2x['peak_rss_mb'] / peak_1x:.2f}) for {bytes1 / 1e6:.0f} -> {bytes2 / 1e6:.0f} MB of text")
        if "nanogpt" in runs:
            nano_peak = max(r["peak_rss_mb"] for r in runs["nanogpt"])
            print(f"peak PSS nanoGPT approach 1x: {nano_peak:.0f} MB")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
