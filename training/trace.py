"""Trace a text to the training steps that saw it: a suffix-array index of the trained tokens, every exposure of an
occurrence to the trainer, per-sequence training losses, and the text's learning curve over the checkpoints.

    python -m training.trace index --data_dir D [--output_dir D/trace_index] [--num_proc N] [--mem_gb M]
                                   [--shards S [--shard_ids K ...]]
    python -m training.trace find  --data_dir D --config RECIPE.yaml (--text "..." | --token_ids 1 2 3)
                                   [--run_dir R] [--until_step N] [--limit K] [--context 20] [--json] [--field value]
    python -m training.trace curve (--run_dir R | --repo_id ID) --text "..." [--prefix "..."]
                                   [--output curve.png] [--json]

index: an infini-gram (PyPI `infini-gram`, extra `trace`) suffix array over exactly the token stream of train.bin,
    in `--shards S` shards (default 1) of contiguous whole documents with about equal token counts. Shard k is the
    folder shard_{k:05d}, a plain single-shard infini-gram index: its `tokenized.0` holds the shard's documents as
    infini-gram documents (b"\\xff\\xff", then the document's uint16 ids, EOT included), `offset.0` the uint64 byte
    offset of each, `table.0` the suffix array, `shard.json` its document and token range. Shards are built in
    `.tmp-NAME-build` beside the index and renamed into place when all are there; `trace_index.json` records the
    data manifest's sha256 and the shards, and every query refuses an index whose record does not match the
    data_dir. Several machines: each runs `index --shards S --shard_ids ...` for its share (into a shared build
    folder, or copy the shard folders together after), then one run without --shard_ids finishes the index.
    Token position mapping: a match at byte offset b in document d of a shard (both counted within the shard) has
    b = 2 * (p - first_token + d + 1), i.e. p = first_token + b // 2 - d - 1 (each earlier document of the shard
    and this one added a 2-byte separator).
    An n-gram spanning two documents of train.bin (it holds an EOT followed by the next document's tokens) cannot
    match across infini-gram's separators: it is split after each EOT into pieces that each lie in one document
    (so in one shard), the rarest piece is looked up, and its candidates are checked against train.bin.

find: the text is encoded as the data pipeline encodes documents (tiktoken GPT-2 `encode_ordinary`, no EOT added),
    so "Barack Obama" and " Barack Obama" (a leading space, as mid-sentence) are different token sequences: the
    report gives the count of the leading-space variant too. An occurrence [p, p+n) is exposed in window w (tokens
    [w*seq_len, w*seq_len+seq_len+1)) when w*seq_len <= p and p+n <= w*seq_len+seq_len+1; every global sequence g
    that read w (the trainer's own sampler, inverted: training/data_dir.py) is one exposure at update step
    g // global_batch_size (0-based: trained by the weights of hf/step_N, N = step, and reflected in hf/step_{N+1}),
    row g % global_batch_size of its global batch. `--until_step N` counts updates < N (default: the run's total).
    `--json` schema:
        {"token_ids": [int], "text": str|null, "count": int,                # occurrences in train.bin
         "leading_space_variant": {"text", "token_ids", "count"}|null,
         "until_step": int, "first_step": int|null,                         # first exposure of any occurrence
         "num_exposures": int,
         "occurrences": [{"token_position": int, "document": int, "source_row": int, "context": str,
                          "split": bool,                                    # no window holds it whole
                          "exposures": [{"epoch": int, "step": int, "row": int,
                                         "loss": float|null}]}],            # "loss" only with --run_dir
                                                                            # (first --limit occurrences)
         "exposures_by_step": [{"step": int, "exposures": int}]}            # cumulative exposures before each
                                                                            # export step hf/step_N (updates < N)

curve: the text's mean next-token loss (with --prefix: of the text after the prefix, plus the summed log-prob) at
    every exported checkpoint (run_dir/hf/step_N, or the Hub branches step{N} of --repo_id), next to the exposures
    of the scored ids (prefix + text) before that step when the data_dir's index exists. Without --prefix the text
    is scored after an EOT (GPT-2's document start), so every token of the text is predicted.
    `--json` schema: {"text", "prefix", "token_ids", "rows": [{"step", "checkpoint", "loss", "logprob",
    "exposures"|null}]}
"""

