"""A text's learning curve: its loss at every exported checkpoint of a run (or Hub branch), next to its exposures.

    gpt2-owt trace curve (--run_dir R | --repo_id ID) --text "..." [--prefix "..."] [--output curve.png] [--json]

The text's mean next-token loss (with --prefix: of the text after the prefix, plus the summed log-prob) at
every exported step (run_dir/hf/stepN and hf/final, or the Hub branches stepN and main of --repo_id: one row per
step, modeling/checkpoint_series.py), scored by the evaluation's scorer (eval/scoring.py), next to the exposures
of the scored ids (prefix + text) before that step when the data_dir's index exists. Without --prefix the text
is scored after an EOT (GPT-2's document start), so every token of the text is predicted.
`--json` schema: {"text", "prefix", "token_ids", "rows": [{"step", "checkpoint", "loss", "logprob",
"exposures"|null}]}
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from gpt2_owt.core.args import parse
from gpt2_owt.core.errors import UserError, cli_main
from gpt2_owt.core.output_paths import atomic_output, guard_output
from gpt2_owt.modeling.checkpoint_series import (Checkpoint, distinct_steps, hub_checkpoints, load_checkpoint,
                                                 run_checkpoints)
from gpt2_owt.modeling.tokenizer import EOT_TOKEN_ID, encode
from gpt2_owt.training.data_dir import WindowSampler
from gpt2_owt.training.run_dir import TRAINING_CONFIG, not_a_run_folder
from gpt2_owt.training.runs import release_config, resolve_config

from .exposures import exposures_of
from .index import INDEX_DIR, INDEX_INFO, TraceIndex



PLOT_SOFTWARE = "gpt2-owt trace curve"


@dataclass
class CurveArgs:
    text: str = field(metadata={"help": "text whose loss to follow over the checkpoints"})
    run_dir: str | None = field(default=None, metadata={"help": "run folder: its hf/stepN exports"})
    repo_id: str | None = field(default=None, metadata={"help": "Hub repo: its step{N} branches"})
    prefix: str | None = field(default=None, metadata={"help": "score the text as a continuation of this prefix"})
    data_dir: str | None = field(default=None, metadata={"help": "data folder for exposures (default: the run's)"})
    config: str | None = field(default=None, metadata={"help": "training YAML for exposures (default: the run's, or "
                                                                "the release's training_config.json with --data_dir)"})
    output: str | None = field(default=None, metadata={"help": "write the plot here (PNG)"})
    json: bool = field(default=False, metadata={"help": "print JSON (schema in the module docstring)"})


def checkpoints_of(run_dir: str | None, repo_id: str | None) -> list[Checkpoint]:
    """Every exported checkpoint, one per step, by step: a run's hf/stepN and hf/final, or a repo's stepN branches
    and main (modeling/checkpoint_series.py)."""
    if (run_dir is None) == (repo_id is None):
        raise UserError("give exactly one of --run_dir and --repo_id")
    if run_dir is not None and not (Path(run_dir) / TRAINING_CONFIG).is_file():
        raise not_a_run_folder(run_dir, TRAINING_CONFIG)
    return distinct_steps(run_checkpoints(run_dir) if run_dir is not None else hub_checkpoints(repo_id))


def text_scores(model, context_ids: list[int], ids: list[int]) -> tuple[float, float]:
    """(mean next-token loss, summed log-prob) of `ids` after `context_ids` (at least one token), by the eval
    scorer (eval/scoring.py)."""
    from gpt2_owt.eval.scoring import score_windows
    from gpt2_owt.eval.windows import Window

    whole = context_ids + ids
    (score,) = score_windows(model, [Window(whole[:-1], whole[1:], len(ids))], 1, greedy=False, progress=False)
    return -score.logprob / len(ids), score.logprob


def curve(checkpoints: list[Checkpoint], text: str, prefix: str | None, exposures_before=None,
          load=load_checkpoint) -> dict:
    """The text's loss and log-prob at each checkpoint (loaded one at a time by `load`: the explorer passes its cache
    of loaded checkpoints), next to `exposures_before(step)`."""
    from tqdm.auto import tqdm

    ids = encode(text)
    if not ids:
        raise UserError("the text is empty: nothing to score")
    context = encode(prefix) if prefix else [EOT_TOKEN_ID]
    rows = []
    for checkpoint in tqdm(checkpoints, desc="score checkpoints", unit="checkpoint"):
        model = load(checkpoint)
        if len(context) + len(ids) - 1 > model.config.n_positions:
            raise UserError(f"prefix + text is {len(context) + len(ids)} tokens, more than the model's context "
                            f"{model.config.n_positions}")
        loss, logprob = text_scores(model, context, ids)
        step = checkpoint.step
        rows.append({"step": step, "checkpoint": checkpoint.label, "loss": loss, "logprob": logprob,
                     "exposures": None if exposures_before is None else exposures_before(step)})
    return {"text": text, "prefix": prefix, "token_ids": ids, "rows": rows}


def plot_curve(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in result["rows"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [r["loss"] for r in result["rows"]], "o-", label="loss of the text")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("step (checkpoint hf/stepN)")
    ax.set_ylabel("mean next-token loss (nats)")
    if all(r["exposures"] is not None for r in result["rows"]):
        twin = ax.twinx()
        twin.step(steps, [r["exposures"] for r in result["rows"]], where="post", color="tab:red", alpha=0.6,
                  label="cumulative exposures")
        twin.set_ylabel("exposures seen (updates < step)", color="tab:red")
    title = result["text"] if len(result["text"]) < 60 else result["text"][:57] + "..."
    ax.set_title(f"learning curve of {title!r}")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png", metadata={"Software": PLOT_SOFTWARE})  # how a rerun knows its plot
    plt.close(fig)


def is_curve_plot(path: Path) -> bool:
    """A PNG this command wrote (its Software text chunk), the only file --output may replace."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    return head.startswith(b"\x89PNG\r\n\x1a\n") and PLOT_SOFTWARE.encode() in head


