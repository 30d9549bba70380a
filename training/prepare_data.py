"""Prepare a text dataset for training: GPT-2 token ids in nanoGPT's uint16 format, a document index, a manifest.

    python -m training.prepare_data --output_dir data/owt                       # OpenWebText, pinned (see below)
    python -m training.prepare_data --output_dir data/owt --streaming           # same bytes, no Arrow cache
    python -m training.prepare_data --dataset json --data_files 'my/*.jsonl' --output_dir data/mine
    (console script: gpt2-owt-prepare)

Output (layout in training/data_dir.py): train.bin / val.bin (uint16 ids, every document followed by EOT 50256),
{split}.docs.npy (token offset of every document), {split}.rows.npy (source row of every document), manifest.json
(training/manifest.py; `python -m training.manifest verify --data_dir D` re-checks it).

What it computes -- exactly nanoGPT's data/openwebtext/prepare.py:
  * the split of `datasets.Dataset.train_test_split(test_size=val_fraction, seed=seed, shuffle=True)` ("test" is
    our "val"): n_val = ceil(val_fraction * n), permutation = np.random.default_rng(seed).permutation(n),
    val = permutation[:n_val], train = permutation[n_val:]; documents are written in that order;
  * per document: tiktoken GPT-2 `encode_ordinary(text) + [50256]` (special-token text in a document is plain text).
    The tiktoken encoding is built from this package's shipped vocab/merges (`modeling.tiktoken_encoding()`), and
    its ids are tested identical to the shipped HF tokenizer's.

How (constant memory in the number of tokens, one sequential read of the source):
  1. tokenize in source order: batches of the text column (read as Arrow record batches, sent as str lists) go to
     `num_proc` worker processes (bounded window of in-flight batches, results taken in order); ids are appended to
     a temp token file, lengths to a temp length file. Non-streaming sources are read from the Arrow cache files with a buffered reader, not a memory
     map, so resident memory does not grow with the corpus.
  2. split + gather: draw the train_test_split permutation, then copy every document's ids from the temp file into
     train.bin / val.bin in split order (pread + buffered write, sha256 computed on the way).
  Memory: a few batches of text/ids plus O(documents) int64 arrays (permutation, offsets: ~64 MB each for the
  8,013,769 OpenWebText documents). Disk: the temp token file and the outputs coexist until the end (~2x the token
  bytes, ~36 GB for OpenWebText), plus unless --streaming the `datasets` download (~24 GB of parquet) and Arrow
  cache (~40 GB: dataset_size 39,769,491,688 bytes on the dvruette/openwebtext card).
  Everything is written into a temp folder next to --output_dir and renamed into place at the end: an interrupted
  or failed run leaves only a `.NAME.partial-*` folder (deleted on errors), never a folder that looks complete.

Default source -- why this one. `Skylion007/openwebtext` (8,013,769 documents) is a loading-script repo on `main`
(openwebtext.py + subsets/*.tar), which `datasets` >= 4 refuses ("Dataset scripts are no longer supported"). The
Hub's parquet auto-converter (`refs/convert/parquet`) exports at most a first ~5 GB `partial-train` of a corpus this
size (as on mirrors of it, e.g. sytelus/openwebtext `default/partial-train`), and community mirrors are copies
made by others. The dataset's author pushed a full parquet conversion as pull request #18 ("convert-parquet-full":
README gains the dataset_info, subsets/*.tar become `data/train-000NN-of-00093.parquet`, 93 shards) in two
commits: 4330e67011bbb5fbed5b6bc477cd384094631255 (part 00000: shards 0-49) and
963532436460638ab26b7633e23776e6c7e37d59 (part 00001: shards 50-92, README +21 -2, the PR's file list). A PR
branch can still be rewritten, so we pin that second commit, not `refs/pr/18`, and read the shards through the
`parquet` builder with `hf://datasets/Skylion007/openwebtext@<commit>/data/train-*-of-00093.parquet` URLs: this
works whether or not the commit still carries `openwebtext.py`. (An 80-shard variant of the same upload sits on
another PR branch, commits bf350c8 / 7577b918bd30b25df0b88bb718dc8a6c80cb619b; pass it with --revision and
--data_files 'data/train-*-of-00080.parquet'.) The pinned copy could not be downloaded from this machine (no Hub
access), so its completeness is enforced at run time: a run of a known OpenWebText source that sees other than
8,013,769 documents stops with an error unless --allow_partial (recorded in the manifest).
"""

