"""A run's per-sequence training losses, readable: the loss the model had on each sequence of a batch, with the
document, source row and text of that sequence.

    gpt2-owt trace losses --run_dir R (--update N | --updates A:B) [--top_k K] [--highest | --lowest]
        [--data_dir D] [--text_chars 120] [--json]

The losses are what the trainer recorded (run_dir/sequence_losses/, read by training/sequence_losses.py, which owns
the layout): the mean next-token loss of global sequence `row` of update `update`, computed with the weights before
that update (= hf/step{update}). Where each sequence came from is `gpt2-owt data-order`'s answer for that update
(training/data_order.py `batch_order`, the trainer's own sampler): its train.bin window and token range, the
documents it spans and their source-dataset rows, its decoded tokens.

Rows come in update, row order; `--highest` / `--lowest` sort them by loss instead, and `--top_k K` keeps the first
K. A row the run did not record (a run that turned recording on at a resume) is left out and counted.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpt2_owt.core.args import parse
from gpt2_owt.core.errors import UserError, cli_main
from gpt2_owt.training.data_dir import WindowSampler, open_split
from gpt2_owt.training.data_order import batch_order
from gpt2_owt.training.sequence_losses import read_sequence_losses

from gpt2_owt.training.runs import parse_updates, run_config, run_data_dir, steps_done


@dataclass
class LossesArgs:
    run_dir: str = field(metadata={"help": "the run folder (trained with record_sequence_losses true, the default)"})
    update: int | None = field(default=None, metadata={"help": "one update's global batch (0-based)"})
    updates: str | None = field(default=None, metadata={"help": "A:B = the sequences of updates A <= u < B"})
    top_k: int | None = field(default=None, metadata={"help": "keep the first K rows (of --highest / --lowest)",
                                                      "gt": 0})
    highest: bool = field(default=False, metadata={"help": "highest loss first"})
    lowest: bool = field(default=False, metadata={"help": "lowest loss first"})
    data_dir: str | None = field(default=None, metadata={"help": "the run's data folder (default: its recorded one)"})
    text_chars: int = field(default=120, metadata={"help": "characters of each text in the table (--json: all)",
                                                   "ge": 0})
    json: bool = field(default=False, metadata={"help": "print JSON instead of a table"})


def sequence_losses(run_dir: str | Path, start: int, end: int, data_dir: str | Path | None = None,
                    order: str = "update", top_k: int | None = None) -> dict:
    """The recorded loss of every sequence of updates start <= u < end, each with its window, documents, source
    rows and text; `order` "update" (update, row), "highest" or "lowest" (by loss), the first `top_k` kept."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    done = steps_done(run_dir, cfg)
    data_dir = run_data_dir(run_dir, cfg, data_dir)
    losses = read_sequence_losses(run_dir, cfg.global_batch_size)[:done]
    if not 0 <= start < end <= len(losses):
        raise UserError(f"updates {start}..{end - 1}: {run_dir} recorded the losses of updates 0..{len(losses) - 1}"
                        if len(losses) else f"{run_dir} recorded no sequence loss yet")
    block = losses[start:end]
    update, row = (a.reshape(-1) for a in np.indices(block.shape))
    update += start
    flat = block.reshape(-1)
    recorded = ~np.isnan(flat)
    keep = np.flatnonzero(recorded)
    if order in ("highest", "lowest"):
        keep = keep[np.argsort(-flat[keep] if order == "highest" else flat[keep], kind="stable")]
    elif order != "update":
        raise ValueError(f"order {order!r}")
    keep = keep[:top_k]
    split = open_split(data_dir, "train")
    sampler = WindowSampler.for_run(cfg, split)
    batches = {int(u): batch_order(split, sampler, int(u), text=True) for u in np.unique(update[keep])}
    rows = [{"update": int(update[k]), "row": int(row[k]), "loss": float(flat[k]),
             **{key: v for key, v in batches[int(update[k])]["sequences"][row[k]].items() if key != "index"}}
            for k in keep]
    return {"run_dir": str(run_dir), "data_dir": str(data_dir), "updates": [start, end], "order": order,
            "top_k": top_k, "global_batch_size": cfg.global_batch_size, "seq_len": cfg.seq_len,
            "not_recorded": int((~recorded).sum()), "sequences": rows}


def format_losses(report: dict, text_chars: int) -> str:
    start, end = report["updates"]
    shown = len(report["sequences"])
    lines = [f"{report['run_dir']}: sequence losses of updates {start}..{end - 1} "
             f"({shown} sequences{', ' + report['order'] + ' loss first' if report['order'] != 'update' else ''}; "
             f"the loss of update u is that of the weights of step u)"]
    if report["not_recorded"]:
        lines.append(f"{report['not_recorded']} sequences of these updates have no recorded loss (left out)")
    lines.append(f"{'update':>7} {'row':>5} {'loss':>8} {'window':>8} {'tokens [start, end)':>21}  source rows | text")
    for s in report["sequences"]:
        text = json.dumps(s["text"], ensure_ascii=False)[1:-1]  # one line: newlines escaped
        text = text if len(text) <= text_chars else text[:text_chars] + "..."
        rows = ",".join(map(str, s["source_rows"]))
        lines.append(f"{s['update']:>7} {s['row']:>5} {s['loss']:>8.4f} {s['window']:>8} "
                     f"{s['token_start']:>10}-{s['token_end']:<10}  {rows} | {text}")
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = parse(LossesArgs, argv, "trace losses")
    if (args.update is None) == (args.updates is None):
        raise UserError("give exactly one of --update N and --updates A:B")
    if args.highest and args.lowest:
        raise UserError("give at most one of --highest and --lowest")
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run_dir {run_dir} does not exist")
    done = steps_done(run_dir, run_config(run_dir))
    if args.update is not None:
        if not 0 <= args.update < done:
            raise UserError(f"--update {args.update}: the run did updates 0..{done - 1}")
        start, end = args.update, args.update + 1
    else:
        start, end = parse_updates(args.updates, done)
    order = "highest" if args.highest else "lowest" if args.lowest else "update"
    report = sequence_losses(run_dir, start, end, args.data_dir, order, args.top_k)
    print(json.dumps(report, indent=1, ensure_ascii=False) if args.json else format_losses(report, args.text_chars))


if __name__ == "__main__":
    main()
