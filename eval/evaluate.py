"""Evaluate a causal LM (a `from_pretrained` folder or a Hub id) and write results.json.

    gpt2-owt eval --model runs/r1/hf/final --output results.json
    gpt2-owt eval --model runs/r1/hf/step2000 --tasks wikitext,lambada_openai --batch_size 16
    gpt2-owt eval --model openai-community/gpt2 --revision main --device cuda --tasks lambada_openai
    gpt2-owt eval --model DIR --tasks owt_val --data_dir data/owt
    gpt2-owt eval --checkpoints runs/r1/hf --output_dir evals/r1 --data_dir data/owt   (a series)
    gpt2-owt eval --repo_id user/gpt2-owt --revisions all --output_dir evals/hub       (Hub step{N} branches)

Tasks (eval/tasks.py): `wikitext` and `lambada_openai` exactly as lm-evaluation-harness 0.4.x computes them,
`wikitext_sliding` as the transformers perplexity guide, `owt_val` on a prepared data_dir's val.bin. Default: the
first three, plus owt_val when --data_dir is given. Data comes from copies shipped in eval/data/ (offline) unless
--data_source hub. The command also prints the numbers next to published GPT-2 references (eval/references.py),
and writes them into results.json, where the model card reads them.

results.json (read by model_card/build.py):
    {"model": {"name_or_path", "revision", "weights_sha256", "num_parameters", "commit_sha"},
     "settings": {"max_length", "batch_size", "dtype", "fused_gelu", "device", "data_source", "limit"},
     "versions": {package: version}, "created_at": iso8601, "command": [argv...], "arguments": {EvalArgs fields},
     "tasks": {task: {"metrics": {name: float}, "counts": {...}, "settings": {...}, "data": {"source", "sha256"},
                      "notes": [...], "references": {metric: [{"value", "source"}]}, "elapsed_seconds": float}}}
Only the tasks that were run are present; metric names per task are in eval/tasks.py.
A series (--checkpoints / --repo_id) writes one such file per checkpoint plus series.json and series.png into
--output_dir (eval/series.py).
"""

import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from gpt2_owt.core.args import command_argv, parse
from gpt2_owt.core.errors import cli_main, first_line, UserError
from gpt2_owt.core.folder_lock import LOCK_FILE, FolderLock
from gpt2_owt.core.hub import hub_errors
from gpt2_owt.core.interrupts import set_interrupt_note
from gpt2_owt.core.output_paths import check_output_file, guard_output
from gpt2_owt.core.readers import read_json
from gpt2_owt.core.records import package_versions, sha256_file, write_json_atomic
from gpt2_owt.modeling.model_folder import SUPPORTED_MODEL_TYPE, check_model_folder, check_tokenizer_folder

from . import series
from .data import SOURCES
from .references import task_references
from .tasks import TASKS, TaskSetup, TokenCache

DTYPES = ("float32", "bfloat16")  # torch dtype names
DEFAULT_TASKS = "wikitext,lambada_openai,wikitext_sliding"
DEFAULT_STRIDE = 512
VERSIONED = ("torch", "transformers", "tokenizers", "datasets", "evaluate", "numpy", "huggingface_hub", "gpt2-owt")