import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
from modeling.hf_argparser import HfArgumentParser

from modeling import EOT_TOKEN_ID, UserError, cli_main, sha256_file, tiktoken_encoding
from training import run_dir as rd
from training.config import TrainConfig, parse_config
from training.data_dir import MANIFEST, TOKEN_DTYPE, TokenSplit, WindowSampler, open_split

INDEX_DIR = "trace_index"
INDEX_INFO = "trace_index.json"
INDEX_FORMAT = 2  # 1: one shard, its files in the index folder itself
SHARD_INFO = "shard.json"
SHARD_KEYS = ("dir", "first_document", "num_documents", "first_token", "num_tokens")
DOC_SEPARATOR = b"\xff\xff"
TOKEN_BYTES = 2
# A query matching more than this share of all tokens is answered by a scan of train.bin, which yields positions
# already sorted: gathering ~2M suffix-array entries and sorting them costs ~4x a scan (bench_trace, 50M tokens).
SCAN_SHARE = 1 / 256


def infini_gram():
    try:
        import infini_gram.engine  # noqa: F401
    except ImportError:
        raise UserError("the trace index needs infini-gram: pip install 'gpt2-owt[trace]' (or pip install infini-gram)") \
            from None
    import infini_gram

    return infini_gram


# ----------------------------------------------------------------------------------------------------------------
# index
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class IndexArgs:
    data_dir: str = field(metadata={"help": "prepared data folder (training/prepare_data.py)"})
    output_dir: str | None = field(default=None, metadata={"help": f"index folder (default: DATA_DIR/{INDEX_DIR})"})
    num_proc: int = field(default=max(1, min(os.cpu_count() or 1, 8)), metadata={"help": "indexer threads"})
    mem_gb: int = field(default=4, metadata={"help": "memory budget of the suffix-array builder (GiB)"})
    shards: int = field(default=1, metadata={"help": "split the index into this many shards of whole documents "
                                                     "(about equal tokens), each its own suffix array"})
    shard_ids: list[int] | None = field(default=None, metadata={
        "help": "build only these shards (one machine's share) into the build folder and stop; a last run "
                "without --shard_ids builds whatever is missing and puts the index in place"})


