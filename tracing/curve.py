"""A text's learning curve: its loss at every exported checkpoint of a run (or Hub branch), next to its exposures.

    gpt2-owt trace curve (--run_dir R | --repo_id ID) --text "..." [--prefix "..."] [--output curve.png] [--json]

The text's mean next-token loss (with --prefix: of the text after the prefix, plus the summed log-prob) at
every exported checkpoint (run_dir/hf/stepN, or the Hub branches step{N} of --repo_id), next to the exposures
of the scored ids (prefix + text) before that step when the data_dir's index exists. Without --prefix the text
is scored after an EOT (GPT-2's document start), so every token of the text is predicted.
`--json` schema: {"text", "prefix", "token_ids", "rows": [{"step", "checkpoint", "loss", "logprob",
"exposures"|null}]}
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from gpt2_owt.modeling import EOT_TOKEN_ID, UserError, cli_main
from gpt2_owt.modeling.hf_argparser import HfArgumentParser
from gpt2_owt.modeling.records import read_json
from gpt2_owt.training.run_dir import FINAL, HF_EXPORTS, TRAINING_CONFIG, list_step_dirs
from gpt2_owt.training.data_dir import WindowSampler

from .exposures import exposures_of
from .index import INDEX_DIR, INDEX_INFO, TraceIndex
from .runs import resolve_config
from .text import encode



@dataclass
class CurveArgs:
    text: str = field(metadata={"help": "text whose loss to follow over the checkpoints"})
    run_dir: str | None = field(default=None, metadata={"help": "run folder: its hf/stepN exports"})
    repo_id: str | None = field(default=None, metadata={"help": "Hub repo: its step{N} branches"})
    prefix: str | None = field(default=None, metadata={"help": "score the text as a continuation of this prefix"})
    data_dir: str | None = field(default=None, metadata={"help": "data folder for exposures (default: the run's)"})
    config: str | None = field(default=None, metadata={"help": "training YAML for exposures (with --repo_id)"})
    output: str | None = field(default=None, metadata={"help": "write the plot here (PNG)"})
    json: bool = field(default=False, metadata={"help": "print JSON (schema in the module docstring)"})


def checkpoints_of(run_dir: str | None, repo_id: str | None) -> list[tuple[int, str, dict]]:
    """(step, label, from_pretrained kwargs) of every exported checkpoint, sorted by step."""
    if (run_dir is None) == (repo_id is None):
        raise UserError("give exactly one of --run_dir and --repo_id")
    if run_dir is not None:
        if not (Path(run_dir) / TRAINING_CONFIG).is_file():
            raise UserError(f"{run_dir} is not a run folder (no {TRAINING_CONFIG})")
        found = [(s, f"hf/{p.name}", {"pretrained_model_name_or_path": str(p)})
                 for s, p in list_step_dirs(Path(run_dir) / HF_EXPORTS)]
        final = Path(run_dir) / HF_EXPORTS / FINAL
        if (final / "export_info.json").is_file():  # the last step, when it is not also an hf/stepN export
            step = read_json(final / "export_info.json")["step"]
            if step not in {s for s, _, _ in found}:
                found.append((step, f"hf/{FINAL}", {"pretrained_model_name_or_path": str(final)}))
    else:
        from gpt2_owt.modeling.hub_branches import step_branches

        found = [(s, name, {"pretrained_model_name_or_path": repo_id, "revision": name})
                 for s, name in step_branches(repo_id)]
    if not found:
        raise UserError(f"no exported checkpoints (hf/stepN or step{{N}} branches) in {run_dir or repo_id}")
    return found


def continuation_scores(model, context_ids: list[int], ids: list[int]) -> tuple[float, float]:
    """(mean next-token loss, summed log-prob) of `ids` after `context_ids` (at least one token)."""
    import torch

    tokens = torch.tensor([context_ids + ids])
    with torch.no_grad():
        logits = model(input_ids=tokens[:, :-1], use_cache=False).logits.float()
    logprobs = torch.log_softmax(logits[0, len(context_ids) - 1 :], dim=-1)
    picked = logprobs.gather(1, tokens[0, len(context_ids) :, None]).squeeze(1)
    return float(-picked.mean()), float(picked.sum())


def curve(checkpoints, text: str, prefix: str | None, exposures_before=None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    ids = encode(text)
    if not ids:
        raise UserError("the text is empty: nothing to score")
    context = encode(prefix) if prefix else [EOT_TOKEN_ID]
    rows = []
    for step, label, kwargs in checkpoints:
        model = AutoModelForCausalLM.from_pretrained(**kwargs, dtype=torch.float32).eval()
        if len(context) + len(ids) - 1 > model.config.n_positions:
            raise UserError(f"prefix + text is {len(context) + len(ids)} tokens, more than the model's context "
                            f"{model.config.n_positions}")
        loss, logprob = continuation_scores(model, context, ids)
        rows.append({"step": step, "checkpoint": label, "loss": loss, "logprob": logprob,
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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curve_exposure_counter(args: CurveArgs, ids: list[int]):
    """step -> exposures of `ids` at updates < step, or None when no index of the run's data is available."""
    if not args.config and not args.run_dir:
        return None
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
    argv = list(sys.argv[1:] if argv is None else argv)
    args = HfArgumentParser(CurveArgs, allow_abbrev=False).parse_args_into_dataclasses(args=argv)[0]
    if not args.text:
        raise UserError("the text is empty: nothing to score")
    if args.run_dir and not Path(args.run_dir).is_dir():
        raise UserError(f"run_dir {args.run_dir} does not exist")
    checkpoints = checkpoints_of(args.run_dir, args.repo_id)
    scored = (encode(args.prefix) if args.prefix else []) + encode(args.text)
    result = curve(checkpoints, args.text, args.prefix, curve_exposure_counter(args, scored))
    if args.output:
        plot_curve(result, Path(args.output))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{'step':>8} {'loss':>9} {'logprob':>10} {'exposures':>10}  checkpoint")
        for r in result["rows"]:
            exposures = "-" if r["exposures"] is None else r["exposures"]
            print(f"{r['step']:>8} {r['loss']:>9.4f} {r['logprob']:>10.3f} {exposures:>10}  {r['checkpoint']}")


if __name__ == "__main__":
    main()
