"""Assemble a self-contained release folder (weights, tokenizer, model card, configs, eval, manifests, plots).

    gpt2-owt card --run_dir RUN [--checkpoint final|stepN] [--eval_results results.json] \
        --output_dir RELEASE [--repo_id user/name] [--gpu_hour_usd X --gpu_watts W --grid_kgco2_per_kwh C]

The release is built in a temporary folder next to `output_dir`, checked (loads with AutoModelForCausalLM and
AutoTokenizer, weights hash, card metadata round-trip), then renamed into place. An existing different release is
never replaced without `--overwrite`; rebuilding the same inputs is a no-op. Layout: model_card/release_dir.py.
torch/transformers/matplotlib are imported by the steps that need them, so `--help` and input errors are fast.
"""

import json
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from gpt2_owt.core.args import command_argv, parse
from gpt2_owt.core.errors import UserError, cli_main
from gpt2_owt.core.output_paths import atomic_output, guard_output
from gpt2_owt.core.plots import write_plots
from gpt2_owt.core.readers import read_json
from gpt2_owt.core.records import sha256_file
from gpt2_owt.core.steps import parse_step_name, step_name
from gpt2_owt.modeling.model_folder import check_model_folder
from gpt2_owt.modeling.tokenizer import (TOKENIZER_DIR, TOKENIZER_FILES, tokenizer_fingerprint, verify_tokenizer_files,
                                         VOCAB_SIZE)
from gpt2_owt.training import run_dir as run_layout  # the run folder's file names (release_dir has its own)
from gpt2_owt.training.data_dir import SEEDS_DEFAULTING_TO_SEED, read_recipe
from gpt2_owt.training.manifest import check_tokenizer_fingerprint

from . import card as card_mod
from . import facts as F
from .release_dir import (
    DATA_MANIFEST, DATA_NOTICE, EVAL_RESULTS, MODEL_FILES, OPTIONAL_MODEL_FILES, README, RELEASE_MANIFEST,
    TOKENIZER_NOTICE, TRAINING_CONFIG,
)
from .eval_series import load_eval_series, series_context
from .space import FOLDER as SPACE_FOLDER, space_files, write_space

DATA_NOTICE_SRC = Path(__file__).parent / "notices" / DATA_NOTICE


@dataclass
class BuildArgs:
    run_dir: str = field(metadata={"help": "training run folder (training/run_dir.py layout)"})
    output_dir: str = field(metadata={"help": "release folder to create"})
    checkpoint: str = field(default="final", metadata={"help": "which export to release: final or stepN"})
    eval_results: str | None = field(default=None, metadata={"help": "results.json written by the eval stage"})
    eval_series: str | None = field(default=None, metadata={
        "help": "series.json of `eval.evaluate --checkpoints`: a table + plot over training (model-index stays "
                "--eval_results)"})
    repo_id: str = field(default="your-username/gpt2-owt", metadata={"help": "Hub repo id used in the card's code"})
    model_name: str | None = field(default=None, metadata={"help": "card title / model-index name (default: repo name)"})
    gpu_hour_usd: float | None = field(default=None, metadata={
        "help": "price of one device-hour, for the cost estimate", "ge": 0})
    gpu_watts: float | None = field(default=None, metadata={
        "help": "power per device in W (default on GPU: its TDP)", "ge": 0})
    grid_kgco2_per_kwh: float | None = field(default=None, metadata={
        "help": "grid carbon intensity for the CO2 estimate", "ge": 0})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing, different release folder"})
    with_space: bool = field(default=False, metadata={
        "help": "add space/: the trace explorer as a Hub Space of this release (model_card/space.py, docs/explorer.md)"})
    code_url: str | None = field(default=None, metadata={
        "help": "public git URL of this code (with --with_space: the Space installs it at the run's commit)"})


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    return read_json(path, what)