def shard_bounds(split: TokenSplit, shards: int) -> np.ndarray:
    """Document bounds [shards + 1] of contiguous shards with about equal token counts (whole documents)."""
    offsets = np.asarray(split.doc_offsets, dtype=np.int64)
    inner = np.searchsorted(offsets, np.arange(1, shards) * split.num_tokens // shards)
    bounds = np.concatenate([[0], inner, [split.num_documents]]).astype(np.int64)
    if shards > split.num_documents or np.any(np.diff(bounds) <= 0):
        raise UserError(f"--shards {shards}: train.bin's {split.num_documents:,} documents cannot fill that many "
                        f"shards of about equal size; use fewer")
    return bounds


def shard_record(split: TokenSplit, bounds: np.ndarray, k: int, manifest_sha: str) -> dict:
    first, last = int(bounds[k]), int(bounds[k + 1])
    return {"shard": k, "shards": len(bounds) - 1, "dir": shard_dir_name(k), "data_manifest_sha256": manifest_sha,
            "first_document": first, "num_documents": last - first, "first_token": int(split.doc_offsets[first]),
            "num_tokens": int(split.doc_offsets[last] - split.doc_offsets[first])}


def build_folder(output_dir: Path) -> Path:
    """Where shards are built before the index is renamed into place (a fixed name: machines share it)."""
    return output_dir.parent / f".tmp-{output_dir.name}-build"


def shard_dir_name(k: int) -> str:
    return f"shard_{k:05d}"


def write_tokenized(split: TokenSplit, folder: Path, first_doc: int, last_doc: int, chunk_docs: int = 1 << 16) -> None:
    """Documents [first_doc, last_doc) as an infini-gram shard: tokenized.0 (each document: separator + its uint16
    ids) and offset.0 (uint64 byte offset of each document in tokenized.0)."""
    from tqdm.auto import tqdm

    offsets = np.asarray(split.doc_offsets[first_doc : last_doc + 1], dtype=np.int64)
    doc_starts = 2 * (offsets[:-1] - offsets[0] + np.arange(last_doc - first_doc))  # tokens + one separator each
    doc_starts.astype("<u8").tofile(folder / "offset.0")
    separator = np.frombuffer(DOC_SEPARATOR, dtype="<u2")
    with open(folder / "tokenized.0", "wb") as f, \
            tqdm(total=int(offsets[-1] - offsets[0]), unit="tok", desc=f"{folder.name}/tokenized.0") as bar:
        for first in range(0, last_doc - first_doc, chunk_docs):
            last = min(first + chunk_docs, last_doc - first_doc)
            lengths = np.diff(offsets[first : last + 1])
            out = np.empty(int(lengths.sum()) + (last - first), dtype="<u2")
            starts = np.arange(last - first) + (offsets[first:last] - offsets[first])  # separator slots
            out[starts] = separator[0]
            mask = np.ones(out.size, bool)
            mask[starts] = False
            out[mask] = split.tokens[offsets[first] : offsets[last]]
            out.tofile(f)
            bar.update(int(lengths.sum()))


def build_shard(split: TokenSplit, data_dir: Path, work: Path, record: dict, num_proc: int, mem_gb: int) -> None:
    """One shard as a plain single-shard infini-gram index, complete-or-absent: built in a partial folder, its
    record (SHARD_INFO) written last, then renamed to work/shard_K. A shard already there with the same record is
    kept: an interrupted or multi-machine build resumes."""
    final = work / record["dir"]
    if (final / SHARD_INFO).is_file() and json.loads((final / SHARD_INFO).read_text()) == record:
        return
    shutil.rmtree(final, ignore_errors=True)  # stale: another data_dir or shard count
    tmp = Path(tempfile.mkdtemp(prefix=f".{record['dir']}.partial-", dir=work))
    try:
        first = record["first_document"]
        write_tokenized(split, tmp, first, first + record["num_documents"])
        hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        ulimit = min(hard_limit if hard_limit != resource.RLIM_INFINITY else 1 << 20, 1 << 20)
        # a subprocess: infini-gram's build_sa changes the working directory and the open-files limit of its process
        cmd = [sys.executable, "-m", "infini_gram.indexing", "--data_dir", str(data_dir.resolve()),
               "--save_dir", str(tmp.resolve()), "--token_dtype", "u16", "--cpus", str(num_proc),
               "--mem", str(mem_gb), "--ulimit", str(ulimit)]
        returncode, last_line = run_indexer(cmd)
        if returncode != 0 or not (tmp / "table.0").is_file():
            raise UserError(f"infini-gram indexing of {record['dir']} failed (exit {returncode}): "
                            f"{last_line or 'no output'}")
        (tmp / SHARD_INFO).write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_index(data_dir: Path, output_dir: Path, num_proc: int, mem_gb: int, shards: int = 1,
                shard_ids: list[int] | None = None) -> Path | None:
    """Build the index (all shards, then renamed into place), or with `shard_ids` only those shards into the
    build folder (returns None). The build folder `.tmp-NAME-build` beside output_dir is where machines of a
    multi-machine build put their shards (a shared filesystem, or copy the shard_K folders together)."""
    infini_gram()
    split = open_split(data_dir, "train")
    if split.num_tokens == 0:
        raise UserError(f"{data_dir}/train.bin is empty: nothing to index")
    if shards < 1:
        raise UserError(f"--shards must be >= 1, got {shards}")
    if shard_ids is not None and (not shard_ids or any(not 0 <= k < shards for k in shard_ids)):
        raise UserError(f"--shard_ids must be shard numbers in [0, {shards}), got {shard_ids}")
    bounds = shard_bounds(split, shards)
    manifest_sha = sha256_file(data_dir / MANIFEST)
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"{output_dir} exists and is not a folder")
    work = build_folder(output_dir)
    work.mkdir(parents=True, exist_ok=True)
    records = [shard_record(split, bounds, k, manifest_sha) for k in range(shards)]
    try:
        for k in shard_ids if shard_ids is not None else range(shards):
            build_shard(split, data_dir, work, records[k], num_proc, mem_gb)
    finally:
        if not any(work.iterdir()):
            work.rmdir()  # nothing built: leave nothing behind
    if shard_ids is not None:
        return None
    shard_dirs = {r["dir"] for r in records}
    for stale in [p for p in work.iterdir() if p.name not in shard_dirs]:
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()  # shards of an earlier shard count
    info = {"format": INDEX_FORMAT, "data_dir": str(data_dir.resolve()), "data_manifest_sha256": manifest_sha,
            "num_tokens": split.num_tokens, "num_documents": split.num_documents, "token_dtype": "u16",
            "document_separator": DOC_SEPARATOR.hex(), "infini_gram_version": infini_gram_version(),
            "shards": [{key: r[key] for key in SHARD_KEYS} for r in records],
            "files": {str(p.relative_to(work)): p.stat().st_size for p in sorted(work.rglob("*")) if p.is_file()}}
    (work / INDEX_INFO).write_text(json.dumps(info, indent=1) + "\n")
    if output_dir.exists():
        shutil.rmtree(output_dir)
    os.replace(work, output_dir)
    return output_dir


