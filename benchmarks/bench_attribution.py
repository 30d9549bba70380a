"""How good is each attribution method on this run (issue 26 item 3): the linear datamodeling score (LDS, TRAK
arXiv 2303.14186) of Bergson's TrackStar, EK-FAC and SOURCE against exact counterfactual replays of a tiny CPU run,
each method's time per query against one replay, and a planted canary.

    python benchmarks/bench_attribution.py [--workdir /tmp/bench_attribution] [--subsets 50] [--fraction 0.5]
                                           [--steps 48] [--window 16] [--methods trackstar ekfac source]

1. Data: the bundled 37 OpenWebText documents plus --canary_copies copies of one planted sentence (placed at rows
   the seeded split sends to train), prepared by `gpt2-owt prepare`.
2. Run: the tiny preset, seq_len 64, global batch 8, --steps updates, a checkpoint every --checkpoint_every; its
   data_seed is the first of 0..99 whose order feeds the most canary windows inside the window (printed; the rest of
   the recipe is tiny.yaml's).
3. Window: updates [S, T), T = --steps, S = T - --window; the candidates are all its sequences (window x 8).
   Queries: the canary sentence, --val_queries snippets of held-out (val) documents, --train_queries snippets of
   sequences the window trained on. Every query is scored after an EOT (tracing/attribute.py).
4. Each method scores every candidate for every query in one Bergson run at step T (SOURCE: checkpoints
   S + window/2 and T, two segments), timed: time per query = that run's wall time / number of queries.
5. --subsets random subsets of --fraction of the candidates (seeded), each left out by a replay from
   checkpoints/stepS to T (helper C's replay, tracing/replay.py): the true change of each query's loss at T. A
   method's predicted change for a subset is the sum of its effects over the subset (the linear datamodel); LDS
   = Spearman correlation over the subsets, per query, with a 95% bootstrap interval (subsets resampled
   --bootstrap times); the mean over queries likewise.
6. Canary: the replay without the sequences holding the canary whole, against --random_draws replays without as
   many random other sequences of the window; each method's recall@k of those sequences (k = their number).

Writes WORKDIR/results.json (everything above, with the hardware) and prints the tables docs/attribution.md shows.
`--attribution_only` stops after step 4 (no replay).
"""

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpt2_owt.core.hf_argparser import HfArgumentParser

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "training" / "sample_data" / "owt_first37_docs.jsonl"
TINY_YAML = REPO_ROOT / "training" / "configs" / "tiny.yaml"
CANARY = "Quibbleton's zephyr-glass orchestra tuned forty-one marimbas beneath the violet aqueduct of Snorvik."
# Bergson's published LDS on a GPT-2 WikiText fine-tune, from its GitHub README (2026-08 snapshot, ± as printed) and
# from the bergson 2.5.1 package README on PyPI (95% intervals): the figures this run is compared with.
PUBLISHED_LDS = {
    "github README": {"MAGIC": "0.983 ± 0.005", "SOURCE": "0.387 ± 0.039", "EK-FAC": "0.257 ± 0.015",
                      "TrackStar": "0.184 ± 0.015"},
    "bergson 2.5.1 README": {"MAGIC": "0.931 [0.925, 0.936]", "SOURCE (Adam, EKFAC)": "0.473 [0.446, 0.498]",
                             "EKFAC": "0.454 [0.426, 0.479]", "TrackStar (no optimizer)": "0.276 [0.252, 0.299]"},
}


@dataclass
class BenchArgs:
    workdir: str = "/tmp/bench_attribution"
    steps: int = field(default=48, metadata={"ge": 2})
    window: int = field(default=16, metadata={"ge": 2})
    checkpoint_every: int = field(default=8, metadata={"ge": 1})
    canary_copies: int = field(default=6, metadata={"ge": 1})
    val_queries: int = field(default=3, metadata={"ge": 0})
    train_queries: int = field(default=2, metadata={"ge": 0})
    query_tokens: int = field(default=24, metadata={"ge": 2})
    methods: list[str] = field(default_factory=lambda: ["trackstar", "ekfac", "source"])
    subsets: int = field(default=50, metadata={"ge": 3})
    fraction: float = field(default=0.5, metadata={"gt": 0, "lt": 1})
    random_draws: int = field(default=5, metadata={"ge": 1})
    bootstrap: int = field(default=1000, metadata={"ge": 10})
    seed: int = 0
    attribution_only: bool = False