def export_dir(run_dir: Path, checkpoint: str) -> Path:
    if checkpoint != run_layout.FINAL and parse_step_name(checkpoint) is None:
        raise UserError(f"--checkpoint must be 'final' or 'stepN', got {checkpoint!r}")
    path = run_dir / run_layout.HF_EXPORTS / checkpoint
    missing = [name for name in MODEL_FILES if not (path / name).is_file()]
    if missing:
        raise UserError(f"export {path} is incomplete or missing (no {', '.join(missing)})")
    check_model_folder(path)  # damaged weights header / config, another architecture: one line naming the file
    return path


def export_weights_sha256(path: Path) -> str:
    """The export's recorded weights hash, checked against the file (a mismatch means a damaged export)."""
    actual = sha256_file(path / run_layout.WEIGHTS)
    info_path = path / run_layout.EXPORT_INFO
    if info_path.is_file():
        recorded = run_layout.read_json(info_path).get("weights_sha256")
        if recorded and recorded != actual:
            raise UserError(f"{path}/{run_layout.WEIGHTS} has sha256 {actual} but {run_layout.EXPORT_INFO} records {recorded}")
    return actual


def intermediate_checkpoints(run_dir: Path) -> list[dict]:
    """Every hf/stepN export: the branch it is published to, step, tokens and weights hash."""
    found = []
    for step, path in run_layout.list_step_dirs(run_dir / run_layout.HF_EXPORTS):
        if not (path / run_layout.WEIGHTS).is_file():
            continue
        info = run_layout.read_json(path / run_layout.EXPORT_INFO) if (path / run_layout.EXPORT_INFO).is_file() else {}
        sha = info.get("weights_sha256") or sha256_file(path / run_layout.WEIGHTS)
        found.append({"branch": step_name(step), "step": step, "tokens": info.get("tokens"), "weights_sha256": sha})
    return found


def check_tokenizer(manifest: dict, run_dir: Path) -> str:
    """The release ships the package's tokenizer files (hash-checked); the run's data must have been tokenized with
    that same tokenizer (the manifest check of training/manifest.py)."""
    verify_tokenizer_files()
    check_tokenizer_fingerprint(manifest, f"{run_dir}/{run_layout.DATA_MANIFEST}")
    return tokenizer_fingerprint()


def load_eval_results(path: str | None, weights_sha256: str) -> dict | None:
    if path is None:
        return None
    results = _read_json(Path(path), "eval results")
    if not isinstance(results.get("tasks"), dict):
        raise UserError(f"{path} has no 'tasks' object (expected the eval stage's results.json)")
    evaluated = (results.get("model") or {}).get("weights_sha256")
    if evaluated and evaluated != weights_sha256:
        raise UserError(f"{path} evaluated weights {evaluated}, not this checkpoint's {weights_sha256}")
    return results


def copy_files(pairs: list[tuple[Path, Path]]) -> None:
    for src, dst in tqdm(pairs, desc="copy release files", unit="file", leave=False):
        shutil.copyfile(src, dst)