import contextlib
import glob
import hashlib
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import numpy as np
from tqdm import tqdm

from modeling import EOT_TOKEN_ID, UserError, VOCAB_SIZE, cli_main, tiktoken_encoding, tokenizer_fingerprint
from modeling.records import package_versions
from training import manifest as manifest_lib
from training.data_dir import MANIFEST, TOKEN_DTYPE, doc_offsets_file, doc_rows_file, tokens_file

OPENWEBTEXT = "Skylion007/openwebtext"
OPENWEBTEXT_REVISION = "963532436460638ab26b7633e23776e6c7e37d59"  # PR #18 head: all 93 parquet shards
OPENWEBTEXT_DATA_FILES = ["data/train-*-of-00093.parquet"]
# Completeness guard: sources whose full size is known (source id -> documents). dvruette/openwebtext is a
# community parquet mirror whose card declares num_examples 8,013,769.
EXPECTED_DOCUMENTS = {OPENWEBTEXT: 8_013_769, "dvruette/openwebtext": 8_013_769}

SCRIPT_ERROR = "Dataset scripts are no longer supported"
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
BUILDER_BY_EXTENSION = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".txt": "text", ".csv": "csv",
                        ".arrow": "arrow"}
GATHER_CHUNK_DOCS = 8192  # documents copied per write in the gather pass


def default_num_proc() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class PrepareArgs:
    output_dir: str = field(metadata={"help": "folder to create (train.bin, val.bin, document index, manifest.json)"})
    dataset: str = field(default=OPENWEBTEXT, metadata={
        "help": "Hub dataset id, local folder, or a datasets builder (json, parquet, text, csv, arrow) used with "
                "--data_files"})
    dataset_config: str | None = field(default=None, metadata={"help": "dataset config name (load_dataset `name`)"})
    revision: str | None = field(default=None, metadata={
        "help": f"Hub revision (commit, branch, tag); default for {OPENWEBTEXT}: {OPENWEBTEXT_REVISION}"})
    data_files: list[str] | None = field(default=None, metadata={
        "help": f"files or globs (for a Hub id: paths inside the repo); default for {OPENWEBTEXT}: "
                f"{' '.join(OPENWEBTEXT_DATA_FILES)}"})
    split: str = field(default="train", metadata={"help": "split of the source to prepare (it is then re-split)"})
    text_column: str = field(default="text", metadata={"help": "column holding the document text"})
    val_fraction: float = field(default=0.0005, metadata={"help": "train_test_split test_size, in (0, 1)"})
    seed: int = field(default=2357, metadata={"help": "train_test_split seed (nanoGPT: 2357)"})
    num_proc: int = field(default_factory=default_num_proc, metadata={"help": "tokenizer worker processes"})
    batch_size: int = field(default=1024, metadata={"help": "documents per tokenizer task"})
    streaming: bool = field(default=False, metadata={"help": "stream the source instead of building the Arrow cache"})
    allow_partial: bool = field(default=False, metadata={
        "help": "accept a known corpus (OpenWebText) with another document count; recorded in the manifest"})
    overwrite: bool = field(default=False, metadata={"help": "replace an --output_dir holding a different dataset"})
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache folder (default: HF_DATASETS_CACHE)"})


# ---------------------------------------------------------------------------------------------------------------
# The source: what to load and how
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Source:
    dataset: str  # what the user named (source id in the manifest)
    dataset_config: str | None
    revision: str | None
    data_files: list[str] | None  # as given (patterns)
    split: str
    load_path: str  # first argument of load_dataset
    load_data_files: list[str] | None  # what load_dataset receives
    expected_documents: int | None

    def describe(self) -> str:
        return self.dataset + (f"@{self.revision}" if self.revision else "")


