"""Which documents and token ranges make up the global batch of one update (update U turns step U into U + 1).

    gpt2-owt data-order --data_dir data/owt --config training/configs/gpt2-124m-owt.yaml --update 1000
    gpt2-owt data-order --run_dir runs/r1 --update 1000 --text        # a run's own recipe; each row's text

Uses the trainer's own sampler (`WindowSampler.for_run`, training/data_dir.py: the config's seq_len,
global_batch_size and data_seed), so the answer is by construction what the trainer fed at that update, at any world
size: with R processes, rank r trained on sequences [r * B/R, (r + 1) * B/R) of this list, in micro batches of
micro_batch_size in order. Other `--field value` training-config overrides (e.g. `--global_batch_size 256`) are
accepted after the arguments. `--run_dir` answers from a run's own training_config.json (training/runs.py: a
`--config` next to it must give the same data order). Prints one line per sequence (`--text`: and its decoded
tokens); `--json` prints the same as JSON, with the sha256 of the batch's tokens.
"""

import json
from dataclasses import dataclass, field

from gpt2_owt.core.args import parse
from gpt2_owt.core.errors import UserError, cli_main
from gpt2_owt.modeling.tokenizer import decode
from gpt2_owt.training.config import FIELD_NAMES
from gpt2_owt.training.data_dir import TokenSplit, WindowSampler, batch_sha256, open_split, read_windows
from gpt2_owt.training.runs import check_update, resolve_config, update_limit


@dataclass
class DataOrderArgs:
    update: int = field(metadata={"help": "0-based update whose global batch to list (it turns step U into U+1)"})
    config: str | None = field(default=None, metadata={"help": "training YAML (training/configs/*.yaml)"})
    run_dir: str | None = field(default=None, metadata={"help": "a run folder: its own recipe (training_config.json)"})
    data_dir: str | None = field(default=None, metadata={"help": "prepared data folder (default: the config's)"})
    text: bool = field(default=False, metadata={"help": "also print each sequence's decoded text"})
    json: bool = field(default=False, metadata={"help": "print JSON instead of a table"})


def batch_order(split: TokenSplit, sampler: WindowSampler, update: int, text: bool = False) -> dict:
    """Every sequence of `update`'s global batch: window id, token range, documents (split index and source row),
    and with `text` its tokens decoded."""
    windows = sampler.global_batch_windows(update)
    sequences = []
    for index, window in enumerate(windows):
        start, end = sampler.token_range(window)
        first, last = split.document_index([start, end - 1])
        docs = list(range(int(first), int(last) + 1))
        sequences.append({"index": index, "window": int(window), "token_start": start, "token_end": end,
                          "documents": docs, "source_rows": [int(split.doc_rows[d]) for d in docs]})
        if text:
            sequences[-1]["text"] = decode(split.tokens[start:end])
    return {"update": update, "seq_len": sampler.seq_len, "global_batch_size": sampler.global_batch_size,
            "data_seed": sampler.seed, "epoch": update * sampler.global_batch_size // sampler.num_windows,
            "tokens_sha256": batch_sha256(read_windows(split, windows, sampler.seq_len)), "sequences": sequences}


def format_table(order: dict) -> str:
    lines = [f"update {order['update']}: {order['global_batch_size']} sequences of {order['seq_len']} + 1 tokens "
             f"(data_seed {order['data_seed']}, epoch {order['epoch']}), tokens sha256 {order['tokens_sha256']}",
             f"{'seq':>6} {'window':>10} {'tokens [start, end)':>27}  source rows of the documents"]
    for s in order["sequences"]:
        rows = ", ".join(map(str, s["source_rows"]))
        lines.append(f"{s['index']:>6} {s['window']:>10} {s['token_start']:>13}-{s['token_end']:<13}  {rows}")
        if "text" in s:
            lines.append(f"{'':>6} {json.dumps(s['text'], ensure_ascii=False)}")  # one line: newlines escaped
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> None:
    args, overrides = parse(DataOrderArgs, argv, "data-order", overrides=FIELD_NAMES)
    cfg = resolve_config(args.config, args.run_dir, overrides)
    data_dir = args.data_dir or cfg.data_dir
    if not data_dir:
        raise UserError("--data_dir is required (the config sets none)")
    if args.update < 0:
        raise UserError(f"--update must be >= 0, got {args.update}")
    check_update("--update", args.update, update_limit(cfg, args.run_dir))
    split = open_split(data_dir, "train")
    sampler = WindowSampler.for_run(cfg, split)
    order = batch_order(split, sampler, args.update, text=args.text)
    print(json.dumps(order, indent=1) if args.json else format_table(order))


if __name__ == "__main__":
    main()
