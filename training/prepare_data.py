"""Prepare a text dataset for training: GPT-2 token ids in nanoGPT's uint16 format, a document index, a manifest.

    gpt2-owt prepare --output_dir data/owt                       # OpenWebText, pinned (see below)
    gpt2-owt prepare --output_dir data/owt --streaming           # same bytes, no Arrow cache
    gpt2-owt prepare --dataset json --data_files 'my/*.jsonl' --output_dir data/mine
    (console script: gpt2-owt-prepare)

Output (layout in training/data_dir.py): train.bin / val.bin (uint16 ids, every document followed by EOT 50256),
{split}.docs.npy (token offset of every document), {split}.rows.npy (source row of every document), manifest.json
(training/manifest.py; `gpt2-owt verify-data --data_dir D` re-checks it).

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
  Everything is written into a temp folder next to --output_dir and renamed into place at the end (the output
  guard's atomic_output): an error, Ctrl-C or SIGTERM deletes the `.NAME.partial-*` folder, one left by a killed run
  (SIGKILL) is deleted by the next run, and a folder named --output_dir is always complete.

Where the pieces live (training/prepare/): source.py (what to load, reading the text column), tokenize.py (pass 1,
the worker pool), split.py (the split rule), output.py (guards on --output_dir, pass 2, installing the folder).
This module is the command: flags, the order of the steps, status logging (`--quiet` / `--verbose`), the result.

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


import logging
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from gpt2_owt.core.args import command_argv, parse
from gpt2_owt.core.errors import UserError, cli_main
from gpt2_owt.core.output_paths import atomic_output
from gpt2_owt.core.records import package_versions
from gpt2_owt.modeling.tokenizer import EOT_TOKEN_ID, VOCAB_SIZE, tokenizer_fingerprint
from gpt2_owt.training import manifest as manifest_lib
from gpt2_owt.training.data_dir import TOKEN_DTYPE, tokens_file
from gpt2_owt.training.prepare.output import check_output_dir, gather_split, identity, named_write_errors
from gpt2_owt.training.prepare.source import (OPENWEBTEXT, OPENWEBTEXT_DATA_FILES, OPENWEBTEXT_REVISION, Source, load_source,
                                     resolve_source, text_batches)
from gpt2_owt.training.prepare.split import split_info, split_rows
from gpt2_owt.training.prepare.tokenize import tokenize_source

logger = logging.getLogger("training.prepare_data")  # also when run as __main__


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
    # numpy's generator (split_rows) takes only a non-negative seed: refused here, as the flag is parsed
    seed: int = field(default=2357, metadata={"help": "train_test_split seed (nanoGPT: 2357)", "ge": 0})
    num_proc: int = field(default_factory=default_num_proc, metadata={"help": "tokenizer worker processes"})
    batch_size: int = field(default=1024, metadata={"help": "documents per tokenizer task"})
    streaming: bool = field(default=False, metadata={"help": "stream the source instead of building the Arrow cache"})
    allow_partial: bool = field(default=False, metadata={
        "help": "accept a known corpus (OpenWebText) with another document count; recorded in the manifest"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace an --output_dir that prepare_data made (it has a manifest.json) holding another dataset"})
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache folder (default: HF_DATASETS_CACHE)"})
    quiet: bool = field(default=False, metadata={"help": "only warnings, errors and the result (no progress bars)"})
    verbose: bool = field(default=False, metadata={"help": "debug logging, also from datasets"})


# ---------------------------------------------------------------------------------------------------------------
# Manifest records
# ---------------------------------------------------------------------------------------------------------------


def tokenizer_info() -> dict:
    import tiktoken

    return {"fingerprint": tokenizer_fingerprint(), "engine": f"tiktoken {tiktoken.__version__} encode_ordinary",
            "eot_token_id": EOT_TOKEN_ID, "vocab_size": VOCAB_SIZE, "dtype": np.dtype(TOKEN_DTYPE).name,
            "eot_after_every_document": True}


def source_info(src: Source, args: PrepareArgs, documents: int) -> dict:
    return {"dataset": src.dataset, "dataset_config": src.dataset_config, "revision": src.revision,
            "data_files": src.data_files, "split": src.split, "text_column": args.text_column,
            "load_dataset": {"path": src.load_path, "data_files": src.load_data_files},
            "streaming": args.streaming, "documents": documents, "expected_documents": src.expected_documents,
            "allow_partial": args.allow_partial,
            "complete": None if src.expected_documents is None else documents == src.expected_documents}


def check_completeness(src: Source, documents: int, allow_partial: bool) -> None:
    if src.expected_documents is None or documents == src.expected_documents:
        return
    message = (f"{src.describe()} yielded {documents:,} documents, but the full corpus has "
               f"{src.expected_documents:,}: this copy is incomplete or a different one")
    if not allow_partial:
        raise UserError(message + "; use a complete copy, or pass --allow_partial to prepare it anyway "
                                  "(recorded in the manifest)")
    logger.warning(f"{message} (--allow_partial: preparing it anyway)")


# ---------------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------------


def write_data_dir(tmp_dir: Path, dataset, src: Source, args: PrepareArgs, total: int | None,
                   command: list[str]) -> dict:
    """Tokenize, split, gather and write the manifest into `tmp_dir`; return the manifest."""
    progress = not args.quiet
    logger.info(f"tokenizing {src.describe()} with {args.num_proc} worker process(es) into {tmp_dir}")
    batches = text_batches(dataset, src, args.text_column, args.batch_size,
                           whole_cache_files=re.fullmatch(r"[\w.-]+", args.split) is not None)
    source = tokenize_source(batches, tmp_dir, args.num_proc,
                             total if total is not None else src.expected_documents,  # streaming: known size
                             progress=progress)
    if source.documents == 0:
        raise UserError(f"{src.describe()} has no documents")
    check_completeness(src, source.documents, args.allow_partial)
    logger.info(f"tokenized {source.documents:,} documents into {source.tokens:,} tokens; writing the splits")
    source_offsets = np.zeros(source.documents + 1, dtype=np.int64)
    np.cumsum(np.fromfile(source.lengths_path, dtype=np.int64), out=source_offsets[1:])
    splits = {name: gather_split(name, rows, source, source_offsets, tmp_dir, progress=progress)
              for name, rows in split_rows(source.documents, args.val_fraction, args.seed).items()}
    source.tokens_path.unlink()
    source.lengths_path.unlink()
    logger.info("hashing the document index and writing manifest.json")
    manifest = {
        "format": manifest_lib.FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "source": source_info(src, args, source.documents),
        "split": split_info(args.val_fraction, args.seed),
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
    wanted = identity({"source": source_info(src, args, 0), "split": split_info(args.val_fraction, args.seed),
                       "tokenizer": tokenizer_info()})
    if check_output_dir(output_dir, wanted, args.overwrite, src.local_paths()):
        print(f"{output_dir} already holds this dataset and matches its manifest: nothing to do")
        return output_dir

    logger.info(f"loading {src.describe()} ({'streaming' if args.streaming else 'Arrow cache'})")
    logger.debug(f"load_dataset({src.load_path!r}, name={src.dataset_config!r}, data_files={src.load_data_files}, "
                 f"split={src.split!r}, revision={src.revision!r})")
    dataset = load_source(src, args.streaming, args.num_proc, args.cache_dir)
    total = None if args.streaming else len(dataset)
    if total == 0:
        raise UserError(f"{src.describe()} has no documents")
    if total is not None:  # fail before tokenizing when the count is already known
        check_completeness(src, total, args.allow_partial)

    # the output guard's atomic write: a locked .NAME.partial-* renamed into place at the end; deleted on any error,
    # Ctrl-C or SIGTERM (cli_main), and by the next run if a SIGKILL left it
    with atomic_output(output_dir, folder=True) as tmp_dir, named_write_errors(output_dir):
        manifest = write_data_dir(tmp_dir, dataset, src, args, total, command or sys.argv)
    counts = ", ".join(f"{n}: {s['documents']:,} docs / {s['tokens']:,} tokens" for n, s in manifest["splits"].items())
    print(f"wrote {output_dir} ({counts})")
    return output_dir


class _LevelPrefix(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}" if record.levelno >= logging.WARNING else \
            record.getMessage()


def configure_logging(quiet: bool, verbose: bool) -> None:
    """Status lines of prepare_data (this process only: workers do not log) on stderr, at the chosen verbosity."""
    import datasets

    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelPrefix())
    for name in ("training.prepare_data", "training.prepare"):
        log = logging.getLogger(name)
        log.handlers = [handler]
        log.setLevel(level)
        log.propagate = False
    datasets.logging.set_verbosity(logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING)
    if quiet:
        datasets.disable_progress_bars()
    else:
        datasets.enable_progress_bars()


def run(argv: list[str] | None = None) -> Path:
    """Parse the flags and prepare; returns the finished data_dir."""
    argv = command_argv(argv)
    args = parse(PrepareArgs, argv, "prepare")
    configure_logging(args.quiet, args.verbose)
    return prepare(args, command=["gpt2-owt", "prepare", *argv])


@cli_main
def main(argv: list[str] | None = None) -> None:
    """Console entry point: returns None, so the `gpt2-owt-prepare` script exits 0 on success."""
    run(argv)


if __name__ == "__main__":
    main()
