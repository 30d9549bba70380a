"""Where and when the trainer saw a text: its occurrences in train.bin and every exposure of each.

    gpt2-owt trace find --data_dir D --config RECIPE.yaml (--text "..." | --token_ids 1 2 3)
                        [--run_dir R] [--until_step N] [--limit K] [--context 20] [--json] [--field value]
    gpt2-owt trace find --run_dir R --text "..."                      (the run's own recipe and data_dir)
    gpt2-owt trace find --repo_id ID --data_dir D --text "..."        (a published release's recipe)

The text is encoded as the data pipeline encodes documents (tiktoken GPT-2 `encode_ordinary`, no EOT added),
so "Barack Obama" and " Barack Obama" (a leading space, as mid-sentence) are different token sequences: the
report gives the count of the leading-space variant too. An occurrence [p, p+n) is exposed in window w (tokens
[w*seq_len, w*seq_len+seq_len+1)) when w*seq_len <= p and p+n <= w*seq_len+seq_len+1; every global sequence g
that read w (the trainer's own sampler, inverted: training/data_dir.py) is one exposure at update
u = g // global_batch_size (0-based: it trained the weights of step u into those of step u + 1), row
g % global_batch_size of its global batch. `--until_step N` counts updates < N (default: every update the run
did: an interrupted run's `steps_done`, run_info.json). `--config` next to `--run_dir` must give the run's data
order (seq_len, global_batch_size, data_seed, steps): any difference is one error (training/runs.py).
`--json` schema:
    {"token_ids": [int], "text": str|null, "count": int,                # occurrences in train.bin
     "leading_space_variant": {"text", "token_ids", "count"}|null,
     "until_step": int,                                                 # exposures counted in updates < N
     "total_steps": int, "steps_done": int,                             # the recipe's; the run's (< total:
                                                                        # interrupted, exposures stop there)
     "first_update": int|null,                                          # first exposure of any occurrence
     "num_exposures": int,
     "occurrences": [{"token_position": int, "document": int, "source_row": int, "context": str,
                      "split": bool,                                    # no window holds it whole
                      "exposures": [{"epoch": int, "update": int, "row": int,
                                     "loss": float|null}]}],            # "loss" only with --run_dir
                                                                        # (first --limit occurrences)
     "exposures_by_step": [{"step": int, "exposures": int}]}            # cumulative exposures before each
                                                                        # export step hf/stepN (updates < N)
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpt2_owt.core.args import parse
from gpt2_owt.core.errors import UserError, cli_main
from gpt2_owt.modeling.tokenizer import EOT_TOKEN_ID, decode, encode
from gpt2_owt.training.config import FIELD_NAMES, TrainConfig
from gpt2_owt.training.data_dir import WindowSampler
from gpt2_owt.training.runs import check_run_matches, release_config, resolve_config, steps_done

from .exposures import cumulative_exposures, export_schedule, exposures_of
from .index import INDEX_DIR, TraceIndex


@dataclass
class FindArgs:
    data_dir: str | None = field(default=None, metadata={"help": "prepared data folder (default: the config's)"})
    config: str | None = field(default=None, metadata={"help": "training YAML (default: RUN_DIR/training_config.json)"})
    run_dir: str | None = field(default=None, metadata={"help": "a run folder: adds each exposure's training loss"})
    repo_id: str | None = field(default=None, metadata={"help": "a published release: its training_config.json "
                                                                "(instead of --config / --run_dir)"})
    index_dir: str | None = field(default=None, metadata={"help": f"index folder (default: DATA_DIR/{INDEX_DIR})"})
    text: str | None = field(default=None, metadata={"help": "text to find (encoded like the training documents)"})
    token_ids: list[int] | None = field(default=None, metadata={"help": "token ids to find (instead of --text)"})
    until_step: int | None = field(default=None, metadata={"help": "count exposures at updates < N (default: all)"})
    limit: int = field(default=10, metadata={"help": "occurrences listed with their exposures"})
    context: int = field(default=20, metadata={"help": "tokens of context decoded on each side"})
    json: bool = field(default=False, metadata={"help": "print JSON (schema in the module docstring)"})



def query_ids(text: str | None, token_ids: list[int] | None, max_len: int) -> list[int]:
    if (text is None) == (token_ids is None):
        raise UserError("give exactly one of --text and --token_ids")
    ids = encode(text) if text is not None else list(token_ids)
    if not ids:
        raise UserError("the text is empty: nothing to find")
    if any(not 0 <= i <= EOT_TOKEN_ID for i in ids):
        raise UserError(f"token ids must be in [0, {EOT_TOKEN_ID}]")
    if len(ids) > max_len:
        raise UserError(f"the text is {len(ids)} tokens, longer than a training window ({max_len} = seq_len + 1): "
                        "no sequence could hold it whole")
    return ids


def trained_steps(cfg: TrainConfig, steps_done: int | None, until_step: int | None) -> int:
    """The N of "updates < N" a report counts: --until_step, else every update the run did (its steps_done when it
    was interrupted, else the recipe's steps)."""
    total = cfg.total_steps()
    done = total if steps_done is None else steps_done
    until = done if until_step is None else until_step
    if not 0 <= until <= done:
        stopped = f" (interrupted: {done} of {total} steps done)" if done < total else ""
        raise UserError(f"--until_step {until} is beyond the run's {done} steps{stopped}")
    return until


def find(index: TraceIndex, cfg: TrainConfig, ids: list[int], until_step: int | None = None, limit: int = 10,
         context: int = 20, losses: np.ndarray | None = None, steps_done: int | None = None) -> dict:
    """The report of `find` (see the module docstring for its keys). `steps_done`: the updates a run folder trained
    (runs.steps_done), when it stopped before the recipe's steps."""
    split = index.split
    sampler = WindowSampler.for_run(cfg, split)
    total = cfg.total_steps()
    until = trained_steps(cfg, steps_done, until_step)
    positions = index.positions(ids)
    exp = exposures_of(positions, len(ids), sampler, until, listed=limit)
    epochs, updates, rows = exp.epoch(), exp.update(), exp.row()
    shown = positions[:limit]
    docs = split.document_index(shown)
    occurrences = []
    for k, (p, doc, row) in enumerate(zip(shown.tolist(), docs.tolist(), split.doc_rows[docs].tolist())):
        left, right = max(0, p - context), min(split.num_tokens, p + len(ids) + context)
        mine = exp.occurrence == k
        exposures = [{"epoch": e, "update": u, "row": r}
                     for e, u, r in zip(epochs[mine].tolist(), updates[mine].tolist(), rows[mine].tolist())]
        if losses is not None:
            for item in exposures:
                value = losses[item["update"], item["row"]] if item["update"] < len(losses) else np.nan
                item["loss"] = None if np.isnan(value) else float(value)
        occurrences.append({"token_position": p, "document": doc, "source_row": row,
                            "context": decode(split.tokens[left:right]), "split": bool(exp.holders[k] == 0),
                            "exposures": exposures})
    schedule = [s for s in export_schedule(cfg, total) if s <= until] or [until]
    return {"token_ids": ids, "count": int(len(positions)), "until_step": until, "total_steps": total,
            "steps_done": total if steps_done is None else steps_done,
            "first_update": exp.first_update(), "num_exposures": exp.total(),
            "occurrences": occurrences, "exposures_by_step": cumulative_exposures(exp, schedule)}


def format_find(report: dict) -> str:
    head = f"{report['count']} occurrences of {report['token_ids']}"
    if report.get("text") is not None:
        head = f"{report['count']} occurrences of {report['text']!r} = tokens {report['token_ids']}"
    lines = [head + " in train.bin (encoded as the training documents: tiktoken GPT-2 encode_ordinary)"]
    variant = report.get("leading_space_variant")
    if variant:
        lines.append(f"  leading-space variant {variant['text']!r} = {variant['token_ids']}: {variant['count']}")
    if report["steps_done"] < report["total_steps"]:
        lines.append(f"the run was interrupted after {report['steps_done']} of its {report['total_steps']} steps: "
                     f"exposures stop at update {report['steps_done'] - 1}")
    first = "none" if report["first_update"] is None else f"first at update {report['first_update']}"
    lines.append(f"{report['num_exposures']} exposures in updates < {report['until_step']}; {first}")
    for occ in report["occurrences"]:
        flag = "  SPLIT (no window holds it whole)" if occ["split"] else ""
        lines.append(f"- token {occ['token_position']}  document {occ['document']} (source row {occ['source_row']})"
                     f"{flag}\n    {occ['context']!r}")
        for e in occ["exposures"]:
            loss = f"  loss {e['loss']:.4f}" if e.get("loss") is not None else ""
            lines.append(f"    epoch {e['epoch']}  update {e['update']}  row {e['row']}{loss}")
    if report["count"] > len(report["occurrences"]):
        lines.append(f"  ... {report['count'] - len(report['occurrences'])} more occurrences (--limit)")
    lines.append("cumulative exposures before each export step: " +
                 ", ".join(f"{r['step']}: {r['exposures']}" for r in report["exposures_by_step"]))
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> None:
    args, overrides = parse(FindArgs, argv, "trace find", overrides=FIELD_NAMES)
    if args.run_dir and not Path(args.run_dir).is_dir():
        raise UserError(f"run_dir {args.run_dir} does not exist")
    if args.repo_id:
        if args.config or args.run_dir or overrides:
            raise UserError("--repo_id gives the release's own recipe: drop --config, --run_dir and overrides")
        cfg = release_config(args.repo_id, args.data_dir or "")
    else:
        cfg = resolve_config(args.config, args.run_dir, overrides)
    data_dir = args.data_dir or cfg.data_dir
    if not data_dir or not Path(data_dir).is_dir():
        raise UserError(f"data_dir {data_dir} does not exist" if data_dir else "--data_dir is required")
    if args.limit < 0 or args.context < 0:
        raise UserError("--limit and --context must be >= 0")
    ids = query_ids(args.text, args.token_ids, cfg.seq_len + 1)
    losses = done = None
    if args.run_dir:
        from gpt2_owt.training.sequence_losses import read_sequence_losses

        check_run_matches(Path(args.run_dir), Path(data_dir))
        done = steps_done(args.run_dir, cfg)
        losses = read_sequence_losses(args.run_dir, cfg.global_batch_size)
    index = TraceIndex(data_dir, args.index_dir)
    report = find(index, cfg, ids, args.until_step, args.limit, args.context, losses, done)
    report = {"text": args.text, **report, "leading_space_variant": None}
    if args.text is not None and not args.text.startswith(" "):
        variant = encode(" " + args.text)
        if len(variant) <= cfg.seq_len + 1:
            report["leading_space_variant"] = {"text": " " + args.text, "token_ids": variant,
                                               "count": len(index.positions(variant))}
    print(json.dumps(report, indent=1) if args.json else format_find(report))


if __name__ == "__main__":
    main()
