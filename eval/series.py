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

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from gpt2_owt.modeling import UserError, sha256_file
from gpt2_owt.modeling.errors import first_line
from gpt2_owt.modeling.hub_branches import repo_refs
from gpt2_owt.modeling.steps import parse_step_name
from gpt2_owt.modeling.records import read_json, write_json_atomic
from gpt2_owt.training.run_dir import FINAL

from .tasks import TokenCache

WEIGHTS = "model.safetensors"
EXPORT_INFO = "export_info.json"  # {"step", "tokens", "weights_sha256"} in every run_dir/hf export
RELEASE_MANIFEST = "release_manifest.json"  # a release on the Hub's main branch: {"step", "tokens", ...}
FINAL_NAMES = (FINAL, "main")
SERIES_JSON = "series.json"
SERIES_PNG = "series.png"
RESULTS_JSON = "results.json"
# EvalArgs fields that change the numbers: a stored result is reused only if all of them match.
RESUME_KEYS = ("tasks", "max_length", "stride", "dtype", "fused_gelu", "data_source", "data_dir", "limit",
               "tokenizer")


@dataclass(frozen=True)
class Checkpoint:
    name: str  # row name and OUT sub-folder: stepN / final (local), step{N} / main (Hub)
    model: str  # folder or Hub repo id
    revision: str | None
    step: int | None
    tokens: int | None
    weights_sha256: str


# ---------------------------------------------------------------------------------------------------- discovery

def _step_of(name: str) -> int | None:
    return parse_step_name(name)


def _order(checkpoints: list[Checkpoint]) -> list[Checkpoint]:
    """By step; final/main (step from its metadata, else unknown) after the steps it follows."""
    return sorted(checkpoints, key=lambda c: (c.name in FINAL_NAMES, c.step if c.step is not None else -1))


def local_checkpoints(hf_dir: str | Path) -> list[Checkpoint]:
    """Every `stepN` and `final` export in a run's hf/ folder, each with weights (sha256 computed here)."""
    hf_dir = Path(hf_dir).expanduser()
    if not hf_dir.is_dir():
        raise UserError(f"--checkpoints folder {hf_dir} does not exist")
    folders = [p for p in sorted(hf_dir.iterdir()) if p.is_dir() and (parse_step_name(p.name) is not None or p.name == FINAL)]
    if not folders:
        raise UserError(f"no checkpoints (stepN or final folders) found in {hf_dir}")
    missing = [p.name for p in folders if not (p / WEIGHTS).is_file()]
    if missing:
        raise UserError(f"checkpoint folder(s) {', '.join(missing)} in {hf_dir} have no {WEIGHTS}")
    checkpoints = []
    for path in tqdm(folders, desc="hash checkpoints", unit="checkpoint", leave=False):
        info = read_json(path / EXPORT_INFO) if (path / EXPORT_INFO).is_file() else {}
        step = info.get("step", _step_of(path.name))
        checkpoints.append(Checkpoint(path.name, str(path.resolve()), None, step, info.get("tokens"),
                                      sha256_file(path / WEIGHTS)))
    return _order(checkpoints)


def _hub_json(repo_id: str, revision: str, filename: str) -> dict:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return read_json(hf_hub_download(repo_id, filename, revision=revision))
    except EntryNotFoundError:
        return {}


def _hub_weights_sha256(api, repo_id: str, revision: str) -> str:
    """The LFS sha256 the Hub stores for model.safetensors (= sha256 of the file); downloads only if not LFS."""
    from huggingface_hub import hf_hub_download

    infos = api.get_paths_info(repo_id, [WEIGHTS], revision=revision)
    if not infos:
        raise UserError(f"{repo_id} revision {revision} has no {WEIGHTS}")
    lfs = getattr(infos[0], "lfs", None)
    return lfs.sha256 if lfs else sha256_file(hf_hub_download(repo_id, WEIGHTS, revision=revision))


def hub_checkpoints(repo_id: str, revisions: str) -> list[Checkpoint]:
    """`all` = every `step{N}` branch and `main`; or a comma-separated list of branches/tags."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    api = HfApi()
    branches = repo_refs(repo_id)
    try:
        if revisions.strip() == "all":
            wanted = [b for b in branches if parse_step_name(b) is not None] + [b for b in branches if b == "main"]
        else:
            wanted = list(dict.fromkeys(r.strip() for r in revisions.split(",") if r.strip()))
            unknown = [r for r in wanted if r not in branches]
            if unknown or not wanted:
                steps = sorted((b for b in branches if parse_step_name(b) is not None), key=_step_of)
                raise UserError(f"unknown revision(s) {', '.join(unknown) or repr(revisions)} in {repo_id}; it has "
                                f"{', '.join(['main'] * ('main' in branches) + steps) or 'no branches'}")
        if not wanted:
            raise UserError(f"no checkpoints (step{{N}} branches or main) found in {repo_id}")
        checkpoints = []
        for rev in tqdm(wanted, desc="resolve revisions", unit="revision", leave=False):
            sha = _hub_weights_sha256(api, repo_id, rev)
            info = _hub_json(repo_id, rev, EXPORT_INFO) or _hub_json(repo_id, rev, RELEASE_MANIFEST)
            checkpoints.append(Checkpoint(rev, repo_id, rev, info.get("step", _step_of(rev)), info.get("tokens"), sha))
    except RepositoryNotFoundError:
        raise UserError(f"Hub repo {repo_id} not found (or not accessible with your token)") from None
    except HfHubHTTPError as e:
        raise UserError(f"cannot list the checkpoints of {repo_id}: {first_line(e)}") from None
    return _order(checkpoints)


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
    from gpt2_owt.model_card.plots import plot_eval_series

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