@dataclass
class EvalArgs:
    model: str | None = field(default=None, metadata={
        "help": "a from_pretrained folder (release, run_dir/hf/stepN) or a Hub model id"})
    output: str = field(default="results.json", metadata={"help": "where to write results.json"})
    checkpoints: str | None = field(default=None, metadata={
        "help": "series: a run's hf/ folder; evaluates every stepN and final into --output_dir"})
    repo_id: str | None = field(default=None, metadata={
        "help": "series: a Hub model repo whose step{N} branches (and main) are evaluated into --output_dir"})
    revisions: str = field(default="all", metadata={
        "help": "with --repo_id: all (every step{N} branch + main) or a comma-separated list, e.g. step1000,main"})
    output_dir: str | None = field(default=None, metadata={
        "help": "series output: OUT/<checkpoint>/results.json, OUT/series.json, OUT/series.png"})
    tasks: str = field(default=DEFAULT_TASKS, metadata={
        "help": f"comma-separated, from {', '.join(TASKS)} (default: {DEFAULT_TASKS}, + owt_val with --data_dir)"})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)"})
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer folder/id (default: the model's)"})
    batch_size: int = field(default=8, metadata={"help": "windows/examples per forward pass"})
    device: str | None = field(default=None, metadata={"help": "cpu or cuda (default: cuda if available)"})
    dtype: str = field(default="float32", metadata={"help": f"model weights dtype: {', '.join(DTYPES)}"})
    fused_gelu: bool = field(default=True, metadata={
        "help": "run gelu_new as the one-kernel tanh GELU (same function, about 17 percent faster on CPU, numbers move by "
                "~1e-8 relative); false = the model's own module, the harness's exact computation"})
    max_length: int | None = field(default=None, metadata={
        "help": "window length L (default: the model's n_positions, 1024 for GPT-2)"})
    stride: int | None = field(default=None, metadata={
        "help": "wikitext_sliding stride (default 512, or max_length if smaller; max_length = no overlap)"})
    data_dir: str | None = field(default=None, metadata={"help": "prepared data_dir whose val.bin owt_val reads"})
    data_source: str = field(default="shipped", metadata={"help": "shipped (offline copies) or hub"})
    limit: int | None = field(default=None, metadata={
        "help": "quick checks (numbers not comparable): score at most N windows of --max_length tokens per task: "
                "the first N LAMBADA examples, the first N windows of wikitext_sliding and owt_val, the first "
                "WikiText documents whose windows fit in N (whole documents, at least one)", "ge": 0})


def parse_tasks(args: EvalArgs) -> list[str]:
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.data_dir and args.tasks == DEFAULT_TASKS:
        tasks.append("owt_val")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise UserError(f"unknown task(s) {unknown or args.tasks!r}; choose from {', '.join(TASKS)}")
    if "owt_val" in tasks and not args.data_dir:
        raise UserError("task owt_val needs --data_dir (a folder made by `gpt2-owt prepare`)")
    return list(dict.fromkeys(tasks))


def check_args(args: EvalArgs) -> None:
    sources = [flag for flag, value in (("--model", args.model), ("--checkpoints", args.checkpoints),
                                        ("--repo_id", args.repo_id)) if value]
    if len(sources) != 1:
        raise UserError(f"give exactly one of --model, --checkpoints, --repo_id (got {', '.join(sources) or 'none'})")
    if (args.checkpoints or args.repo_id) and not args.output_dir:
        raise UserError(f"{sources[0]} evaluates a series: pass --output_dir for its results")
    if args.dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got {args.dtype!r}")
    if args.data_source not in SOURCES:
        raise UserError(f"--data_source must be one of {', '.join(SOURCES)}, got {args.data_source!r}")
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.device not in (None, "cpu", "cuda") and not str(args.device).startswith("cuda:"):
        raise UserError(f"--device must be cpu or cuda, got {args.device!r}")
    if str(args.device).startswith("cuda"):
        import torch  # only for a CUDA device to check: the other checks answer without it

        if not torch.cuda.is_available():
            raise UserError("--device cuda asked for, but torch sees no CUDA device")
    check_output(Path(args.output))


def check_output(path: Path) -> None:
    """Before any work: --output is a writable file location, and an existing file there is an earlier results.json
    (never some other file of the user's)."""
    check_output_file(path, "--output")
    if path.is_file():
        try:
            previous = read_json(path, "existing --output")
        except UserError:
            previous = {}
        if not {"model", "tasks"} <= set(previous):
            raise UserError(f"--output {path} exists and is not a results.json written by eval.evaluate; "
                            "refusing to replace it (choose another --output)")


def _is_local(name: str) -> bool:
    return Path(name).exists() or name.startswith(("/", "./", "../", "~")) or name.count("/") > 1


def load_model(args: EvalArgs, device: str):
    """The causal LM in eval mode on `device` (UserError for a missing folder or an unreachable Hub id)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from gpt2_owt.modeling.model import fuse_gelu

    if _is_local(args.model):
        check_model_folder(Path(args.model).expanduser(), tokenizer=args.tokenizer is None)
    if args.tokenizer and _is_local(args.tokenizer):
        check_tokenizer_folder(Path(args.tokenizer).expanduser())
    try:
        with hub_errors(args.model, args.revision):
            config = AutoConfig.from_pretrained(args.model, revision=args.revision)
        if config.model_type != SUPPORTED_MODEL_TYPE:  # before building: a llama config would build a 7B model
            raise UserError(f"model {args.model!r} has model_type {config.model_type!r}; "
                            f"only {SUPPORTED_MODEL_TYPE!r} is supported")
        with hub_errors(args.model, args.revision):
            model = AutoModelForCausalLM.from_pretrained(args.model, revision=args.revision, config=config,
                                                         dtype=getattr(torch, args.dtype))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load model {args.model!r}: {first_line(e)}") from None
    if args.fused_gelu:
        fuse_gelu(model)
    return model.to(device).eval()


def load_tokenizer_for(args: EvalArgs, model):
    from transformers import AutoTokenizer

    source = args.tokenizer or args.model
    revision = None if args.tokenizer else args.revision
    try:
        with hub_errors(source, revision):
            tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load a tokenizer from {source!r} (pass --tokenizer): {first_line(e)}") from None
    tokenizer.model_max_length = sys.maxsize  # we cut windows ourselves; silences the "sequence too long" warning
    if len(tokenizer) > model.config.vocab_size:
        raise UserError(f"tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                        f"{model.config.vocab_size}: tokenizer and model do not match")
    return tokenizer


def resolve_max_length(args: EvalArgs, model) -> int:
    n_positions = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings")
    max_length = args.max_length or n_positions
    if not 2 <= max_length <= n_positions:
        raise UserError(f"--max_length must be in [2, {n_positions}] (the model's n_positions), got {max_length}")
    return max_length


def weights_sha256(args: EvalArgs) -> str | None:
    """sha256 of model.safetensors: the local file, or the Hub file from the download cache."""
    if _is_local(args.model):
        path = Path(args.model).expanduser() / "model.safetensors"
        return sha256_file(path) if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(args.model, "model.safetensors", revision=args.revision)
    return sha256_file(cached) if isinstance(cached, str) else None


def reference_table(results: dict) -> str:
    """Our numbers next to the published references, each labelled with its source."""
    lines = [f"{'task':<17} {'metric':<16} {'this model':>12}   reference (source)"]
    for task, block in results["tasks"].items():
        for metric, value in block["metrics"].items():
            refs = [f"{r['value']:g}  ({r['source']})" for r in block.get("references", {}).get(metric, [])]
            lines.append(f"{task:<17} {metric:<16} {value:>12.4f}   {refs[0] if refs else ''}")
            lines += [f"{'':<17} {'':<16} {'':>12}   {ref}" for ref in refs[1:]]
    lines.append("Paper numbers use the GPT-2 paper's own protocols (detokenizers, tokenised WikiText); compare "
                 "this model with the harness rows. WikiText-103's test text is WikiText-2's: one wikitext number.")
    return "\n".join(lines)


def evaluate_model(args: EvalArgs, token_cache: TokenCache | None = None) -> dict:
    """Run the asked tasks and return the results.json content (token_cache: shared by a series)."""
    check_args(args)
    tasks = parse_tasks(args)
    if "owt_val" in tasks:  # a damaged data_dir fails now, not after the other tasks ran
        from gpt2_owt.training.data_dir import open_split

        open_split(args.data_dir, "val")
    import torch

    from gpt2_owt.modeling.model import count_parameters

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(args, device)
    tokenizer = load_tokenizer_for(args, model)
    max_length = resolve_max_length(args, model)
    if args.stride is not None and not 1 <= args.stride <= max_length:
        raise UserError(f"--stride must be in [1, max_length={max_length}], got {args.stride}")
    setup = TaskSetup(model=model, tokenizer=tokenizer, max_length=max_length, batch_size=args.batch_size,
                      stride=args.stride or min(DEFAULT_STRIDE, max_length), data_source=args.data_source,
                      data_dir=args.data_dir, limit=args.limit, token_cache=token_cache or TokenCache())
    results = {
        "model": {"name_or_path": args.model, "revision": args.revision, "weights_sha256": weights_sha256(args),
                  "num_parameters": count_parameters(model),
                  "commit_sha": getattr(model.config, "_commit_hash", None) if not _is_local(args.model) else None},
        "settings": {"max_length": setup.max_length, "batch_size": args.batch_size, "dtype": args.dtype,
                     "fused_gelu": args.fused_gelu, "device": device, "data_source": args.data_source, "limit": args.limit},
        "versions": package_versions(VERSIONED),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tasks": {},
    }
    for task in tasks:
        started = time.perf_counter()
        results["tasks"][task] = TASKS[task](setup)
        results["tasks"][task]["references"] = task_references(task, results["tasks"][task]["metrics"])
        results["tasks"][task]["elapsed_seconds"] = round(time.perf_counter() - started, 3)
    return results


def run(argv: list[str] | None = None) -> dict | list[dict]:
    """The command: results.json content (--model) or the series rows (--checkpoints / --repo_id)."""
    argv = command_argv(argv)
    args = parse(EvalArgs, argv, "eval")
    command = ["gpt2-owt", "eval", *argv]
    check_args(args)
    parse_tasks(args)  # bad task names fail before any checkpoint is resolved
    if args.model:
        results = evaluate_model(args)
        results["command"] = command
        results["arguments"] = asdict(args)
        write_json_atomic(Path(args.output), results)
        print(reference_table(results))
        print(f"wrote {args.output}")
        return results
    output_dir = guard_series_output(args)
    with FolderLock(output_dir, "eval"):  # one series writes there at a time (two would race on results.json)
        checkpoints = (series.local_checkpoints(args.checkpoints) if args.checkpoints
                       else series.hub_checkpoints(args.repo_id, args.revisions))
        for checkpoint in tqdm(checkpoints if args.checkpoints else [], desc="check checkpoints", leave=False):
            check_model_folder(checkpoint.model)  # a damaged export fails now, before the first result is written
        set_interrupt_note(f"the checkpoints evaluated so far are kept in {output_dir}: rerun the same command to "
                           "continue")

        def evaluate_one(one: EvalArgs, token_cache: TokenCache) -> dict:
            return dict(evaluate_model(one, token_cache), command=command)

        rows = series.evaluate_series(args, checkpoints, output_dir, evaluate_one)
    print(series.series_table(rows))
    return rows


def is_series_folder(folder: Path) -> bool:
    """What an eval series writes: series.json, series.png and one folder per checkpoint holding its results.json."""
    return all(p.name in (series.SERIES_JSON, series.SERIES_PNG, LOCK_FILE) or p.name.startswith(".") or
               (p.is_dir() and {c.name for c in p.iterdir() if not c.name.startswith(".")} <= {series.RESULTS_JSON})
               for p in folder.iterdir())


def guard_series_output(args: EvalArgs) -> Path:
    """--output_dir of a series: apart from the checkpoints it reads (never inside an export, which would then be
    uploaded with results.json in it) and from the data_dir, and either new or a folder an eval series made."""
    inputs = {"checkpoints folder": args.checkpoints, "data_dir": args.data_dir,
              "tokenizer folder": args.tokenizer if args.tokenizer and _is_local(args.tokenizer) else None}
    return guard_output(args.output_dir, "--output_dir", folder=True, inputs=inputs, made_by="an eval series",
                        ours=is_series_folder)


@cli_main
def main(argv: list[str] | None = None) -> None:
    """Console entry point: returns None, so the `gpt2-owt-eval` script exits 0 on success."""
    run(argv)


if __name__ == "__main__":
    main()