def builder_for(patterns: list[str]) -> str:
    """The datasets builder for Hub data files, from their extension (compression suffixes ignored)."""
    builders = set()
    for pattern in patterns:
        name = re.sub(r"\.(gz|bz2|xz|zst|lz4)$", "", pattern.lower())
        builders.add(BUILDER_BY_EXTENSION.get(os.path.splitext(name)[1]))
    if len(builders) != 1 or None in builders:
        raise UserError(f"cannot tell the file format of --data_files {patterns}: use one of "
                        f"{sorted(BUILDER_BY_EXTENSION)}, or name the builder with --dataset json/parquet/...")
    return builders.pop()


def resolve_source(args: PrepareArgs) -> Source:
    """Turn the flags into load_dataset arguments; the OpenWebText defaults apply only to the OpenWebText id."""
    revision, data_files = args.revision, args.data_files
    if args.dataset == OPENWEBTEXT:
        revision = revision or OPENWEBTEXT_REVISION
        data_files = data_files or list(OPENWEBTEXT_DATA_FILES)
    load_path, load_files = args.dataset, data_files
    if revision and (os.path.exists(args.dataset) or not HUB_ID.match(args.dataset)):
        raise UserError(f"--revision applies to Hub datasets only, not to --dataset {args.dataset}")
    if os.path.exists(args.dataset):
        if data_files:  # patterns are relative to the folder, as datasets resolves them
            missing = [p for p in data_files if not glob.glob(os.path.join(args.dataset, p))]
            if missing:
                raise UserError(f"no file in {args.dataset} matches --data_files {' '.join(missing)}")
    elif HUB_ID.match(args.dataset):
        if data_files:  # read the files with their builder: works even where the repo still has a loading script
            if args.dataset_config:
                raise UserError("--dataset_config does not combine with --data_files for a Hub dataset: the files "
                                "already select the data")
            rev = quote(revision or "main", safe="")
            load_path = builder_for(data_files)
            load_files = [f"hf://datasets/{args.dataset}@{rev}/{p.lstrip('/')}" for p in data_files]
    elif "/" in args.dataset or args.dataset.startswith("."):
        raise UserError(f"--dataset {args.dataset} not found (neither a local path nor a Hub id `owner/name`)")
    else:  # a packaged builder: json, parquet, text, csv, arrow
        if not data_files:
            raise UserError(f"--dataset {args.dataset} needs --data_files")
        missing = [p for p in data_files if "://" not in p and not glob.glob(p)]
        if missing:
            raise UserError(f"no file matches --data_files {' '.join(missing)}")
    return Source(dataset=args.dataset, dataset_config=args.dataset_config, revision=revision, data_files=data_files,
                  split=args.split, load_path=load_path, load_data_files=load_files,
                  expected_documents=EXPECTED_DOCUMENTS.get(args.dataset))


def load_source(src: Source, streaming: bool, num_proc: int, cache_dir: str | None):
    """load_dataset(...) for the source, with its errors turned into one-line UserErrors."""
    import datasets
    from datasets.exceptions import DatasetGenerationError, DatasetNotFoundError
    from huggingface_hub.errors import HfHubHTTPError

    kwargs = dict(name=src.dataset_config, data_files=src.load_data_files, split=src.split, cache_dir=cache_dir,
                  streaming=streaming)
    if src.load_path == src.dataset and src.revision:
        kwargs["revision"] = src.revision
    if not streaming and num_proc > 1:  # download + Arrow conversion per shard in parallel; row order is kept
        kwargs["num_proc"] = num_proc
    try:
        return datasets.load_dataset(src.load_path, **kwargs)
    except RuntimeError as e:
        if SCRIPT_ERROR not in str(e):
            raise
        raise UserError(
            f"{src.describe()} is a script-based dataset ({e}), which datasets>=4 cannot load. Point at its data "
            f"files instead: --data_files 'data/*.parquet' (paths inside the repo; a PR branch or commit with a "
            f"parquet conversion via --revision, e.g. refs/convert/parquet), or --dataset parquet --data_files "
            f"'hf://datasets/{src.dataset}@REVISION/PATH/*.parquet'") from None
    except StopIteration:  # datasets' json/csv builders raise it for empty files
        raise UserError(f"{src.describe()} has no documents (empty data files?)") from None
    except (FileNotFoundError, DatasetNotFoundError, DatasetGenerationError, HfHubHTTPError, ValueError) as e:
        reason = first_line(e)
        if e.__cause__ is not None:  # DatasetGenerationError wraps the real reason
            reason += f" ({type(e.__cause__).__name__}: {first_line(e.__cause__)})"
        raise UserError(f"could not load {src.describe()}: {reason}") from None
    except Exception as e:
        if not is_network_error(e):
            raise
        raise UserError(f"cannot reach the Hugging Face Hub for {src.describe()} ({type(e).__name__}: "
                        f"{first_line(e)}); check the network, HF_ENDPOINT and HF_HUB_OFFLINE, or prepare local "
                        f"copies with --dataset parquet --data_files ...") from None


