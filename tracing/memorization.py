"""Memorization by checkpoint: which training sequences each exported checkpoint reproduces verbatim, next to when
and how often the run showed them to it.

    gpt2-owt trace memorization --run_dir R (--updates A:B | --sample N [--seed S]) --output_dir OUT
        [--checkpoints step0 step64 final ...] [--prefix_len 32] [--suffix_len 32] [--batch_size 64]
        [--data_dir D] [--index_dir I] [--push_to_hub user/name [--private]] [--overwrite]

The definition is Pythia's (Biderman et al. 2023, "Emergent and Predictable Memorization"; EleutherAI/pythia
predictable-memorization/eval_memorization.py): a training sequence is *memorized* by a checkpoint when greedy
decoding from its first prefix_len tokens reproduces its next suffix_len tokens exactly; its *match fraction* is the
share of those suffix_len greedy tokens equal to the sequence's. A training sequence is what the trainer fed: global
sequence g (update g // global_batch_size, row g % global_batch_size) read window w of train.bin (the run's own
sampler, training/data_dir.py), tokens [w * seq_len, w * seq_len + seq_len + 1); prefix and suffix are its first
prefix_len + suffix_len tokens, across a document's end as the trainer saw them. Every training sequence holds
seq_len + 1 tokens, so none is shorter than prefix + suffix: a prefix_len + suffix_len above seq_len + 1 is refused.
Greedy is plain argmax at every step: an EOT (50256, the data's document separator) is generated like any token and
decoding goes on after it. (Pythia's script passes min_length=64, which forbids the EOS token: there a suffix that
holds a document end can never count as memorized.)

Sequences: `--updates A:B` takes every sequence of updates A <= u < B (the batches that turned step A into step
B); `--sample N --seed S` takes N distinct sequences drawn uniformly from every update the run did. Checkpoints:
every exported step (hf/stepN and hf/final, modeling/checkpoint_series.py), or those `--checkpoints` names (stepN,
N or final). Each sequence is checked at every chosen checkpoint, also those before its own update (`trained`
false: the model had not been trained on that batch yet).

Joined with training (tracing/exposures.py, `find`'s rule): `exposures` counts the training windows of updates
< N (N = the checkpoint's step) that held the sequence's prefix + suffix tokens whole, wherever they occur in
train.bin (its own occurrence and every duplicate, through the trace index); `first_exposure_update` and
`last_exposure_update` are the first and last such update, `steps_since_last_exposure` = N - (last update + 1) (the
updates that followed it; the same definition as `trace spans`).

Output (`OUT/`, the Hub dataset repo layout; one row per sequence x checkpoint):
    data/stepN.parquet    the rows of checkpoint step N (a `datasets` Dataset; all files together: `load_dataset(
                          "parquet", data_files="OUT/data/*.parquet")`, or `load_memorization(OUT)`)
    summary.json          per checkpoint: sequences, memorized, fraction; memorized fraction by exposure count
    memorization.png      memorized fraction by checkpoint, and by exposure count
    README.md             the dataset card: fields, definition, the run it came from, the summary
    memorization.json     what OUT holds: the settings, the command line that last decoded into it and, per
                          finished checkpoint, its weights sha256 (resume)
Columns: checkpoint (hf/stepN or hf/final), step, sequence (global sequence id g), update, row, epoch, window,
token_position (train.bin position of the prefix's first token), document, source_row, prefix_ids, suffix_ids,
generated_ids, prefix_text, suffix_text, generated_text, memorized, match_fraction, first_mismatch (index of the
first wrong greedy token; suffix_len when memorized), trained, exposures, first_exposure_update,
last_exposure_update, steps_since_last_exposure.

Resumable per checkpoint like the eval series: a checkpoint already in OUT with the same weights sha256 is read
back, not decoded again; OUT made with other settings (run data, data order, sequences, prefix/suffix) is refused
(--overwrite starts it over). `--push_to_hub ID` publishes OUT as a Hub *dataset* repo (huggingface_hub
`upload_folder`, repo_type dataset; the token and Hub errors of core/hub.py); rerunning the same command with it
after the work is done only uploads.

Speed (benchmarks/bench_memorization.py): identical sequences are decoded once; each batch is decoded with the KV
cache, the output layer in reused blocks. (A draft-suffix shortcut, one teacher-forced pass over the true suffix,
was removed: its tokens differed from plain greedy decoding in a test, and on CPU it was not faster.)
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from gpt2_owt.core.args import command_argv, parse
from gpt2_owt.core.errors import UserError, cli_main
from gpt2_owt.core.folder_lock import FolderLock
from gpt2_owt.core.hub import get_token, hub_errors
from gpt2_owt.core.interrupts import set_interrupt_note
from gpt2_owt.core.output_paths import atomic_output, guard_output, remove_tree
from gpt2_owt.core.readers import DamagedFile, read_json
from gpt2_owt.core.records import sha256_file, write_json_atomic
from gpt2_owt.core.steps import step_name
from gpt2_owt.modeling.checkpoint_series import Checkpoint, distinct_steps, run_checkpoints, select_checkpoint
from gpt2_owt.modeling.tokenizer import decode
from gpt2_owt.training.config import TrainConfig
from gpt2_owt.training.data_dir import MANIFEST, TokenSplit, WindowSampler
from gpt2_owt.training.run_dir import RUN_INFO
from gpt2_owt.training.runs import data_order, parse_updates, run_config, run_data_dir, steps_done

from .exposures import exposures_of
from .index import INDEX_DIR, TraceIndex

INFO = "memorization.json"  # the marker of an OUT this command made, and its resume state
SUMMARY = "summary.json"
PLOT = "memorization.png"
CARD = "README.md"
DATA = "data"
PUBLISHED = [CARD, SUMMARY, PLOT, INFO, f"{DATA}/*.parquet"]
FORMAT = 1


@dataclass
class MemorizationArgs:
    run_dir: str = field(metadata={"help": "the run folder: its exports, recipe (data order) and data"})
    output_dir: str = field(metadata={"help": "where the dataset, summary, plot and card go (resumable)"})
    updates: str | None = field(default=None, metadata={"help": "A:B = every sequence of updates A <= u < B"})
    sample: int | None = field(default=None, metadata={"help": "N sequences drawn from every update of the run",
                                                       "gt": 0})
    seed: int = field(default=0, metadata={"help": "seed of --sample"})
    checkpoints: list[str] | None = field(default=None, metadata={"help": "stepN / N / final ... (default: all)"})
    prefix_len: int = field(default=32, metadata={"help": "tokens given to the model", "gt": 0})
    suffix_len: int = field(default=32, metadata={"help": "tokens it must reproduce", "gt": 0})
    batch_size: int = field(default=64, metadata={"help": "sequences decoded together", "gt": 0})
    data_dir: str | None = field(default=None, metadata={"help": "the run's data folder (default: its recorded one)"})
    index_dir: str | None = field(default=None, metadata={"help": f"trace index (default: DATA_DIR/{INDEX_DIR})"})
    push_to_hub: str | None = field(default=None, metadata={"help": "publish OUT as this Hub dataset repo (user/name)"})
    private: bool = field(default=False, metadata={"help": "create the Hub dataset repo private"})
    overwrite: bool = field(default=False, metadata={"help": "start OUT over when it holds other settings"})


# ---------------------------------------------------------------------------------------------------- sequences

@dataclass
class Sequences:
    """Training sequences: global id g and where the trainer read them; `tokens` = their first prefix + suffix ids."""

    sequence: np.ndarray  # int64 [n] global sequence ids, sorted
    update: np.ndarray
    row: np.ndarray
    epoch: np.ndarray
    window: np.ndarray
    token_position: np.ndarray
    document: np.ndarray
    source_row: np.ndarray
    tokens: np.ndarray  # int64 [n, prefix_len + suffix_len]


def select_sequences(sampler: WindowSampler, done: int, updates: str | None = None, sample: int | None = None,
                     seed: int = 0) -> np.ndarray:
    """Sorted global sequence ids: every one of `updates` A:B, or `sample` distinct ones of updates < done."""
    if (updates is None) == (sample is None):
        raise UserError("give exactly one of --updates A:B and --sample N")
    batch = sampler.global_batch_size
    if updates is not None:
        start, end = parse_updates(updates, done)
        return np.arange(start * batch, end * batch, dtype=np.int64)
    total = done * batch
    if not 0 < sample <= total:
        raise UserError(f"--sample {sample}: the run trained {total} sequences ({done} updates x {batch})")
    return np.sort(np.random.default_rng(seed).choice(total, size=sample, replace=False)).astype(np.int64)


def training_sequences(sampler: WindowSampler, split: TokenSplit, sequence: np.ndarray, length: int) -> Sequences:
    """Where each global sequence was read (the trainer's sampler) and its first `length` tokens."""
    batch = sampler.global_batch_size
    update, row = np.divmod(sequence, batch)
    window = np.empty_like(sequence)
    for u in np.unique(update):  # one sampler call per update, in update order (one epoch permutation at a time)
        mine = update == u
        window[mine] = sampler.global_batch_windows(int(u))[row[mine]]
    starts = window * sampler.seq_len
    tokens = np.asarray(split.tokens)[starts[:, None] + np.arange(length)].astype(np.int64)
    document = split.document_index(starts)
    return Sequences(sequence=sequence, update=update, row=row, epoch=sequence // sampler.num_windows, window=window,
                     token_position=starts, document=document, source_row=np.asarray(split.doc_rows)[document],
                     tokens=tokens)


# ---------------------------------------------------------------------------------------------------- decoding

def _head_argmax(head, hidden, block: list):
    """argmax of the output layer over the rows of `hidden` [n, d], HEAD_CHUNK rows at a time into the scorer's
    reused logits block (eval/scoring.py `head_logits`)."""
    import torch

    from gpt2_owt.eval.scoring import HEAD_CHUNK, head_logits

    out = torch.empty(hidden.shape[0], dtype=torch.long, device=hidden.device)
    for start in range(0, hidden.shape[0], HEAD_CHUNK):
        out[start:start + HEAD_CHUNK] = head_logits(head, hidden[start:start + HEAD_CHUNK], block).argmax(dim=-1)
    return out


def _decode(model, head, cache, last, steps: int, block: list):
    """`steps` greedy tokens after `last` [n] (already generated, not yet in `cache`), one forward per token."""
    import torch

    tokens = []
    for _ in range(steps):
        hidden = model.transformer(input_ids=last[:, None], cache=cache, use_cache=True).last_hidden_state[:, -1]
        last = _head_argmax(head, hidden, block)
        tokens.append(last)
    return torch.stack(tokens, dim=1) if tokens else last.new_zeros((last.shape[0], 0))


def _greedy_batch(model, prefix, length: int, block: list):
    """Greedy continuation [b, length] of `prefix` [b, P]: the prefix in one forward, then one token per forward
    with the KV cache."""
    import torch
    from transformers import DynamicCache

    head = model.get_output_embeddings()
    cache = DynamicCache(config=model.config)
    hidden = model.transformer(input_ids=prefix, cache=cache, use_cache=True).last_hidden_state[:, -1]
    first = _head_argmax(head, hidden, block)
    rest = _decode(model, head, cache, first, length - 1, block)
    return torch.cat([first[:, None], rest], dim=1)


def greedy_continuations(model, prefixes: np.ndarray, suffixes: np.ndarray, batch_size: int,
                         progress: tqdm | None = None) -> np.ndarray:
    """Greedy (argmax, no stop at EOT) continuation of every prefix, as long as its suffix: int64 [n, suffix_len].
    Equal to `model.generate(prefix, do_sample=False, max_new_tokens=suffix_len)` without an EOS stop."""
    import torch

    out = np.empty(suffixes.shape, dtype=np.int64)
    device = model.device
    block: list = []
    with torch.inference_mode():
        for start in range(0, len(prefixes), batch_size):
            prefix = torch.from_numpy(np.ascontiguousarray(prefixes[start:start + batch_size])).to(device)
            out[start:start + len(prefix)] = _greedy_batch(model, prefix, suffixes.shape[1], block).cpu().numpy()
            if progress is not None:
                progress.update(len(prefix))
    return out


def match_scores(generated: np.ndarray, suffixes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(memorized, match fraction, first mismatch index) of each row: Pythia's exact flag and accuracy."""
    same = generated == suffixes
    first = np.where(same.all(axis=1), suffixes.shape[1], np.argmin(same, axis=1))
    return same.all(axis=1), same.mean(axis=1, dtype=np.float64).astype(np.float32), first


# ---------------------------------------------------------------------------------------------------- exposures

@dataclass
class SequenceExposures:
    """Per distinct sequence: every update (sorted, repeated per window held) at which a training window held its
    prefix + suffix tokens whole, at updates < the run's steps_done."""

    updates: list[np.ndarray]

    def at(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(exposures, first update or -1, last update or -1) before checkpoint step N (updates < N)."""
        count, first, last = (np.zeros(len(self.updates), np.int64) for _ in range(3))
        for k, updates in enumerate(self.updates):
            n = int(np.searchsorted(updates, step))
            count[k] = n
            first[k] = updates[0] if n else -1
            last[k] = updates[n - 1] if n else -1
        return count, first, last


def sequence_exposures(index: TraceIndex, sampler: WindowSampler, tokens: np.ndarray, until: int) -> SequenceExposures:
    """The exposures (`find`'s rule, tracing/exposures.py) of every row of `tokens` in updates < until."""
    found = []
    for ids in tqdm(tokens, desc="exposures", unit="sequence", leave=False):
        exposures = exposures_of(index.positions(ids.tolist()), len(ids), sampler, until)
        found.append(np.repeat(exposures.counted_sequence // sampler.global_batch_size, exposures.counted_weight))
    return SequenceExposures(found)


# ---------------------------------------------------------------------------------------------------- the rows

def features():
    from datasets import Features, List, Value

    ids = List(Value("int32"))
    return Features({
        "checkpoint": Value("string"), "step": Value("int64"), "sequence": Value("int64"), "update": Value("int64"),
        "row": Value("int64"), "epoch": Value("int64"), "window": Value("int64"), "token_position": Value("int64"),
        "document": Value("int64"), "source_row": Value("int64"),
        "prefix_ids": ids, "suffix_ids": ids, "generated_ids": ids,
        "prefix_text": Value("string"), "suffix_text": Value("string"), "generated_text": Value("string"),
        "memorized": Value("bool"), "match_fraction": Value("float32"), "first_mismatch": Value("int64"),
        "trained": Value("bool"), "exposures": Value("int64"), "first_exposure_update": Value("int64"),
        "last_exposure_update": Value("int64"), "steps_since_last_exposure": Value("int64"),
    })


def checkpoint_rows(checkpoint: Checkpoint, seqs: Sequences, inverse: np.ndarray, generated: np.ndarray,
                    exposures: SequenceExposures, prefix_len: int, texts: list[tuple[str, str]]) -> dict:
    """The columns of one checkpoint's rows (one per sequence); `inverse` maps each sequence to its distinct row."""
    step = checkpoint.step
    suffixes = seqs.tokens[:, prefix_len:]
    gen = generated[inverse]
    memorized, fraction, first_mismatch = match_scores(gen, suffixes)
    count, first, last = (a[inverse] for a in exposures.at(step))
    gen_texts = {}
    none = lambda a: [None if v < 0 else int(v) for v in a]  # noqa: E731
    return {
        "checkpoint": [checkpoint.label] * len(inverse), "step": [step] * len(inverse),
        "sequence": seqs.sequence, "update": seqs.update, "row": seqs.row, "epoch": seqs.epoch, "window": seqs.window,
        "token_position": seqs.token_position, "document": seqs.document, "source_row": seqs.source_row,
        "prefix_ids": seqs.tokens[:, :prefix_len].tolist(), "suffix_ids": suffixes.tolist(), "generated_ids": gen.tolist(),
        "prefix_text": [texts[k][0] for k in inverse], "suffix_text": [texts[k][1] for k in inverse],
        "generated_text": [gen_texts.setdefault(k, decode(generated[k])) for k in inverse],
        "memorized": memorized, "match_fraction": fraction, "first_mismatch": first_mismatch,
        "trained": seqs.update < step, "exposures": count, "first_exposure_update": none(first),
        "last_exposure_update": none(last),
        "steps_since_last_exposure": [None if v < 0 else step - (int(v) + 1) for v in last],
    }


def write_rows(columns: dict, path: Path) -> None:
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    with atomic_output(path) as tmp:
        Dataset.from_dict(columns, features=features()).to_parquet(str(tmp))


def load_memorization(output_dir: str | Path):
    """The rows of a `trace memorization` output as one in-memory `datasets.Dataset`, ordered by step."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset
    from datasets.table import InMemoryTable

    info = read_info(Path(output_dir))
    if info is None:
        raise UserError(f"{output_dir} holds no `trace memorization` output (no {INFO})")
    files = [Path(output_dir) / c["file"] for c in sorted(info["checkpoints"].values(), key=lambda c: c["step"])]
    table = pa.concat_tables([pq.read_table(f) for f in files]) if files else features().arrow_schema.empty_table()
    return Dataset(InMemoryTable(table.cast(features().arrow_schema)))


# ---------------------------------------------------------------------------------------------------- the summary

def exposure_bucket(count: int) -> tuple[int, str]:
    """(lowest count, label) of count's bucket: 0, 1, 2, 3-4, 5-8, 9-16, ... (powers of two)."""
    if count <= 2:
        return count, str(count)
    high = 1 << math.ceil(math.log2(count))
    return high // 2 + 1, f"{high // 2 + 1}-{high}"


def summarize(tables: list[dict], settings: dict) -> dict:
    """Per checkpoint and per exposure bucket (pooled over every sequence x checkpoint row)."""
    by_checkpoint, buckets = [], {}
    for t in tables:
        memorized, trained = np.asarray(t["memorized"]), np.asarray(t["trained"])
        by_checkpoint.append({
            "checkpoint": t["checkpoint"][0], "step": int(t["step"][0]), "sequences": int(memorized.size),
            "memorized": int(memorized.sum()), "fraction_memorized": float(memorized.mean()),
            "mean_match_fraction": float(np.mean(t["match_fraction"])),
            "trained_sequences": int(trained.sum()),
            "fraction_memorized_of_trained": float(memorized[trained].mean()) if trained.any() else None})
        for count, mem in zip(np.asarray(t["exposures"]).tolist(), memorized.tolist()):
            low, key = exposure_bucket(count)
            entry = buckets.setdefault(key, {"exposures": key, "low": low, "rows": 0, "memorized": 0})
            entry["rows"] += 1
            entry["memorized"] += int(mem)
    by_exposures = sorted(buckets.values(), key=lambda b: b["low"])
    for b in by_exposures:
        b["fraction_memorized"] = b["memorized"] / b["rows"]
        del b["low"]
    return {**settings, "checkpoints": by_checkpoint, "by_exposures": by_exposures}


def plot_summary(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["checkpoints"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in rows]
    left.plot(steps, [r["fraction_memorized"] for r in rows], "o-", label="memorized (all chosen sequences)")
    trained = [(r["step"], r["fraction_memorized_of_trained"]) for r in rows if r["fraction_memorized_of_trained"]
               is not None]
    if trained:
        left.plot(*zip(*trained), "s--", label="memorized (sequences trained before the checkpoint)")
    left.plot(steps, [r["mean_match_fraction"] for r in rows], ".:", label="mean match fraction")
    left.set_xscale("symlog", linthresh=1)
    left.set_ylim(-0.02, 1.02)
    left.set_xlabel("checkpoint step")
    left.set_ylabel("fraction")
    left.set_title(f"memorized ({summary['prefix_len']} -> {summary['suffix_len']} tokens) by checkpoint")
    left.legend(fontsize=8)
    buckets = summary["by_exposures"]
    right.bar(range(len(buckets)), [b["fraction_memorized"] for b in buckets])
    right.set_xticks(range(len(buckets)), [b["exposures"] for b in buckets])
    for k, b in enumerate(buckets):
        right.annotate(f"n={b['rows']}", (k, b["fraction_memorized"]), ha="center", va="bottom", fontsize=7)
    right.set_ylim(0, 1.1)
    right.set_xlabel("exposures before the checkpoint")
    right.set_ylabel("fraction memorized")
    right.set_title("memorized by exposure count (all sequence x checkpoint rows)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def dataset_card(summary: dict) -> str:
    """README.md of the output folder / Hub dataset repo: fields, definition, the run it came from, the summary."""
    run = summary["run"]
    head = ("---\npretty_name: Memorization by checkpoint of a gpt2-owt run\ntags:\n- memorization\n- gpt2\n"
            "- training-data-attribution\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
            f"    path: {DATA}/*.parquet\n---\n")
    selection = summary["selection"]
    chosen = (f"every sequence of updates {selection['updates'][0]} <= u < {selection['updates'][1]}"
              if selection["updates"] else f"{selection['sample']} sequences sampled (seed {selection['seed']}) "
                                           f"from the run's {run['steps_done']} updates")
    table = "\n".join(f"| {r['checkpoint']} | {r['step']} | {r['sequences']} | {r['memorized']} | "
                      f"{r['fraction_memorized']:.4f} | {r['mean_match_fraction']:.4f} |" for r in summary["checkpoints"])
    fields_doc = "\n".join(f"| `{name}` | {what} |" for name, what in FIELD_DOCS)
    return f"""{head}
# Memorization by checkpoint

Which training sequences of a gpt2-owt run each exported checkpoint reproduces verbatim, with the update that
trained on each sequence and how often (and how recently) training showed it to the model before that checkpoint.
Made by `gpt2-owt trace memorization` (gpt2_owt/tracing/memorization.py).

## Definition

Pythia's (Biderman et al. 2023, *Emergent and Predictable Memorization in Large Language Models*): a training
sequence is **memorized** by a checkpoint when greedy decoding from its first {summary['prefix_len']} tokens
reproduces its next {summary['suffix_len']} tokens exactly; `match_fraction` is the share of those tokens the greedy
continuation gets right. Greedy = argmax at every step; an EOT (the document separator) is generated like any token.
A training sequence is exactly what the trainer fed (global sequence `sequence` = update x global batch + row),
its first tokens across document ends as the trainer saw them. Exposures count the training windows of updates
before the checkpoint's step that held the sequence's prefix + suffix whole, anywhere in the training data (every
duplicate included).

Sequences: {chosen}; {summary['sequences']} sequences ({summary['distinct_sequences']} distinct token
sequences) x {len(summary['checkpoints'])} checkpoints.

## The run

| | |
|---|---|
| run folder | `{run['run_dir']}` |
| data manifest sha256 | `{run['data_manifest_sha256']}` |
| data order | seq_len {run['data_order']['seq_len']}, global_batch_size {run['data_order']['global_batch_size']}, data_seed {run['data_order']['data_seed']}, {run['data_order']['steps']} steps ({run['steps_done']} done) |
| model config | `{run['model_config']}` |
| git commit | `{run['git_commit']}` |

## Summary

| checkpoint | step | sequences | memorized | fraction | mean match fraction |
|---|---|---|---|---|---|
{table}

![memorized fraction by checkpoint and by exposure count]({PLOT})

## Fields

| field | meaning |
|---|---|
{fields_doc}

## Load

```python
from datasets import load_dataset
rows = load_dataset("parquet", data_files="{DATA}/*.parquet", split="train")   # or load_dataset("<this repo id>")
```
"""


FIELD_DOCS = [
    ("checkpoint", "the export checked: hf/stepN or hf/final"),
    ("step", "its step N (the weights after N updates)"),
    ("sequence", "global sequence id g of the training sequence"),
    ("update", "the update that trained on it (g // global_batch_size; 0-based, it made step update + 1)"),
    ("row", "its row in that update's global batch (g % global_batch_size)"),
    ("epoch", "the data epoch it was read in"),
    ("window", "the train.bin window it read (tokens [window x seq_len, ... + seq_len + 1))"),
    ("token_position", "train.bin position of its first token"),
    ("document", "index of the document holding its first token; `source_row` its row in the source dataset"),
    ("source_row", "source-dataset row of that document"),
    ("prefix_ids / suffix_ids", "its first prefix_len tokens, and the suffix_len after them"),
    ("generated_ids", "the checkpoint's greedy continuation of the prefix (suffix_len tokens)"),
    ("prefix_text / suffix_text / generated_text", "the same decoded (GPT-2 tokenizer)"),
    ("memorized", "generated_ids == suffix_ids"),
    ("match_fraction", "share of generated_ids equal to suffix_ids"),
    ("first_mismatch", "index of the first wrong generated token (suffix_len when memorized)"),
    ("trained", "update < step: the checkpoint was trained on this very sequence"),
    ("exposures", "training windows of updates < step holding prefix + suffix whole (all occurrences)"),
    ("first_exposure_update / last_exposure_update", "the first and last of those updates (null: none)"),
    ("steps_since_last_exposure", "step - (last_exposure_update + 1): updates since the last exposure (null: none)"),
]


# ---------------------------------------------------------------------------------------------------- the command

@dataclass
class Plan:
    """Everything checked before the first write: the run, its data, the sequences and the checkpoints."""

    args: MemorizationArgs
    out: Path
    cfg: TrainConfig
    index: TraceIndex
    sampler: WindowSampler
    done: int
    seqs: Sequences
    checkpoints: list[Checkpoint]
    settings: dict
    command: list[str]  # recorded in memorization.json: the explorer shows it under the table


def run_identity(run_dir: Path, cfg: TrainConfig, data_dir: Path, done: int) -> dict:
    info = read_json(run_dir / RUN_INFO, "run info")
    return {"run_dir": str(run_dir), "data_dir": str(data_dir), "data_manifest_sha256": sha256_file(data_dir / MANIFEST),
            "data_order": data_order(cfg), "steps_done": done, "model_config": cfg.model_config,
            "git_commit": info.get("git_commit")}


def plan(args: MemorizationArgs, command: list[str] | None = None) -> Plan:
    """Check every input and resolve every checkpoint (weights hashed) before anything is written."""
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run_dir {run_dir} does not exist")
    cfg = run_config(run_dir)
    done = steps_done(run_dir, cfg)
    if done == 0:
        raise UserError(f"{run_dir} trained no update yet (steps_done 0): no training sequence to check")
    data_dir = run_data_dir(run_dir, cfg, args.data_dir)
    if args.prefix_len + args.suffix_len > cfg.seq_len + 1:
        raise UserError(f"--prefix_len {args.prefix_len} + --suffix_len {args.suffix_len} is longer than a training "
                        f"sequence of this run ({cfg.seq_len} + 1 tokens)")
    if args.push_to_hub is not None and args.push_to_hub.count("/") != 1:
        raise UserError(f"--push_to_hub must look like user/name, got {args.push_to_hub!r}")
    index_dir = Path(args.index_dir) if args.index_dir else data_dir / INDEX_DIR
    index = TraceIndex(data_dir, index_dir)
    out = guard_output(args.output_dir, "--output_dir", folder=True,
                       inputs={"run_dir": run_dir, "data_dir": data_dir, "trace index": index_dir},
                       made_by="trace memorization", ours=INFO)
    found = run_checkpoints(run_dir, hash_weights=True)
    if args.checkpoints:
        chosen = [select_checkpoint(found, name, str(run_dir)) for name in args.checkpoints]
        checkpoints = sorted({c.step: c for c in chosen}.values(), key=lambda c: c.step)
    else:
        checkpoints = distinct_steps(found)
    sampler = WindowSampler.for_run(cfg, index.split)
    sequence = select_sequences(sampler, done, args.updates, args.sample, args.seed)
    seqs = training_sequences(sampler, index.split, sequence, args.prefix_len + args.suffix_len)
    settings = {"format": FORMAT, "run": run_identity(run_dir, cfg, data_dir, done),
                "selection": {"updates": list(parse_updates(args.updates, done)) if args.updates else None,
                              "sample": args.sample, "seed": args.seed if args.sample else None},
                "prefix_len": args.prefix_len, "suffix_len": args.suffix_len}
    return Plan(args, out, cfg, index, sampler, done, seqs, checkpoints, settings, command or [])


def read_info(out: Path) -> dict | None:
    if not (out / INFO).is_file():
        return None
    info = read_json(out / INFO, "memorization record")
    if not isinstance(info.get("settings"), dict) or not isinstance(info.get("checkpoints"), dict):
        raise DamagedFile(f"memorization record {out / INFO} is damaged (no 'settings' / 'checkpoints')")
    return info


def resume_key(settings: dict) -> dict:
    """What makes two outputs the same rows (the run folder's path may move; its data and data order may not)."""
    run = {k: v for k, v in settings["run"].items() if k in ("data_manifest_sha256", "data_order", "steps_done")}
    return {**{k: v for k, v in settings.items() if k != "run"}, "run": run}


def start_output(p: Plan) -> dict:
    """The record of OUT: the stored one when it has these settings, else a new one (--overwrite clears OUT)."""
    info = read_info(p.out)
    if info is not None and resume_key(info["settings"]) != resume_key(p.settings):
        if not p.args.overwrite:
            raise UserError(f"--output_dir {p.out} holds a memorization of other settings (run data, data order, "
                            "sequences or prefix/suffix): choose another folder or pass --overwrite")
        for name in (DATA, SUMMARY, PLOT, CARD, INFO):
            if (p.out / name).exists():
                remove_tree(p.out / name)
        info = None
    return info or {"settings": p.settings, "checkpoints": {}}


def finished(info: dict, checkpoint: Checkpoint, out: Path) -> bool:
    done = info["checkpoints"].get(checkpoint.label)
    return bool(done) and done.get("weights_sha256") == checkpoint.weights_sha256 and (out / done["file"]).is_file()


def memorization(p: Plan) -> dict:
    """Decode (or read back) every checkpoint, write its rows, then the summary, plot and card; the summary."""
    import pyarrow.parquet as pq

    from gpt2_owt.modeling.checkpoint_series import load_checkpoint

    args, out, seqs = p.args, p.out, p.seqs
    with FolderLock(out, "trace memorization"):
        info = start_output(p) | {"command": p.command}
        distinct, inverse = np.unique(seqs.tokens, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        exposures = sequence_exposures(p.index, p.sampler, distinct, p.done)
        texts = [(decode(t[:args.prefix_len]), decode(t[args.prefix_len:])) for t in distinct]
        todo = [c for c in p.checkpoints if not finished(info, c, out)]
        tables = []
        bar = tqdm(total=len(todo) * len(distinct), desc="greedy decoding", unit="sequence")
        for checkpoint in p.checkpoints:
            path = out / DATA / f"{step_name(checkpoint.step)}.parquet"
            if checkpoint in todo:
                bar.set_postfix_str(checkpoint.label)
                model = load_checkpoint(checkpoint)
                generated = greedy_continuations(model, distinct[:, :args.prefix_len], distinct[:, args.prefix_len:],
                                                 args.batch_size, bar)
                columns = checkpoint_rows(checkpoint, seqs, inverse, generated, exposures, args.prefix_len, texts)
                write_rows(columns, path)
                info["checkpoints"][checkpoint.label] = {"step": checkpoint.step, "file": f"{DATA}/{path.name}",
                                                         "weights_sha256": checkpoint.weights_sha256,
                                                         "rows": len(inverse)}
                write_json_atomic(out / INFO, info)
                kept = sum(finished(info, c, out) for c in p.checkpoints)
                set_interrupt_note(f"{kept} of {len(p.checkpoints)} checkpoints kept in {out}: rerun the same "
                                   "command to continue")
            columns = pq.read_table(path, columns=["checkpoint", "step", "memorized", "trained", "match_fraction",
                                                   "exposures"]).to_pydict()
            tables.append(columns)
        bar.close()
        summary = summarize(tables, {**p.settings, "sequences": len(inverse), "distinct_sequences": len(distinct)})
        write_json_atomic(out / SUMMARY, summary)
        with atomic_output(out / PLOT) as tmp:
            plot_summary(summary, tmp)
        with atomic_output(out / CARD) as tmp:
            tmp.write_text(dataset_card(summary))
    return summary


def push_to_hub(out: Path, repo_id: str, private: bool) -> str:
    """Publish OUT as a Hub dataset repo (the token and one-line Hub errors of core/hub.py); its URL."""
    token = get_token()
    from huggingface_hub import HfApi

    with hub_errors(repo_id, token=token, writing=True):
        api = HfApi(token=token)
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(out),
                                   allow_patterns=PUBLISHED, commit_message="Memorization by checkpoint "
                                                                            "(gpt2-owt trace memorization)")
    return commit.commit_url


def format_summary(summary: dict, out: Path) -> str:
    lines = [f"{summary['sequences']} sequences ({summary['distinct_sequences']} distinct) x "
             f"{len(summary['checkpoints'])} checkpoints, prefix {summary['prefix_len']} -> suffix "
             f"{summary['suffix_len']} tokens",
             f"{'checkpoint':<12} {'step':>8} {'memorized':>10} {'fraction':>9} {'match':>7} {'of trained':>11}"]
    for r in summary["checkpoints"]:
        trained = "-" if r["fraction_memorized_of_trained"] is None else f"{r['fraction_memorized_of_trained']:.4f}"
        lines.append(f"{r['checkpoint']:<12} {r['step']:>8} {r['memorized']:>10} {r['fraction_memorized']:>9.4f} "
                     f"{r['mean_match_fraction']:>7.4f} {trained:>11}")
    lines.append("memorized by exposures before the checkpoint: " + ", ".join(
        f"{b['exposures']}: {b['memorized']}/{b['rows']}" for b in summary["by_exposures"]))
    lines.append(f"wrote {out / DATA}/*.parquet, {out / SUMMARY}, {out / PLOT}, {out / CARD}")
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> None:
    argv = command_argv(argv)
    args = parse(MemorizationArgs, argv, "trace memorization")
    p = plan(args, ["gpt2-owt", "trace", "memorization", *argv])
    if args.push_to_hub:
        get_token()  # no token: one line now, not after the decoding
    summary = memorization(p)
    print(format_summary(summary, p.out))
    if args.push_to_hub:
        print(f"dataset -> {push_to_hub(p.out, args.push_to_hub, args.private)}")


if __name__ == "__main__":
    main()