def check_loads(release: Path) -> int:
    """Load the folder exactly as users will; return the parameter count. Raises UserError on any mismatch."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gpt2_owt.modeling.model import count_parameters

    tokenizer = AutoTokenizer.from_pretrained(str(release))
    ids = tokenizer("Hello world")["input_ids"]
    if ids != [15496, 995]:
        raise UserError(f"release tokenizer encodes 'Hello world' as {ids}, expected GPT-2's [15496, 995]")
    model = AutoModelForCausalLM.from_pretrained(str(release))
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    if logits.shape[-1] != VOCAB_SIZE or not torch.isfinite(logits).all():
        raise UserError(f"release model gives logits of shape {tuple(logits.shape)} / non-finite values")
    return count_parameters(model)


def card_context(args: BuildArgs, argv: list[str], run_dir: Path, config: dict, export_info: dict, weights_sha256: str,
                 results: dict | None, num_parameters: int, plots: list[str], fingerprint: str) -> dict:
    """Everything the template shows, derived from the run's files."""
    training_config = _read_json(run_dir / run_layout.TRAINING_CONFIG, "training config")
    run_info = _read_json(run_dir / run_layout.RUN_INFO, "run info")
    manifest = _read_json(run_dir / run_layout.DATA_MANIFEST, "data manifest")
    metrics = run_layout.read_metrics(run_dir)
    cost = F.CostInputs(args.gpu_hour_usd, args.gpu_watts, args.grid_kgco2_per_kwh)
    rows = F.eval_rows(results)
    commands = [
        ("Prepare the data", F.command_line(manifest.get("command"))),
        ("Train", F.command_line(run_info.get("command"))),
        ("Evaluate", F.command_line((results or {}).get("command"))),
        ("Build this release", F.command_line(["gpt2-owt", "card", *argv])),
    ]
    return {
        "model_name": args.model_name or args.repo_id.split("/")[-1],
        "repo_id": args.repo_id,
        "citation_key": args.repo_id.replace("/", "_").replace("-", "_"),
        "checkpoint_name": args.checkpoint,
        "checkpoint_step": export_info.get("step"),
        "checkpoint_tokens": export_info.get("tokens"),
        "weights_sha256": weights_sha256,
        "context_length": config.get("n_positions"),
        "arch_rows": F.architecture_rows(config, num_parameters),
        "hparam_rows": F.hyperparameter_rows(training_config),
        "segments": run_info.get("segments") or [],
        "dataset_id": F.hub_dataset_id(manifest),
        "dataset_revision": F.find_key(manifest.get("source", manifest), ("revision", "dataset_revision")),
        "params_label": F.params_label(num_parameters),
        "data_rows": F.flat_rows(manifest, skip=("files", "versions", "command", "sha256")),
        "tokenizer_fingerprint": fingerprint,
        "facts": F.compute_facts(run_info, training_config, config, metrics, cost),
        "hardware": run_info.get("hardware"),
        "plots": plots,
        "eval_rows": rows,
        "eval_settings": F.flat_rows((results or {}).get("settings") or {}),
        "eval_limit": ((results or {}).get("settings") or {}).get("limit"),
        "eval_notes": F.eval_notes(results),
        "versions": F.flat_rows(run_info.get("versions") or {}),
        "git_commit": run_info.get("git_commit"),
        "seed": training_config.get("seed"),
        **read_recipe(training_config, SEEDS_DEFAULTING_TO_SEED),  # init_seed, data_seed
        "data_manifest_sha256": run_info.get("data_manifest_sha256"),
        "commands": [(title, cmd) for title, cmd in commands if cmd],
        "checkpoints": intermediate_checkpoints(run_dir),
        **F.training_data_context(manifest, args.repo_id),  # trained_on, sample_run, trace_* (the trace section)
    }


def release_manifest(release: Path, args: BuildArgs, weights_sha256: str, export_info: dict) -> dict:
    files = sorted(p.relative_to(release).as_posix() for p in release.rglob("*")  # space/ files included
                   if p.is_file() and p.name != RELEASE_MANIFEST)
    return {
        "files": {name: {"bytes": (release / name).stat().st_size, "sha256": sha256_file(release / name)}
                  for name in tqdm(files, desc="hash release files", unit="file", leave=False)},
        "weights_sha256": weights_sha256,
        "checkpoint": args.checkpoint,
        "step": export_info.get("step"),
        "tokens": export_info.get("tokens"),
        "run_dir": str(Path(args.run_dir).resolve()),
    }


def outcome(tmp: Path, output: Path, overwrite: bool) -> str:
    """created / unchanged (the same files) / replaced; an existing different release needs --overwrite."""
    old = output / RELEASE_MANIFEST
    if not old.is_file():
        return "created"
    if read_json(old, "existing release manifest").get("files") == read_json(tmp / RELEASE_MANIFEST)["files"]:
        return "unchanged"
    if not overwrite:
        raise UserError(f"{output} already holds a different release (pass --overwrite to replace it)")
    return "replaced"