def run_indexer(cmd: list[str]) -> tuple[int, str]:
    """Run infini-gram's indexer, echoing its phase lines (make-part, merge, concat with their durations) to stderr
    as progress; returns its exit code and last output line (the error, when it fails)."""
    last_line = ""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            line = line.strip().split("\r")[-1].strip()
            if line:
                last_line = line
            if line.startswith("Step") or ": Done." in line:
                print(f"infini-gram: {line}", file=sys.stderr, flush=True)
        return proc.wait(), last_line


def infini_gram_version() -> str:
    from importlib.metadata import version

    return version("infini-gram")


# ----------------------------------------------------------------------------------------------------------------
# queries on the index
# ----------------------------------------------------------------------------------------------------------------


class IndexShard:
    """One shard of the index: documents [first_document, first_document + num_documents) of train.bin."""

    def __init__(self, folder: Path, record: dict):
        self.first_token = record["first_token"]  # train.bin position of the shard's first token
        self.doc_byte_offsets = np.fromfile(folder / "offset.0", dtype="<u8").astype(np.int64)
        table = folder / "table.0"
        self.ptr_size = table.stat().st_size // ((folder / "tokenized.0").stat().st_size // TOKEN_BYTES)
        self.table = np.asarray(np.memmap(table, dtype=np.uint8, mode="r"))  # a plain view: cheaper slicing

    def positions(self, start: int, end: int) -> np.ndarray:
        """Sorted train.bin positions of suffix-array entries [start, end): little-endian byte offsets into the
        shard's tokenized.0, ptr_size bytes each."""
        padded = np.zeros((end - start, 8), dtype=np.uint8)
        padded[:, : self.ptr_size] = self.table[start * self.ptr_size : end * self.ptr_size].reshape(-1, self.ptr_size)
        byte_offsets = np.sort(padded.view("<u8").ravel().astype(np.int64))  # sorted: searchsorted runs in order
        docs = np.searchsorted(self.doc_byte_offsets, byte_offsets, side="right") - 1
        return self.first_token + byte_offsets // TOKEN_BYTES - docs - 1


