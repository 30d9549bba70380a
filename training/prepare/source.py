"""The source of a data_dir: which dataset the flags name, loading it, and reading its text column in row order.

A Hub id is read through its data files with the matching builder (`parquet`, `json`, ...) at a pinned revision, a
local folder or a packaged builder (`--dataset json --data_files ...`) through `datasets.load_dataset` as usual.
Every loading failure the user can fix becomes one UserError line.
"""

import contextlib
import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from gpt2_owt.core.errors import UserError
from gpt2_owt.core.interrupts import interrupts_deferred_to_children

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

    def local_paths(self) -> list[Path]:
        """The local files and folders this source reads (none for a Hub dataset): the output must not touch them."""
        if os.path.exists(self.dataset):
            return [Path(self.dataset).resolve()]
        if HUB_ID.match(self.dataset) and self.data_files:
            return []
        return [Path(p).resolve() for pattern in self.load_data_files or [] if "://" not in pattern
                for p in glob.glob(pattern)]


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


def resolve_source(args) -> Source:
    """Turn the flags (PrepareArgs: dataset, dataset_config, revision, data_files, split) into load_dataset
    arguments; the OpenWebText defaults apply only to the OpenWebText id."""
    dataset, dataset_config, revision, data_files = args.dataset, args.dataset_config, args.revision, args.data_files
    if dataset == OPENWEBTEXT:
        revision = revision or OPENWEBTEXT_REVISION
        data_files = data_files or list(OPENWEBTEXT_DATA_FILES)
    load_path, load_files = dataset, data_files
    if revision and (os.path.exists(dataset) or not HUB_ID.match(dataset)):
        raise UserError(f"--revision applies to Hub datasets only, not to --dataset {dataset}")
    if os.path.exists(dataset):
        if data_files:  # patterns are relative to the folder, as datasets resolves them
            missing = [p for p in data_files if not glob.glob(os.path.join(dataset, p))]
            if missing:
                raise UserError(f"no file in {dataset} matches --data_files {' '.join(missing)}")
    elif HUB_ID.match(dataset):
        if data_files:  # read the files with their builder: works even where the repo still has a loading script
            if dataset_config:
                raise UserError("--dataset_config does not combine with --data_files for a Hub dataset: the files "
                                "already select the data")
            rev = quote(revision or "main", safe="")
            load_path = builder_for(data_files)
            load_files = [f"hf://datasets/{dataset}@{rev}/{p.lstrip('/')}" for p in data_files]
    elif "/" in dataset or dataset.startswith("."):
        raise UserError(f"--dataset {dataset} not found (neither a local path nor a Hub id `owner/name`)")
    else:  # a packaged builder: json, parquet, text, csv, arrow
        if not data_files:
            raise UserError(f"--dataset {dataset} needs --data_files")
        missing = [p for p in data_files if "://" not in p and not glob.glob(p)]
        if missing:
            raise UserError(f"no file matches --data_files {' '.join(missing)}")
    return Source(dataset=dataset, dataset_config=dataset_config, revision=revision, data_files=data_files,
                  split=args.split, load_path=load_path, load_data_files=load_files,
                  expected_documents=EXPECTED_DOCUMENTS.get(dataset))


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
        # datasets' worker pool must end through its own code path when a signal comes (see the context manager)
        with named_decode_errors(src), interrupts_deferred_to_children():
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


@contextlib.contextmanager
def named_decode_errors(src: Source):
    """Turn a UnicodeDecodeError raised while reading the source (whatever wraps it) into one UserError line."""
    try:
        yield
    except Exception as error:
        cause = error
        while cause is not None and not isinstance(cause, UnicodeDecodeError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        files = f" ({' '.join(src.data_files)})" if src.data_files else ""
        raise UserError(f"{src.describe()}{files} is not {cause.encoding.upper()} text (byte 0x"
                        f"{cause.object[cause.start:cause.start + 1].hex()} cannot be decoded); convert the files "
                        f"to UTF-8, e.g. iconv -f latin1 -t utf-8") from None


def first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def is_network_error(e: BaseException) -> bool:
    """Connection failures, whichever HTTP stack raised them (huggingface_hub: httpx; fsspec: aiohttp)."""
    root_module = type(e).__module__.split(".")[0]
    return isinstance(e, ConnectionError) or root_module.startswith(("httpx", "httpcore", "aiohttp", "requests"))


# ---------------------------------------------------------------------------------------------------------------
# Reading the text column
# ---------------------------------------------------------------------------------------------------------------


def text_batches(dataset, src: Source, column: str, batch_size: int, whole_cache_files: bool):
    """Lists of document strings, `batch_size` each, in source row order; nulls and non-strings are UserErrors.

    Workers get plain str lists: they never touch Arrow state forked from the parent.
    """
    row = 0
    with named_decode_errors(src):  # a streaming source decodes while it is read
        for array in arrow_batches(dataset, column, batch_size, whole_cache_files):
            check_null_free(array, row, column)
            row += len(array)
            yield array.to_pylist()


def _string_column(batch, column: str):
    """The text column of an Arrow batch/table, checked: present, string typed."""
    import pyarrow as pa

    if column not in batch.schema.names:
        raise UserError(f"no column {column!r} in the dataset (columns: {', '.join(batch.schema.names)}); "
                        f"use --text_column")
    array = batch.column(column)
    kind = array.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        raise UserError(f"column {column!r} holds {kind} values, not strings")
    return array


def check_null_free(array, first_row: int, column: str) -> None:
    if array.null_count:
        import pyarrow.compute as pc

        row = first_row + int(pc.index(array.is_null(), True).as_py())
        raise UserError(f"row {row} of column {column!r} is null, not a string")


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