def guard_curve_output(args: "CurveArgs") -> Path:
    """--output, checked before any checkpoint is scored: a .png apart from the run and data folders, not a user's
    file, a folder or a link, in a writable location."""
    inputs = {"run_dir": args.run_dir, "data_dir": args.data_dir, "config": args.config}
    output = guard_output(args.output, "--output", folder=False, inputs=inputs, made_by="trace curve",
                          ours=is_curve_plot)
    if output.suffix.lower() != ".png":
        raise UserError(f"--output {args.output}: the plot is a PNG, give a path ending in .png")
    return output


def curve_exposure_counter(args: CurveArgs, ids: list[int]):
    """step -> exposures of `ids` at updates < step, or None when no index of the run's data is available."""
    if args.repo_id and args.data_dir and not args.config:  # a release: its own recipe, if data_dir is its data
        cfg = release_config(args.repo_id, args.data_dir)
    elif not args.config and not args.run_dir:
        return None
    else:
        cfg = resolve_config(args.config, args.run_dir, [])
    data_dir = args.data_dir or cfg.data_dir
    if not data_dir or not (Path(data_dir) / INDEX_DIR / INDEX_INFO).is_file():
        print(f"note: no trace index for data_dir {data_dir}: exposures left empty", file=sys.stderr)
        return None
    if len(ids) > cfg.seq_len + 1:
        raise UserError(f"the scored ids are {len(ids)} tokens, longer than a training window ({cfg.seq_len + 1})")
    index = TraceIndex(data_dir)
    sampler = WindowSampler.for_run(cfg, index.split)
    exposures = exposures_of(index.positions(ids), len(ids), sampler, cfg.total_steps())
    return lambda step: int(exposures.before([step])[0])


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = parse(CurveArgs, argv, "trace curve")
    if not args.text:
        raise UserError("the text is empty: nothing to score")
    if args.run_dir and not Path(args.run_dir).is_dir():
        raise UserError(f"run_dir {args.run_dir} does not exist")
    output = guard_curve_output(args) if args.output else None
    checkpoints = checkpoints_of(args.run_dir, args.repo_id)
    scored = (encode(args.prefix) if args.prefix else []) + encode(args.text)
    result = curve(checkpoints, args.text, args.prefix, curve_exposure_counter(args, scored))
    if output:
        with atomic_output(output) as tmp:
            plot_curve(result, tmp)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{'step':>8} {'loss':>9} {'logprob':>10} {'exposures':>10}  checkpoint")
        for r in result["rows"]:
            exposures = "-" if r["exposures"] is None else r["exposures"]
            print(f"{r['step']:>8} {r['loss']:>9.4f} {r['logprob']:>10.3f} {exposures:>10}  {r['checkpoint']}")


if __name__ == "__main__":
    main()