class TraceIndex:
    """The index of one data_dir's train.bin: token positions of an id sequence, in train.bin coordinates."""

    def __init__(self, data_dir: str | Path, index_dir: str | Path | None = None):
        self.data_dir = Path(data_dir)
        self.dir = Path(index_dir) if index_dir else self.data_dir / INDEX_DIR
        self.split = open_split(self.data_dir, "train")
        info_path = self.dir / INDEX_INFO
        if not info_path.is_file():
            raise UserError(f"no trace index at {self.dir}: build it with "
                            f"`python -m training.trace index --data_dir {self.data_dir}`")
        self.info = json.loads(info_path.read_text())
        if self.info.get("data_manifest_sha256") != sha256_file(self.data_dir / MANIFEST) or \
                self.info.get("num_tokens") != self.split.num_tokens:
            raise UserError(f"the trace index at {self.dir} was built from another data_dir ({self.info.get('data_dir')})"
                            f" or an older version of it: rebuild it with `python -m training.trace index`")
        records = self.info.get("shards") or [{"dir": ".", "first_token": 0}]  # format 1: one shard, no subfolder
        folders = [self.dir / r["dir"] for r in records]
        ig = infini_gram()
        # Shards are passed in document order (one folder each). No read-ahead: infini-gram's default prefetching
        # (depths 1/3/3) pays off for an index on a cold disk, but costs a warm (page-cached) query ~5x its binary
        # search (measured 64 us vs 12 us at 5M tokens).
        self.engine = ig.engine.InfiniGramEngine(index_dir=[str(f) for f in folders], eos_token_id=EOT_TOKEN_ID,
                                                 token_dtype="u16", ds_prefetch_depth=0, sa_prefetch_depth=0,
                                                 od_prefetch_depth=0)
        self.shards = [IndexShard(folder, record) for folder, record in zip(folders, records)]

    def count(self, ids: list[int]) -> int:
        return int(self.engine.count(input_ids=[int(i) for i in ids])["count"])

    def _piece_positions(self, ids: list[int]) -> np.ndarray:
        """Sorted train.bin positions of an id sequence that lies inside one document."""
        segments = self.engine.find(input_ids=[int(i) for i in ids])["segment_by_shard"]
        if sum(end - start for start, end in segments) > SCAN_SHARE * self.split.num_tokens:
            return scan_positions(np.asarray(self.split.tokens), ids)  # the same positions, sorted, sooner
        found = [shard.positions(start, end) for shard, (start, end) in zip(self.shards, segments) if end > start]
        return np.concatenate(found) if found else np.empty(0, dtype=np.int64)  # shards are in document order

    def positions(self, ids: list[int]) -> np.ndarray:
        """Sorted train.bin token positions p with train.bin[p : p + len(ids)] == ids (also across documents)."""
        ids = [int(i) for i in ids]
        cuts = [i + 1 for i, t in enumerate(ids[:-1]) if t == EOT_TOKEN_ID]
        if not cuts:
            return self._piece_positions(ids)
        bounds = [0, *cuts, len(ids)]
        pieces = [(bounds[k], ids[bounds[k] : bounds[k + 1]]) for k in range(len(bounds) - 1)]
        offset, rarest = min(pieces, key=lambda piece: self.count(piece[1]))
        starts = self._piece_positions(rarest) - offset
        starts = starts[(starts >= 0) & (starts + len(ids) <= self.split.num_tokens)]
        if starts.size == 0:
            return starts
        window = np.asarray(self.split.tokens)[starts[:, None] + np.arange(len(ids))]
        return starts[(window == np.asarray(ids)).all(axis=1)]


def scan_positions(tokens: np.ndarray, ids: list[int]) -> np.ndarray:
    """The plain vectorised scan: candidate positions of the first id, then each further id checked on the survivors."""
    n = len(ids)
    cand = np.flatnonzero(tokens[: tokens.size - n + 1] == ids[0])
    for k in range(1, n):
        cand = cand[tokens[cand + k] == ids[k]]
    return cand


# ----------------------------------------------------------------------------------------------------------------
# exposures: token positions -> (epoch, step, row) through the trainer's sampler
# ----------------------------------------------------------------------------------------------------------------


def export_schedule(cfg: TrainConfig, total_steps: int) -> list[int]:
    """The steps exported to hf/step_N by a run of this config (and its last step, hf/final)."""
    every = range(cfg.export_interval, total_steps + 1, cfg.export_interval) if cfg.export_interval > 0 else []
    return sorted({s for s in cfg.export_steps if s <= total_steps} | set(every) | {total_steps})


@dataclass
class Exposures:
    """The exposures of a query's occurrences: the first `listed` occurrences' one by one, and all of them counted
    per global sequence (so a common id's millions of exposures are never built one by one)."""

    holders: np.ndarray  # windows holding each listed occurrence whole (0 = split)
    occurrence: np.ndarray  # listed exposures: index into the positions (< listed) ...
    sequence: np.ndarray  # ... and global sequence id g (sorted)
    counted_sequence: np.ndarray  # every g that read a window holding an occurrence (sorted, distinct) ...
    counted_weight: np.ndarray  # ... and how many occurrences that window holds
    sampler: WindowSampler

    def step(self) -> np.ndarray:
        return self.sequence // self.sampler.global_batch_size

    def row(self) -> np.ndarray:
        return self.sequence % self.sampler.global_batch_size

    def epoch(self) -> np.ndarray:
        return self.sequence // self.sampler.num_windows

    def total(self) -> int:
        return int(self.counted_weight.sum())

    def first_step(self) -> int | None:
        return int(self.counted_sequence[0]) // self.sampler.global_batch_size if self.counted_sequence.size else None

    def before(self, steps) -> np.ndarray:
        """Exposures at updates < N, for each N in `steps`."""
        ends = np.searchsorted(self.counted_sequence, np.asarray(steps, np.int64) * self.sampler.global_batch_size)
        return np.concatenate([[0], np.cumsum(self.counted_weight)])[ends]


