"""Evaluate a checkpoint series: every `RUN/hf/stepN` + `final`, or every Hub `step{N}` branch (+ `main`).

    gpt2-owt eval --checkpoints runs/r1/hf --output_dir evals/r1 --data_dir data/owt
    gpt2-owt eval --repo_id user/gpt2-owt --revisions all --output_dir evals/hub
    gpt2-owt eval --repo_id user/gpt2-owt --revisions step1000,step2000 --output_dir evals/hub

Writes `OUT/<checkpoint>/results.json` (the file a single `--model` run writes), `OUT/series.json` (one row per
checkpoint, ordered by step: {"checkpoint", "revision", "step", "tokens", "weights_sha256", "results",
"metrics": {task: {metric: value}}, "counts": {task: {...}}}) and `OUT/series.png`. Every model is loaded once and
the task texts are tokenized once for the whole series (eval.tasks.TokenCache). Resumable: a checkpoint whose
results.json exists with the same weights sha256 and the same evaluation arguments is read back, not re-run.
All checkpoints are resolved (weights present, revisions known, hashes computed) before anything is written.
"""

from dataclasses import asdict, replace
from pathlib import Path

from tqdm.auto import tqdm

from gpt2_owt.core.errors import UserError
from gpt2_owt.core.plots import plot_eval_series
from gpt2_owt.core.readers import read_json
from gpt2_owt.core.records import write_json_atomic
from gpt2_owt.modeling import checkpoint_series
from gpt2_owt.modeling.checkpoint_series import Checkpoint, run_checkpoints

from .tasks import TokenCache

SERIES_JSON = "series.json"
SERIES_PNG = "series.png"
RESULTS_JSON = "results.json"
# EvalArgs fields that change the numbers: a stored result is reused only if all of them match.
RESUME_KEYS = ("tasks", "max_length", "stride", "dtype", "fused_gelu", "data_source", "data_dir", "limit",
               "tokenizer")


# ---------------------------------------------------------------------------------------------------- discovery
# (the one checkpoint listing, modeling/checkpoint_series.py, with each weights sha256: the resume key)

def local_checkpoints(hf_dir: str | Path) -> list[Checkpoint]:
    """Every `stepN` and `final` export in a run's hf/ folder, each with weights (sha256 computed here)."""
    return run_checkpoints(hf_dir, hash_weights=True)


def hub_checkpoints(repo_id: str, revisions: str) -> list[Checkpoint]:
    """`all` = every `stepN` branch and `main`; or a comma-separated list of branches/tags."""
    return checkpoint_series.hub_checkpoints(repo_id, revisions, hash_weights=True)


# ---------------------------------------------------------------------------------------------------- evaluation

def _resume_key(arguments: dict) -> dict:
    return {k: arguments.get(k) for k in RESUME_KEYS}


def finished_results(path: Path, checkpoint: Checkpoint, args) -> dict | None:
    """The stored results.json if it is this checkpoint's weights evaluated with the same arguments, else None."""
    if not path.is_file():
        return None
    try:
        stored = read_json(path)
    except ValueError:  # a torn or foreign file: evaluate again
        return None
    same_weights = (stored.get("model") or {}).get("weights_sha256") == checkpoint.weights_sha256
    same_args = _resume_key(stored.get("arguments") or {}) == _resume_key(asdict(args))
    return stored if same_weights and same_args else None


def series_row(checkpoint: Checkpoint, results: dict) -> dict:
    return {
        "checkpoint": checkpoint.name, "revision": checkpoint.revision, "step": checkpoint.step,
        "tokens": checkpoint.tokens, "weights_sha256": checkpoint.weights_sha256,
        "results": f"{checkpoint.name}/{RESULTS_JSON}",
        "metrics": {task: block["metrics"] for task, block in results["tasks"].items()},
        "counts": {task: block["counts"] for task, block in results["tasks"].items()},
    }


def evaluate_series(args, checkpoints: list[Checkpoint], output_dir: Path, evaluate_one) -> list[dict]:
    """Evaluate (or read back) each checkpoint, write its results.json, then series.json and series.png.

    `evaluate_one(args) -> results dict` is eval.evaluate's single-model path (imported there, passed here so
    this module stays below the command).
    """
    token_cache = TokenCache()
    rows, skipped = [], 0
    for checkpoint in tqdm(checkpoints, desc="checkpoints", unit="checkpoint"):
        path = output_dir / checkpoint.name / RESULTS_JSON
        results = finished_results(path, checkpoint, args)
        if results is None:
            one = replace(args, model=checkpoint.model, revision=checkpoint.revision, checkpoints=None,
                          repo_id=None, revisions=None, output_dir=None, output=str(path))
            results = evaluate_one(one, token_cache)
            if results["model"]["weights_sha256"] not in (None, checkpoint.weights_sha256):
                raise UserError(f"{checkpoint.name}: weights changed while the series ran "
                                f"({results['model']['weights_sha256']} != {checkpoint.weights_sha256})")
            results["model"]["weights_sha256"] = checkpoint.weights_sha256
            results["arguments"] = asdict(one)
            write_json_atomic(path, results)
        else:
            skipped += 1
        rows.append(series_row(checkpoint, results))
    write_json_atomic(output_dir / SERIES_JSON, rows)
    plot_eval_series(rows, output_dir / SERIES_PNG)
    print(f"{len(rows)} checkpoints ({skipped} already evaluated, reused): wrote {output_dir / SERIES_JSON} and "
          f"{output_dir / SERIES_PNG}")
    return rows


def series_table(rows: list[dict]) -> str:
    """One line per checkpoint, one column per task/metric (printed by the command; the card has its own table)."""
    columns = list(dict.fromkeys((t, m) for row in rows for t, block in row["metrics"].items() for m in block))
    header = f"{'checkpoint':<14} {'step':>8} {'tokens':>13} " + " ".join(f"{t + '/' + m:>28}" for t, m in columns)
    lines = [header]
    for row in rows:
        cells = [row["metrics"].get(t, {}).get(m) for t, m in columns]
        lines.append(f"{row['checkpoint']:<14} {row['step'] if row['step'] is not None else '':>8} "
                     f"{row['tokens'] if row['tokens'] is not None else '':>13} "
                     + " ".join(f"{v:>28.4f}" if v is not None else f"{'':>28}" for v in cells))
    return "\n".join(lines)