def first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def is_network_error(e: BaseException) -> bool:
    """Connection failures, whichever HTTP stack raised them (huggingface_hub: httpx; fsspec: aiohttp)."""
    root_module = type(e).__module__.split(".")[0]
    return isinstance(e, ConnectionError) or root_module.startswith(("httpx", "httpcore", "aiohttp", "requests"))


# ---------------------------------------------------------------------------------------------------------------
# Pass 1: tokenize in source order
# ---------------------------------------------------------------------------------------------------------------


def _string_column(batch, column: str):
    """The text column of an Arrow batch/table, checked: present, string typed, no nulls."""
    import pyarrow as pa

    if column not in batch.schema.names:
        raise UserError(f"no column {column!r} in the dataset (columns: {', '.join(batch.schema.names)}); "
                        f"use --text_column")
    array = batch.column(column)
    kind = array.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        raise UserError(f"column {column!r} holds {kind} values, not strings")
    return array


def arrow_batches(dataset, column: str, batch_size: int, whole_cache_files: bool = True):
    """Arrow arrays of the text column, `batch_size` rows each, in source row order.

    A non-streaming Dataset straight from load_dataset (a plain split name, no slicing) is its Arrow cache files in
    order; they are read with a buffered stream reader rather than through the memory map, because every mapped
    page read would count as resident memory until the end (tens of GB for OpenWebText).
    """
    import pyarrow as pa
    from datasets import IterableDataset

    if isinstance(dataset, IterableDataset) or not dataset.cache_files or not whole_cache_files:
        for table in dataset.with_format("arrow").iter(batch_size=batch_size):
            yield _string_column(table, column)
        return
    rows_seen = 0
    for cache_file in dataset.cache_files:
        with pa.OSFile(cache_file["filename"]) as f:
            for record_batch in pa.ipc.open_stream(f):
                array = _string_column(record_batch, column)
                for start in range(0, len(array), batch_size):
                    yield array.slice(start, batch_size)
                rows_seen += len(record_batch)
    if rows_seen != len(dataset):
        raise RuntimeError(f"read {rows_seen} rows from the Arrow cache of a dataset of {len(dataset)} rows")


_ENCODING = None


def _init_encoder():
    global _ENCODING
    if _ENCODING is None:  # built once in the parent: forked workers inherit it instead of rebuilding it
        _ENCODING = tiktoken_encoding()


def encode_documents(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """ids (uint16, `encode_ordinary(doc) + [EOT]` back to back) and per-document token counts of a batch."""
    _init_encoder()
    docs = [_ENCODING.encode_ordinary(text) for text in texts]
    lengths = np.fromiter((len(d) + 1 for d in docs), dtype=np.int64, count=len(docs))
    ids = np.empty(int(lengths.sum()), dtype=TOKEN_DTYPE)
    end = 0
    for d in docs:
        ids[end:end + len(d)] = d
        end += len(d)
        ids[end] = EOT_TOKEN_ID
        end += 1
    return ids, lengths


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _worker_init(initializer):
    # Forked with SIGTERM/SIGINT at their default disposition and blocked (see forked_with_default_signals): unblock
    # them only now, so a signal that arrived during start-up is delivered here, with the default action (exit).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    initializer()


@contextlib.contextmanager
def forked_with_default_signals():
    """Fork inside this block to give the children default SIGTERM/SIGINT dispositions, race-free.

    Forked children inherit the parent's Python signal handlers. A handler that only sets a flag (a trainer run
    earlier in the same process, a notebook) makes a child ignore SIGTERM, and Pool.terminate() then waits for it
    forever; resetting the handler in the child's initializer leaves a window between fork and reset. Instead the
    parent blocks both signals, sets them to SIG_DFL, forks, and restores its handlers before unblocking: the
    children start with the default action (and the signals still blocked until `_worker_init`), and a signal sent
    to the parent meanwhile is deferred to its own handler, not lost.
    """
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    previous = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
    try:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)