def exposures_of(positions: np.ndarray, length: int, sampler: WindowSampler, until_step: int,
                 listed: int = 0) -> Exposures:
    """Exposures at updates < until_step of the occurrences at sorted `positions`, the first `listed` one by one."""
    which, windows = sampler.windows_holding(positions, positions + length)
    num_sequences = until_step * sampler.global_batch_size
    # Sorted positions give non-decreasing windows (a window shared by two occurrences comes twice, in a row), so
    # the distinct windows and their occurrence counts are runs: no sort of the (maybe millions of) pairs.
    run_starts = np.flatnonzero(np.r_[True, windows[1:] != windows[:-1]]) if windows.size else np.zeros(0, np.int64)
    held = np.diff(run_starts, append=windows.size)
    index, counted = sampler.sequences_reading(windows[run_starts], num_sequences)
    cut = int(np.searchsorted(which, listed))  # pairs come grouped by occurrence, in order
    listed_index, sequence = sampler.sequences_reading(windows[:cut], num_sequences)
    return Exposures(holders=np.bincount(which[:cut], minlength=min(listed, len(positions))),
                     occurrence=which[listed_index], sequence=sequence, counted_sequence=counted,
                     counted_weight=held[index], sampler=sampler)


def cumulative_exposures(exposures: Exposures, schedule: list[int]) -> list[dict]:
    """Exposures at updates < N for each export step N (the weights of hf/step_N have seen exactly these)."""
    return [{"step": int(s), "exposures": int(c)} for s, c in zip(schedule, exposures.before(schedule))]


# ----------------------------------------------------------------------------------------------------------------
# find
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class FindArgs:
    data_dir: str | None = field(default=None, metadata={"help": "prepared data folder (default: the config's)"})
    config: str | None = field(default=None, metadata={"help": "training YAML (default: RUN_DIR/training_config.json)"})
    run_dir: str | None = field(default=None, metadata={"help": "a run folder: adds each exposure's training loss"})
    index_dir: str | None = field(default=None, metadata={"help": f"index folder (default: DATA_DIR/{INDEX_DIR})"})
    text: str | None = field(default=None, metadata={"help": "text to find (encoded like the training documents)"})
    token_ids: list[int] | None = field(default=None, metadata={"help": "token ids to find (instead of --text)"})
    until_step: int | None = field(default=None, metadata={"help": "count exposures at updates < N (default: all)"})
    limit: int = field(default=10, metadata={"help": "occurrences listed with their exposures"})
    context: int = field(default=20, metadata={"help": "tokens of context decoded on each side"})
    json: bool = field(default=False, metadata={"help": "print JSON (schema in the module docstring)"})


@functools.cache
def encoding():
    return tiktoken_encoding()  # built from the shipped vocab once per process


def encode(text: str) -> list[int]:
    return encoding().encode_ordinary(text)


def decode(ids) -> str:
    return encoding().decode(np.asarray(ids, dtype=np.int64).tolist(), errors="replace")  # one conversion, not per token