def build_release(args: BuildArgs, argv: list[str]) -> tuple[Path, str]:
    """Build, check and move the release into place; `argv` (this command's arguments) goes on the card."""
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run_dir not found: {run_dir}")
    for name, what in ((run_layout.TRAINING_CONFIG, "training config"), (run_layout.RUN_INFO, "run info"),
                       (run_layout.DATA_MANIFEST, "data manifest")):
        _read_json(run_dir / name, what)
    export = export_dir(run_dir, args.checkpoint)
    weights_sha256 = export_weights_sha256(export)
    export_info = run_layout.read_json(export / run_layout.EXPORT_INFO) if (export / run_layout.EXPORT_INFO).is_file() else {}
    results = load_eval_results(args.eval_results, weights_sha256)
    series_rows = load_eval_series(args.eval_series)
    fingerprint = check_tokenizer(_read_json(run_dir / run_layout.DATA_MANIFEST, "data manifest"), run_dir)
    space = space_files(args.repo_id, args.code_url, _read_json(run_dir / run_layout.RUN_INFO, "run info").get(
        "git_commit")) if args.with_space else None

    output = check_release_output(args)
    with atomic_output(output, folder=True) as tmp:  # full disk: one line naming the release, nothing left
        pairs = [(export / n, tmp / n) for n in MODEL_FILES + OPTIONAL_MODEL_FILES if (export / n).is_file()]
        pairs += [(TOKENIZER_DIR / n, tmp / n) for n in TOKENIZER_FILES]
        pairs += [(TOKENIZER_DIR / "LICENSE-NOTICE.md", tmp / TOKENIZER_NOTICE),
                  (DATA_NOTICE_SRC, tmp / DATA_NOTICE),
                  (run_dir / run_layout.TRAINING_CONFIG, tmp / TRAINING_CONFIG),
                  (run_dir / run_layout.DATA_MANIFEST, tmp / DATA_MANIFEST)]
        if args.eval_results:
            pairs.append((Path(args.eval_results), tmp / EVAL_RESULTS))
        copy_files(pairs)
        if sha256_file(tmp / run_layout.WEIGHTS) != weights_sha256:
            raise UserError(f"copy of {export}/{run_layout.WEIGHTS} does not match its hash (disk error?)")
        num_parameters = check_loads(tmp)
        plots = write_plots(run_layout.read_metrics(run_dir), tmp)
        if space is not None:
            write_space(tmp / SPACE_FOLDER, space)
        config = run_layout.read_json(tmp / "config.json")
        context = card_context(args, argv, run_dir, config, export_info, weights_sha256, results, num_parameters,
                               plots, fingerprint)
        context["eval_series"] = series_context(series_rows, tmp)
        card_mod.render(context).save(tmp / README)
        card_mod.validate_offline(tmp / README, context["eval_rows"], context["dataset_id"])
        manifest = release_manifest(tmp, args, weights_sha256, export_info)
        (tmp / RELEASE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        result = outcome(tmp, output, args.overwrite)
    return output, result


def check_release_output(args: BuildArgs) -> Path:
    """Before building: --output_dir is apart from every input, writable, and (if it exists) a release this command
    made, so --overwrite can never delete a run or a user's files."""
    inputs = {"run_dir": args.run_dir, "eval results file": args.eval_results, "eval series file": args.eval_series}
    return guard_output(args.output_dir, "--output_dir", folder=True, inputs=inputs, made_by="model_card.build",
                        ours=RELEASE_MANIFEST)


def parse_args(argv=None) -> BuildArgs:
    return parse(BuildArgs, argv, "card")


@cli_main
def main(argv=None) -> None:
    """Console entry point: returns None, so `gpt2-owt-build-card` exits 0 on success."""
    run(argv)


def run(argv=None) -> Path:
    """Build the release and print where it is; returns its path."""
    argv = command_argv(argv)
    args = parse_args(argv)
    output, outcome = build_release(args, argv)
    print(f"release {outcome}: {output}")
    print(f"card validation on the Hub: {card_mod.validate_online(output / README)}")
    if not args.eval_results:
        print("warning: no --eval_results given: the card has no evaluation and upload.py will refuse this release",
              file=sys.stderr)
    print(f"built at {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    return output


if __name__ == "__main__":
    main()