def ordered_parallel_map(fn, items, num_proc: int, initializer):
    """fn over items in `num_proc` processes, results in input order, at most 2*num_proc items in flight.

    Pool.imap would do the ordering, but its feeder thread drains the input iterator as fast as it can (no
    backpressure): with a 40 GB corpus it would pull the whole corpus into the task queue. After the last result
    the pool is closed and joined (workers exit on their own); it is terminated only on an error or an early exit.
    """
    initializer()
    if num_proc <= 1:
        yield from map(fn, items)
        return
    import multiprocessing

    with forked_with_default_signals():
        pool = multiprocessing.get_context("fork").Pool(num_proc, initializer=_worker_init, initargs=(initializer,))
    finished = False
    try:
        pending = deque()
        for item in items:
            pending.append(pool.apply_async(fn, (item,)))
            if len(pending) >= 2 * num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
        finished = True
    finally:
        if finished:
            pool.close()
        else:
            pool.terminate()
        pool.join()


def check_null_free(array, first_row: int, column: str) -> None:
    if array.null_count:
        import pyarrow.compute as pc

        row = first_row + int(pc.index(array.is_null(), True).as_py())
        raise UserError(f"row {row} of column {column!r} is null, not a string")


@dataclass
class SourceTokens:
    tokens_path: Path  # uint16 ids of all documents in source order
    lengths_path: Path  # int64 tokens per document, source order
    documents: int
    tokens: int


def tokenize_source(dataset, column: str, out_dir: Path, num_proc: int, batch_size: int, total: int | None,
                    whole_cache_files: bool) -> SourceTokens:
    tokens_path, lengths_path = out_dir / "source.tokens.tmp", out_dir / "source.lengths.tmp"
    documents = tokens = 0
    started = time.perf_counter()

    def checked_batches():
        row = 0
        for array in arrow_batches(dataset, column, batch_size, whole_cache_files):
            check_null_free(array, row, column)
            row += len(array)
            yield array.to_pylist()  # workers get plain str lists: they never touch Arrow state forked from here

    bar = tqdm(total=total, desc="tokenize", unit="doc", unit_scale=True, dynamic_ncols=True, mininterval=1.0)
    with open(tokens_path, "wb") as f_tokens, open(lengths_path, "wb") as f_lengths, bar:
        for ids, lengths in ordered_parallel_map(encode_documents, checked_batches(), num_proc, _init_encoder):
            ids.tofile(f_tokens)
            lengths.tofile(f_lengths)
            documents += len(lengths)
            tokens += len(ids)
            bar.update(len(lengths))
            rate = tokens / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix_str(f"{tokens / 1e6:,.1f}M tokens, {rate / 1e6:.2f}M tok/s", refresh=False)
    return SourceTokens(tokens_path, lengths_path, documents, tokens)


# ---------------------------------------------------------------------------------------------------------------
# Pass 2: split and gather
# ---------------------------------------------------------------------------------------------------------------