def run_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig a run folder was trained with (its training_config.json)."""
    path = Path(run_dir) / rd.TRAINING_CONFIG
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run folder (no {rd.TRAINING_CONFIG})")
    saved = rd.read_json(path)
    return TrainConfig(**{f.name: saved[f.name] for f in fields(TrainConfig) if f.name in saved})


def resolve_config(config: str | None, run_dir: str | None, overrides: list[str]) -> TrainConfig:
    if config:
        return parse_config(["--config", config, *overrides], validate=False)
    if run_dir:
        if overrides:
            raise UserError(f"config overrides {overrides} need --config (a run folder's config is fixed)")
        return run_config(run_dir)
    raise UserError("--config RECIPE.yaml (or --run_dir) is required: it gives seq_len, global_batch_size, seed, steps")


def check_run_matches(run_dir: Path, data_dir: Path) -> None:
    info_path = run_dir / rd.RUN_INFO
    if not info_path.is_file():
        raise UserError(f"{run_dir} is not a run folder (no {rd.RUN_INFO})")
    if rd.read_json(info_path).get("data_manifest_sha256") != sha256_file(data_dir / MANIFEST):
        raise UserError(f"{run_dir} was not trained on {data_dir} (data manifest sha256 differs)")


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


def find(index: TraceIndex, cfg: TrainConfig, ids: list[int], until_step: int | None = None, limit: int = 10,
         context: int = 20, losses: np.ndarray | None = None) -> dict:
    """The report of `find` (see the module docstring for its keys)."""
    split = index.split
    sampler = WindowSampler(split.num_tokens, cfg.seq_len, cfg.global_batch_size, cfg.seed)
    total = cfg.total_steps()
    until = total if until_step is None else until_step
    if not 0 <= until <= total:
        raise UserError(f"--until_step {until} is beyond the run's {total} steps")
    positions = index.positions(ids)
    exp = exposures_of(positions, len(ids), sampler, until, listed=limit)
    epochs, steps, rows = exp.epoch(), exp.step(), exp.row()
    shown = positions[:limit]
    docs = split.document_index(shown)
    occurrences = []
    for k, (p, doc, row) in enumerate(zip(shown.tolist(), docs.tolist(), split.doc_rows[docs].tolist())):
        left, right = max(0, p - context), min(split.num_tokens, p + len(ids) + context)
        mine = exp.occurrence == k
        exposures = [{"epoch": e, "step": s, "row": r}
                     for e, s, r in zip(epochs[mine].tolist(), steps[mine].tolist(), rows[mine].tolist())]
        if losses is not None:
            for item in exposures:
                value = losses[item["step"], item["row"]] if item["step"] < len(losses) else np.nan
                item["loss"] = None if np.isnan(value) else float(value)
        occurrences.append({"token_position": p, "document": doc, "source_row": row,
                            "context": decode(split.tokens[left:right]), "split": bool(exp.holders[k] == 0),
                            "exposures": exposures})
    schedule = [s for s in export_schedule(cfg, total) if s <= until] or [until]
    return {"token_ids": ids, "count": int(len(positions)), "until_step": until,
            "first_step": exp.first_step(), "num_exposures": exp.total(),
            "occurrences": occurrences, "exposures_by_step": cumulative_exposures(exp, schedule)}


def format_find(report: dict) -> str:
    head = f"{report['count']} occurrences of {report['token_ids']}"
    if report.get("text") is not None:
        head = f"{report['count']} occurrences of {report['text']!r} = tokens {report['token_ids']}"
    lines = [head + " in train.bin (encoded as the training documents: tiktoken GPT-2 encode_ordinary)"]
    variant = report.get("leading_space_variant")
    if variant:
        lines.append(f"  leading-space variant {variant['text']!r} = {variant['token_ids']}: {variant['count']}")
    lines.append(f"{report['num_exposures']} exposures in updates < {report['until_step']}; first at step "
                 f"{report['first_step']}")
    for occ in report["occurrences"]:
        flag = "  SPLIT (no window holds it whole)" if occ["split"] else ""
        lines.append(f"- token {occ['token_position']}  document {occ['document']} (source row {occ['source_row']})"
                     f"{flag}\n    {occ['context']!r}")
        for e in occ["exposures"]:
            loss = f"  loss {e['loss']:.4f}" if e.get("loss") is not None else ""
            lines.append(f"    epoch {e['epoch']}  step {e['step']}  row {e['row']}{loss}")
    if report["count"] > len(report["occurrences"]):
        lines.append(f"  ... {report['count'] - len(report['occurrences'])} more occurrences (--limit)")
    lines.append("cumulative exposures before each export step: " +
                 ", ".join(f"{r['step']}: {r['exposures']}" for r in report["exposures_by_step"]))
    return "\n".join(lines)


def find_main(argv: list[str]) -> None:
    parser = HfArgumentParser(FindArgs, allow_abbrev=False)
    args, overrides = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if args.run_dir and not Path(args.run_dir).is_dir():
        raise UserError(f"run_dir {args.run_dir} does not exist")
    cfg = resolve_config(args.config, args.run_dir, overrides)
    data_dir = args.data_dir or cfg.data_dir
    if not data_dir or not Path(data_dir).is_dir():
        raise UserError(f"data_dir {data_dir} does not exist" if data_dir else "--data_dir is required")
    if args.limit < 0 or args.context < 0:
        raise UserError("--limit and --context must be >= 0")
    ids = query_ids(args.text, args.token_ids, cfg.seq_len + 1)
    losses = None
    if args.run_dir:
        from training.sequence_losses import read_sequence_losses

        check_run_matches(Path(args.run_dir), Path(data_dir))
        losses = read_sequence_losses(args.run_dir)
    index = TraceIndex(data_dir, args.index_dir)
    report = find(index, cfg, ids, args.until_step, args.limit, args.context, losses)
    report = {"text": args.text, **report, "leading_space_variant": None}
    if args.text is not None and not args.text.startswith(" "):
        variant = encode(" " + args.text)
        if len(variant) <= cfg.seq_len + 1:
            report["leading_space_variant"] = {"text": " " + args.text, "token_ids": variant,
                                               "count": len(index.positions(variant))}
    print(json.dumps(report, indent=1) if args.json else format_find(report))


# ----------------------------------------------------------------------------------------------------------------
# curve
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class CurveArgs:
    text: str = field(metadata={"help": "text whose loss to follow over the checkpoints"})
    run_dir: str | None = field(default=None, metadata={"help": "run folder: its hf/step_N exports"})
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
        if not (Path(run_dir) / rd.TRAINING_CONFIG).is_file():
            raise UserError(f"{run_dir} is not a run folder (no {rd.TRAINING_CONFIG})")
        found = [(s, f"hf/{p.name}", {"pretrained_model_name_or_path": str(p)})
                 for s, p in rd.list_step_dirs(Path(run_dir) / rd.HF_EXPORTS)]
        final = Path(run_dir) / rd.HF_EXPORTS / rd.FINAL
        if (final / "export_info.json").is_file():  # the last step, when it is not also an hf/step_N export
            step = rd.read_json(final / "export_info.json")["step"]
            if step not in {s for s, _, _ in found}:
                found.append((step, f"hf/{rd.FINAL}", {"pretrained_model_name_or_path": str(final)}))
    else:
        from modeling.hub_branches import step_branches

        found = [(s, name, {"pretrained_model_name_or_path": repo_id, "revision": name})
                 for s, name in step_branches(repo_id)]
    if not found:
        raise UserError(f"no exported checkpoints (hf/step_N or step{{N}} branches) in {run_dir or repo_id}")
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
    ax.set_xlabel("step (checkpoint hf/step_N)")
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
    sampler = WindowSampler(index.split.num_tokens, cfg.seq_len, cfg.global_batch_size, cfg.seed)
    exposures = exposures_of(index.positions(ids), len(ids), sampler, cfg.total_steps())
    return lambda step: int(exposures.before([step])[0])


def curve_main(argv: list[str]) -> None:
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


# ----------------------------------------------------------------------------------------------------------------


def index_main(argv: list[str]) -> None:
    args = HfArgumentParser(IndexArgs, allow_abbrev=False).parse_args_into_dataclasses(args=argv)[0]
    data_dir = Path(args.data_dir)
    if not (data_dir / MANIFEST).is_file():
        raise UserError(f"{data_dir} is not a data_dir (no {MANIFEST}): make it with `python -m training.prepare_data`")
    if args.num_proc < 1 or args.mem_gb < 1:
        raise UserError("--num_proc and --mem_gb must be >= 1")
    output_dir = Path(args.output_dir) if args.output_dir else data_dir / INDEX_DIR
    out = build_index(data_dir, output_dir, args.num_proc, args.mem_gb, args.shards, args.shard_ids)
    if out is None:
        print(f"built shards {args.shard_ids} of {args.shards} in {build_folder(output_dir)};"
              f" when every machine is done, run `python -m training.trace index` with the same --shards and no "
              f"--shard_ids to finish the index")
        return
    info = json.loads((out / INDEX_INFO).read_text())
    print(f"index of {info['num_tokens']:,} tokens in {len(info['shards'])} shard(s) at {out} "
          f"({sum(info['files'].values()):,} bytes)")


COMMANDS = {"index": index_main, "find": find_main, "curve": curve_main}


@cli_main
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        raise UserError(f"usage: python -m training.trace {{{'|'.join(COMMANDS)}}} ... (got {argv[:1] or 'nothing'})")
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