# ------------------------------------------------------------------------------------------------------ the run
def write_data(root: Path, copies: int) -> Path:
    """The 37 sample documents plus `copies` canary documents, at rows the seeded split sends to train."""
    from gpt2_owt.training.prepare.split import split_rows
    from gpt2_owt.training.prepare_data import run as prepare

    owt = [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines() if line.strip()]
    n = len(owt) + copies
    val = {int(r) for r in split_rows(n, 0.1, 2357)["val"]}
    canary_rows = set([r for r in range(n) if r not in val][:: max(1, (n - len(val)) // copies)][:copies])
    documents = iter(owt)
    texts = [CANARY if r in canary_rows else next(documents) for r in range(n)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return prepare(["--dataset", "json", "--data_files", str(root / "docs.jsonl"), "--val_fraction", "0.1",
                    "--num_proc", "1", "--output_dir", str(root / "data"), "--cache_dir", str(root / "hf_cache")])


def canary_windows(split, sampler) -> np.ndarray:
    """Windows holding the canary whole (its positions by the plain numpy scan)."""
    from gpt2_owt.tracing.index import scan_positions
    from gpt2_owt.modeling.tokenizer import encode

    ids = encode(CANARY)
    positions = scan_positions(np.asarray(split.tokens), ids)
    return np.unique(sampler.windows_holding(positions, positions + len(ids))[1])


def choose_data_seed(split, recipe: dict, window: range) -> tuple[int, int]:
    """The first data_seed of 0..99 whose order feeds the most canary windows at updates in `window`."""
    from gpt2_owt.training.data_dir import WindowSampler

    best = (-1, 0)
    for seed in range(100):
        sampler = WindowSampler.for_run(recipe | {"data_seed": seed}, split)
        fed = np.concatenate([sampler.global_batch_windows(u) for u in window])
        count = int(np.isin(fed, canary_windows(split, sampler)).sum())
        if count > best[1]:
            best = (seed, count)
    return best


def train(data_dir: Path, run_dir: Path, recipe: dict) -> None:
    from accelerate.state import AcceleratorState, GradientState

    from gpt2_owt.training.train import main as train_main

    argv = ["--config", str(TINY_YAML), "--data_dir", str(data_dir), "--output_dir", str(run_dir), "--report_to",
            "none"]
    for key, value in recipe.items():
        argv += [f"--{key}", *map(str, value if isinstance(value, list) else [value])]
    try:
        assert train_main(argv) == 0
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def make_queries(run, args: BenchArgs, candidates) -> list:
    """The canary, held-out val snippets, and snippets of sequences the window trained on (the first tokens of each)."""
    from gpt2_owt.tracing.attribute import make_query
    from gpt2_owt.modeling.tokenizer import decode
    from gpt2_owt.training.data_dir import open_split

    val = open_split(run.cfg.data_dir, "val")
    texts = [CANARY]
    for d in range(min(args.val_queries, val.num_documents)):
        start = int(val.doc_offsets[d])
        texts.append(decode(val.tokens[start : start + args.query_tokens]))
    rng = np.random.default_rng(args.seed + 1)
    for i in rng.choice(len(candidates), size=args.train_queries, replace=False):
        start = int(candidates.window[i]) * run.cfg.seq_len
        texts.append(decode(run.split.tokens[start : start + args.query_tokens]))
    return [make_query(t, None, None, run.cfg.seq_len) for t in texts]


# ------------------------------------------------------------------------------------------------------ replay
def replayed_losses(run_dir: Path, start: int, stop: int, queries: list, removals: list[list[tuple[int, int]]]):
    """The exact counterfactuals: helper C's replay (issue 26 item 1, tracing/replay.py), the trainer's own update
    function re-run from checkpoints/step{start} over updates start..stop-1. Returns (each query's loss at `stop` with
    nothing removed [queries], the same with each removal's (update, row) sequences left out [removals, queries],
    seconds per counterfactual, the replay's exactness record: the original must equal the run's weights at `stop`
    bit for bit). The one place the benchmark calls the replay."""
    from gpt2_owt.tracing.replay import Query, Replayer

    as_replayed = [Query(q.completion, q.prompt) if q.text is None else Query(q.text) for q in queries]
    every = stop - start  # losses at start and stop only
    with Replayer(run_dir, start, stop) as replayer:
        original = replayer.original(as_replayed, every, progress=False).losses[:, -1]
        began = time.perf_counter()
        changed = [replayer.counterfactual(removed, as_replayed, every, progress=False).losses[:, -1]
                   for removed in removals]
        seconds = (time.perf_counter() - began) / len(removals)
        return original, np.stack(changed), seconds, dict(replayer.exact)


# ------------------------------------------------------------------------------------------------------ scores
def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def lds(predicted: np.ndarray, actual: np.ndarray, draws: int, seed: int) -> dict:
    """LDS per query and their mean, each with a 95% bootstrap interval over the subsets. predicted/actual:
    [subsets, queries]."""
    queries = predicted.shape[1]
    point = np.array([spearman(predicted[:, q], actual[:, q]) for q in range(queries)])
    rng = np.random.default_rng(seed)
    boot = np.empty((draws, queries))
    for b in range(draws):
        pick = rng.integers(0, len(predicted), len(predicted))
        boot[b] = [spearman(predicted[pick, q], actual[pick, q]) for q in range(queries)]
    low, high = np.nanpercentile(boot, [2.5, 97.5], axis=0)
    mean_low, mean_high = np.nanpercentile(np.nanmean(boot, axis=1), [2.5, 97.5])
    return {"per_query": [{"lds": float(p), "interval": [float(lo), float(hi)]} for p, lo, hi in zip(point, low, high)],
            "mean": {"lds": float(np.nanmean(point)), "interval": [float(mean_low), float(mean_high)]}}


def recall_at_k(effects: np.ndarray, relevant: np.ndarray) -> float:
    k = int(relevant.sum())
    return float(relevant[np.argsort(-effects, kind="stable")[:k]].mean()) if k else float("nan")


def hardware() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or platform.machine()) \
        if Path("/proc/cpuinfo").is_file() else platform.machine()
    import torch

    return f"{os.cpu_count()} vCPU {model}, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}"


# ------------------------------------------------------------------------------------------------------ main
def main() -> None:
    import tempfile

    from gpt2_owt.tracing.attribute import METHODS, Run, attribute, bergson, choose_candidates
    from gpt2_owt.training.data_dir import open_split

    args = HfArgumentParser(BenchArgs).parse_args_into_dataclasses()[0]
    unknown = set(args.methods) - set(METHODS)
    if unknown or args.window > args.steps or args.window % 2 or args.steps % args.checkpoint_every or \
            (args.steps - args.window) % args.checkpoint_every or (args.window // 2) % args.checkpoint_every:
        raise SystemExit(f"methods must be in {METHODS}; window even and <= steps; steps, T - window and "
                         "T - window/2 on the checkpoint grid")
    work = Path(args.workdir)
    start, stop = args.steps - args.window, args.steps
    recipe = dict(max_steps=args.steps, seq_len=64, global_batch_size=8, micro_batch_size=8,
                  checkpoint_interval=args.checkpoint_every, keep_last_checkpoints=args.steps // args.checkpoint_every,
                  eval_interval=args.steps, eval_iters=1, export_steps=[0], export_interval=0)
    data_dir = work / "data"
    if not (data_dir / "manifest.json").is_file():
        write_data(work, args.canary_copies)
    recipe["data_seed"], fed = choose_data_seed(open_split(data_dir, "train"), recipe, range(start, stop))
    run_dir = work / f"run-seed{recipe['data_seed']}"
    print(f"hardware: {hardware()}\ndata_seed {recipe['data_seed']}: {fed} canary sequences in updates "
          f"{start}..{stop - 1}")
    if not (run_dir / "hf" / "final").is_dir():
        began = time.perf_counter()
        train(data_dir, run_dir, recipe)
        print(f"trained {args.steps} updates in {time.perf_counter() - began:.0f} s")

    run = Run.open(run_dir)
    candidates = choose_candidates(["updates", f"{start}:{stop}"], None, 0, run.split, run.sampler, stop)
    holders = canary_windows(run.split, run.sampler)
    is_canary = np.isin(candidates.window, holders)
    queries = make_queries(run, args, candidates)
    results = {"hardware": hardware(), "bergson": bergson().__version__, "recipe": recipe,
               "window": [start, stop], "candidates": len(candidates), "canary_sequences": int(is_canary.sum()),
               "queries": [{"text": q.text, "scored_tokens": q.scored_tokens} for q in queries],
               "published_lds": PUBLISHED_LDS, "methods": {}}

    effects = {}
    for method in args.methods:
        steps = [start + args.window // 2, stop] if method == "source" else [stop]
        with tempfile.TemporaryDirectory(prefix="bench-attribution-") as tmp:
            began = time.perf_counter()
            effects[method] = attribute(run, queries, candidates, method, steps, Path(tmp))
            seconds = time.perf_counter() - began
        results["methods"][method] = {"steps": steps, "seconds": seconds, "seconds_per_query": seconds / len(queries),
                                      "canary_recall_at_k": recall_at_k(effects[method][:, 0], is_canary)}
        print(f"{method}: {seconds:.1f} s for {len(queries)} queries, canary recall@{int(is_canary.sum())} "
              f"{results['methods'][method]['canary_recall_at_k']:.2f}")
    (work / "results.json").write_text(json.dumps(results, indent=1))
    if args.attribution_only:
        return

    rng = np.random.default_rng(args.seed)
    size = int(round(args.fraction * len(candidates)))
    subsets = [np.sort(rng.choice(len(candidates), size=size, replace=False)) for _ in range(args.subsets)]
    canary, others = np.flatnonzero(is_canary), np.flatnonzero(~is_canary)
    draws = [np.sort(rng.choice(others, size=len(canary), replace=False)) for _ in range(args.random_draws)]
    pairs = lambda index: list(zip(candidates.update[index].tolist(), candidates.row[index].tolist()))  # noqa: E731
    original, changed, replay_seconds, exact = replayed_losses(run_dir, start, stop, queries,
                                                               [pairs(s) for s in [*subsets, canary, *draws]])
    actual = changed[: len(subsets)] - original  # true change of each query's loss at T, per subset
    results["replay"] = {"seconds": replay_seconds, "exact": exact, "original_losses": original.tolist()}
    for method, effect in effects.items():
        predicted = np.stack([effect[s].sum(axis=0) for s in subsets])
        entry = results["methods"][method]
        entry["lds"] = lds(predicted, actual, args.bootstrap, args.seed)
        entry["speedup_vs_replay"] = replay_seconds / entry["seconds_per_query"]
    canary_rise = float(changed[len(subsets), 0] - original[0])
    random_rise = (changed[len(subsets) + 1 :, 0] - original[0]).tolist()
    results["canary_check"] = {"removed": len(canary), "canary_loss_rise": canary_rise,
                               "random_loss_rise": random_rise, "passed": canary_rise > max(random_rise)}
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print_tables(results)


def print_tables(results: dict) -> None:
    print(f"\n{results['hardware']}; window updates {results['window'][0]}..{results['window'][1] - 1}, "
          f"{results['candidates']} candidates, one replay {results['replay']['seconds']:.1f} s "
          f"(exact: {results['replay']['exact']})")
    print("| method | LDS (mean over queries) [95% CI] | per query: LDS | s per query | x faster than a replay "
          "| canary recall@k |\n|---|---|---|---|---|---|")
    for method, m in results["methods"].items():
        per = ", ".join(f"{q['lds']:.2f}" for q in m["lds"]["per_query"])
        lo, hi = m["lds"]["mean"]["interval"]
        print(f"| {method} | {m['lds']['mean']['lds']:.3f} [{lo:.3f}, {hi:.3f}] | {per} | {m['seconds_per_query']:.1f} "
              f"| {m['speedup_vs_replay']:.2f} | {m['canary_recall_at_k']:.2f} |")
    c = results["canary_check"]
    print(f"canary: removing its {c['removed']} sequences raises its loss by {c['canary_loss_rise']:.4f}; as many "
          f"random ones: {', '.join(f'{r:.4f}' for r in c['random_loss_rise'])} ({'passed' if c['passed'] else 'FAILED'})")


if __name__ == "__main__":
    main()