def split_rows(num_documents: int, val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Source rows of each split, in split order: `Dataset.train_test_split(val_fraction, seed=seed, shuffle=True)`."""
    n_val = math.ceil(val_fraction * num_documents)  # datasets: n_test = ceil(test_size * n_samples)
    if num_documents - n_val < 1:
        raise UserError(f"{num_documents} documents with --val_fraction {val_fraction} leave no training document")
    permutation = np.random.default_rng(seed).permutation(num_documents)
    return {"train": permutation[n_val:], "val": permutation[:n_val]}


def gather_split(split: str, rows: np.ndarray, source: SourceTokens, source_offsets: np.ndarray,
                 out_dir: Path) -> dict:
    """Write `split`'s token file and document index (documents in `rows` order); return counts and token sha256."""
    lengths = source_offsets[rows + 1] - source_offsets[rows]
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    np.save(out_dir / doc_offsets_file(split), offsets)
    np.save(out_dir / doc_rows_file(split), rows.astype(np.int64))
    itemsize = np.dtype(TOKEN_DTYPE).itemsize
    digest = hashlib.sha256()
    bar = tqdm(total=len(rows), desc=f"write {tokens_file(split)}", unit="doc", unit_scale=True, mininterval=1.0)
    with open(source.tokens_path, "rb") as f_src, open(out_dir / tokens_file(split), "wb") as f_out, bar:
        fd = f_src.fileno()
        for start in range(0, len(rows), GATHER_CHUNK_DOCS):
            chunk = rows[start:start + GATHER_CHUNK_DOCS]
            data = b"".join(os.pread(fd, int(source_offsets[r + 1] - source_offsets[r]) * itemsize,
                                     int(source_offsets[r]) * itemsize) for r in chunk)
            f_out.write(data)
            digest.update(data)
            bar.update(len(chunk))
    return {"documents": int(len(rows)), "tokens": int(offsets[-1]), "sha256": digest.hexdigest()}


# ---------------------------------------------------------------------------------------------------------------
# The output folder: refuse to clobber, build aside, rename into place
# ---------------------------------------------------------------------------------------------------------------


def identity(manifest: dict) -> dict:
    """What makes two data_dirs the same dataset (not: counts, times, versions, how it was read)."""
    src = manifest["source"]
    return {"source": {k: src[k] for k in ("dataset", "dataset_config", "revision", "data_files", "split",
                                           "text_column")},
            "split": manifest["split"], "tokenizer": manifest["tokenizer"]["fingerprint"]}


def check_output_dir(output_dir: Path, wanted: dict, overwrite: bool) -> bool:
    """True if `output_dir` already holds exactly this dataset (verified); UserError if it holds something else."""
    if not output_dir.exists():
        return False
    if not output_dir.is_dir():
        raise UserError(f"--output_dir {output_dir} exists and is not a folder")
    if not any(output_dir.iterdir()) or overwrite:
        return False
    if not (output_dir / MANIFEST).is_file():
        raise UserError(f"--output_dir {output_dir} holds files but no {MANIFEST} (not a finished data_dir); "
                        f"pass --overwrite to replace it or choose another folder")
    existing = manifest_lib.read_manifest(output_dir)
    if identity(existing) != wanted:
        raise UserError(f"--output_dir {output_dir} already holds a different dataset "
                        f"({existing['source']['dataset']}, val_fraction {existing['split']['test_size']}, "
                        f"seed {existing['split']['seed']}); pass --overwrite to replace it or choose another folder")
    manifest_lib.verify_data_dir(output_dir)
    return True


def install(tmp_dir: Path, output_dir: Path) -> None:
    """Rename the finished temp folder to `output_dir`, replacing what was there (already cleared by the checks)."""
    old = None
    if output_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
        output_dir.rename(old / "previous")
    tmp_dir.rename(output_dir)
    if old is not None:
        shutil.rmtree(old)


# ---------------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------------


def check_completeness(src: Source, documents: int, allow_partial: bool) -> None:
    if src.expected_documents is None or documents == src.expected_documents:
        return
    message = (f"{src.describe()} yielded {documents:,} documents, but the full corpus has "
               f"{src.expected_documents:,}: this copy is incomplete or a different one")
    if not allow_partial:
        raise UserError(message + "; use a complete copy, or pass --allow_partial to prepare it anyway "
                                  "(recorded in the manifest)")
    print(f"warning: {message} (--allow_partial: preparing it anyway)", file=sys.stderr)


def tokenizer_info() -> dict:
    import tiktoken

    return {"fingerprint": tokenizer_fingerprint(), "engine": f"tiktoken {tiktoken.__version__} encode_ordinary",
            "eot_token_id": EOT_TOKEN_ID, "vocab_size": VOCAB_SIZE, "dtype": np.dtype(TOKEN_DTYPE).name,
            "eot_after_every_document": True}


def split_info(args: PrepareArgs) -> dict:
    return {"method": "datasets.Dataset.train_test_split", "test_size": args.val_fraction, "seed": args.seed,
            "shuffle": True, "val_is": "test"}


def source_info(src: Source, args: PrepareArgs, documents: int) -> dict:
    return {"dataset": src.dataset, "dataset_config": src.dataset_config, "revision": src.revision,
            "data_files": src.data_files, "split": src.split, "text_column": args.text_column,
            "load_dataset": {"path": src.load_path, "data_files": src.load_data_files},
            "streaming": args.streaming, "documents": documents, "expected_documents": src.expected_documents,
            "allow_partial": args.allow_partial,
            "complete": None if src.expected_documents is None else documents == src.expected_documents}


def make_temp_dir(output_dir: Path) -> Path:
    """An empty folder next to `output_dir` (same filesystem, so the final rename is atomic)."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in sorted(output_dir.parent.glob(f".{output_dir.name}.partial-*")):
        print(f"note: {stale} is left from an interrupted run (killed before it could clean up); delete it to "
              f"free its disk space", file=sys.stderr)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp_dir.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the data_dir gets the usual folder permissions
    return tmp_dir


def write_data_dir(tmp_dir: Path, dataset, src: Source, args: PrepareArgs, total: int | None,
                   command: list[str]) -> dict:
    """Tokenize, split, gather and write the manifest into `tmp_dir`; return the manifest."""
    source = tokenize_source(dataset, args.text_column, tmp_dir, args.num_proc, args.batch_size,
                             total if total is not None else src.expected_documents,  # streaming: known size
                             whole_cache_files=re.fullmatch(r"[\w.-]+", args.split) is not None)
    if source.documents == 0:
        raise UserError(f"{src.describe()} has no documents")
    check_completeness(src, source.documents, args.allow_partial)
    source_offsets = np.zeros(source.documents + 1, dtype=np.int64)
    np.cumsum(np.fromfile(source.lengths_path, dtype=np.int64), out=source_offsets[1:])
    splits = {name: gather_split(name, rows, source, source_offsets, tmp_dir)
              for name, rows in split_rows(source.documents, args.val_fraction, args.seed).items()}
    source.tokens_path.unlink()
    source.lengths_path.unlink()
    manifest = {
        "format": manifest_lib.FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "source": source_info(src, args, source.documents),
        "split": split_info(args),
        "tokenizer": tokenizer_info(),
        "splits": {name: {"documents": s["documents"], "tokens": s["tokens"]} for name, s in splits.items()},
        "files": manifest_lib.file_entries(tmp_dir, {tokens_file(n): s["sha256"] for n, s in splits.items()}),
        "versions": package_versions(manifest_lib.VERSIONED_PACKAGES),
    }
    manifest_lib.write_manifest(tmp_dir, manifest)
    return manifest


def prepare(args: PrepareArgs, command: list[str] | None = None) -> Path:
    """Run the whole preparation; return the finished data_dir."""
    if not 0.0 < args.val_fraction < 1.0:
        raise UserError(f"--val_fraction must be in (0, 1), got {args.val_fraction}")
    if args.batch_size < 1 or args.num_proc < 1:
        raise UserError("--batch_size and --num_proc must be >= 1")
    output_dir = Path(args.output_dir)
    src = resolve_source(args)
    wanted = identity({"source": source_info(src, args, 0), "split": split_info(args), "tokenizer": tokenizer_info()})
    if check_output_dir(output_dir, wanted, args.overwrite):
        print(f"{output_dir} already holds this dataset and matches its manifest: nothing to do")
        return output_dir

    dataset = load_source(src, args.streaming, args.num_proc, args.cache_dir)
    total = None if args.streaming else len(dataset)
    if total == 0:
        raise UserError(f"{src.describe()} has no documents")
    if total is not None:  # fail before tokenizing when the count is already known
        check_completeness(src, total, args.allow_partial)

    tmp_dir = make_temp_dir(output_dir)
    try:
        manifest = write_data_dir(tmp_dir, dataset, src, args, total, command or sys.argv)
        install(tmp_dir, output_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    counts = ", ".join(f"{n}: {s['documents']:,} docs / {s['tokens']:,} tokens" for n, s in manifest["splits"].items())
    print(f"wrote {output_dir} ({counts})")
    return output_dir


@cli_main
def main(argv: list[str] | None = None) -> Path:
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    (args,) = HfArgumentParser(PrepareArgs).parse_args_into_dataclasses(args=argv)
    return prepare(args, command=["python", "-m", "training.prepare_data", *argv])


if __name__ == "__main__":
    main()
