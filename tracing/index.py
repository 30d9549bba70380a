"""The trace index: an infini-gram suffix array over exactly the token stream of a data_dir's train.bin, and its
queries (sorted train.bin positions of a token sequence).

    gpt2-owt trace index --data_dir D [--output_dir D/trace_index] [--num_proc N] [--mem_gb M]
                         [--shards S [--shard_ids K ...]]

An infini-gram (PyPI `infini-gram`, extra `trace`) suffix array over exactly the token stream of train.bin,
in `--shards S` shards (default 1) of contiguous whole documents with about equal token counts. Shard k is the
folder shard_{k:05d}, a plain single-shard infini-gram index: its `tokenized.0` holds the shard's documents as
infini-gram documents (b"\\xff\\xff", then the document's uint16 ids, EOT included), `offset.0` the uint64 byte
offset of each, `table.0` the suffix array, `shard.json` its document and token range. Shards are built in
`.tmp-NAME-build` beside the index and renamed into place when all are there; `trace_index.json` records the
data manifest's sha256, train.bin's size, mtime and sha256, the shards and the size of every file. Before building,
the data_dir is checked against its manifest (a train.bin edited after `prepare` is refused) and the output
location through the output guard (never the data_dir or a folder holding it, never a user folder or a link, a
writable location with room for the index); an interrupted build removes its partial shard and ends the indexer.
Every query (`TraceIndex`) checks the record before the native engine opens a file: the record parses, every file
has the size it records (a truncated or deleted table.0 is one line, never a segfault), and train.bin is the one
indexed (size and mtime, or its sha256 when only the mtime moved, e.g. after a copy); a stale index is refused. Several machines: each runs `index --shards S --shard_ids ...` for its share (into a shared build
folder, or copy the shard folders together after), then one run without --shard_ids finishes the index.
Token position mapping: a match at byte offset b in document d of a shard (both counted within the shard) has
b = 2 * (p - first_token + d + 1), i.e. p = first_token + b // 2 - d - 1 (each earlier document of the shard
and this one added a 2-byte separator).
An n-gram spanning two documents of train.bin (it holds an EOT followed by the next document's tokens) cannot
match across infini-gram's separators: it is split after each EOT into pieces that each lie in one document
(so in one shard), the rarest piece is looked up, and its candidates are checked against train.bin.
"""

import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpt2_owt.core.args import parse
from gpt2_owt.core.errors import UserError, cli_main
from gpt2_owt.core.interrupts import child_process, set_interrupt_note
from gpt2_owt.core.output_paths import default_permissions, guard_output, remove_tree, write_error
from gpt2_owt.core.readers import DamagedFile, read_json
from gpt2_owt.core.records import sha256_file
from gpt2_owt.modeling.tokenizer import EOT_TOKEN_ID
from gpt2_owt.training.data_dir import MANIFEST, TokenSplit, all_files, open_split, tokens_file

INDEX_DIR = "trace_index"
INDEX_INFO = "trace_index.json"
INDEX_FORMAT = 2
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
    num_proc: int = field(default=max(1, min(os.cpu_count() or 1, 8)), metadata={"help": "indexer threads", "ge": 1})
    mem_gb: int = field(default=4, metadata={"help": "memory budget of the suffix-array builder (GiB)", "ge": 1})
    shards: int = field(default=1, metadata={"help": "split the index into this many shards of whole documents "
                                                     "(about equal tokens), each its own suffix array", "ge": 1})
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
    if (final / SHARD_INFO).is_file() and read_json(final / SHARD_INFO, "shard record") == record:
        return
    if final.exists():
        remove_tree(final)  # stale: another data_dir or shard count
    tmp = Path(tempfile.mkdtemp(prefix=f".{record['dir']}.partial-", dir=work))
    try:
        default_permissions(tmp, folder=True)
        first = record["first_document"]
        write_tokenized(split, tmp, first, first + record["num_documents"])
        hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        ulimit = min(hard_limit if hard_limit != resource.RLIM_INFINITY else 1 << 20, 1 << 20)
        tokenized_bytes = (tmp / "tokenized.0").stat().st_size
        with shell_safe_path(tmp) as save_dir:
            # a subprocess: infini-gram's build_sa changes the working directory and the open-files limit of its
            # process; its rust steps run through a shell, so it gets a path without spaces or quotes
            cmd = [sys.executable, "-m", "infini_gram.indexing", "--data_dir", save_dir, "--save_dir", save_dir,
                   "--token_dtype", "u16", "--cpus", str(indexer_jobs(tokenized_bytes, num_proc, mem_gb)),
                   "--mem", str(mem_gb), "--ulimit", str(ulimit)]
            returncode, last_line = run_indexer(cmd)
        if returncode != 0 or not (tmp / "table.0").is_file():
            cause = disk_full_cause(tmp)
            raise UserError(f"infini-gram indexing of {record['dir']} failed (exit {returncode})"
                            + (f": {cause}" if cause else f": {last_line or 'no output'}"))
        check_table_size(tmp / "table.0", tokenized_bytes)
        (tmp / SHARD_INFO).write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def indexer_jobs(tokenized_bytes: int, num_proc: int, mem_gb: int) -> int:
    """The parallel jobs to ask infini-gram for. Its make-part step gives job i the bytes [i*S, (i+1)*S + HACK) and
    treats a range reaching the end of the file as the last part, so with parts shorter than HACK (a corpus under
    ~HACK x jobs bytes) two jobs both emit the tail's suffixes: a suffix array 1.5x too long, on which queries
    segfault. Such small shards are built by one job."""
    from infini_gram.indexing import HACK

    batches = 1
    while batches * (mem_gb * 1024**3 // 8) < tokenized_bytes:  # infini-gram's own batch count (token_width 2)
        batches *= 2
    jobs = num_proc
    while jobs > 1 and tokenized_bytes // (batches * jobs) <= 2 * HACK:
        jobs -= 1
    return jobs


def table_bytes(tokenized_bytes: int) -> int:
    """Size of infini-gram's suffix array of a u16 tokenized file: one pointer per token, ceil(log2(bytes) / 8) bytes
    each."""
    return tokenized_bytes // TOKEN_BYTES * math.ceil(math.log2(max(tokenized_bytes, 2)) / 8)


def check_table_size(table: Path, tokenized_bytes: int) -> None:
    if table.stat().st_size != table_bytes(tokenized_bytes):
        raise UserError(f"infini-gram built {table} with {table.stat().st_size:,} bytes, not the "
                        f"{table_bytes(tokenized_bytes):,} of a suffix array of {tokenized_bytes:,} bytes")


class shell_safe_path:
    """A path to `folder` that a shell command line takes unquoted: the folder itself, or a symbolic link with a
    plain name in a fresh temporary folder (infini-gram pastes its paths into `os.popen` command strings)."""

    SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+")

    def __init__(self, folder: Path):
        self.folder, self.link_dir = folder.resolve(), None

    def __enter__(self) -> str:
        if set(str(self.folder)) <= self.SAFE:
            return str(self.folder)
        self.link_dir = Path(tempfile.mkdtemp(prefix="gpt2-owt-index-"))
        (self.link_dir / "shard").symlink_to(self.folder, target_is_directory=True)
        return str(self.link_dir / "shard")

    def __exit__(self, *exc) -> None:
        if self.link_dir is not None:
            shutil.rmtree(self.link_dir, ignore_errors=True)


def disk_full_cause(folder: Path) -> str | None:
    """Why the indexer failed when its file system filled up (its own message only says "Something went wrong")."""
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    if free < max(1 << 20, 0.001 * stats.f_blocks * stats.f_frsize):
        return f"no space left on the device of {folder.parent} ({free:,} bytes free)"
    return None


def index_bytes_needed(split: TokenSplit, bounds: np.ndarray, shards: list[int]) -> int:
    """Disk the build of `shards` needs at its peak: their tokens and suffix arrays, plus the largest one's temporary
    merged parts (infini-gram keeps one shard's parts or merged parts at a time, each about its table's size)."""
    if not shards:
        return 0
    offsets = np.asarray(split.doc_offsets, dtype=np.int64)
    first, last = bounds[shards], bounds[np.asarray(shards) + 1]
    tokenized = 2 * (offsets[last] - offsets[first] + (last - first))  # ids + one separator per document
    table = tokenized * np.ceil(np.log2(np.maximum(tokenized, 2)) / 8)  # infini-gram's pointer width
    return int(tokenized.sum() + 8 * (last - first).sum() + table.sum() + table.max())


def check_free_space(needed: int, where: Path) -> None:
    base = where
    while not base.exists():
        base = base.parent
    stats = os.statvfs(base)
    free = stats.f_bavail * stats.f_frsize
    if free < needed:
        raise UserError(f"not enough free space for the trace index at {where}: about {needed:,} bytes needed (tokens, "
                        f"suffix array and its temporary parts), {free:,} free; free space or choose another "
                        "--output_dir")


def build_index(data_dir: Path, output_dir: Path, num_proc: int, mem_gb: int, shards: int = 1,
                shard_ids: list[int] | None = None) -> Path | None:
    """Build the index (all shards, then renamed into place), or with `shard_ids` only those shards into the
    build folder (returns None). The build folder `.tmp-NAME-build` beside output_dir is where machines of a
    multi-machine build put their shards (a shared filesystem, or copy the shard_K folders together)."""
    infini_gram()
    from gpt2_owt.training.manifest import verify_data_dir

    manifest = verify_data_dir(data_dir)  # a train.bin edited after prepare is refused, not indexed
    split = open_split(data_dir, "train")
    if split.num_tokens == 0:
        raise UserError(f"{data_dir}/train.bin is empty: nothing to index")
    if shards < 1:
        raise UserError(f"--shards must be >= 1, got {shards}")
    if shard_ids is not None and (not shard_ids or any(not 0 <= k < shards for k in shard_ids)):
        raise UserError(f"--shard_ids must be shard numbers in [0, {shards}), got {shard_ids}")
    bounds = shard_bounds(split, shards)
    manifest_sha = sha256_file(data_dir / MANIFEST)
    work = build_folder(output_dir)
    records = [shard_record(split, bounds, k, manifest_sha) for k in range(shards)]
    todo = list(shard_ids if shard_ids is not None else range(shards))
    missing = [k for k in todo if not (work / records[k]["dir"] / SHARD_INFO).is_file()]
    check_free_space(index_bytes_needed(split, bounds, missing), work)
    try:
        work.mkdir(parents=True, exist_ok=True)
        for k in todo:
            done = sum((work / r["dir"] / SHARD_INFO).is_file() for r in records)
            set_interrupt_note(f"{done} finished shard(s) kept in {work}: rerun the same command to continue"
                               if done else "nothing kept")
            build_shard(split, data_dir, work, records[k], num_proc, mem_gb)
        if shard_ids is not None:
            return None
        shard_dirs = {r["dir"] for r in records}
        for stale in [p for p in work.iterdir() if p.name not in shard_dirs]:
            remove_tree(stale)  # shards of an earlier shard count
        train_bin = data_dir / tokens_file("train")
        info = {"format": INDEX_FORMAT, "data_dir": str(data_dir.resolve()), "data_manifest_sha256": manifest_sha,
                "train_bin": {"bytes": train_bin.stat().st_size, "mtime_ns": train_bin.stat().st_mtime_ns,
                              "sha256": manifest["files"][tokens_file("train")]["sha256"]},
                "num_tokens": split.num_tokens, "num_documents": split.num_documents, "token_dtype": "u16",
                "document_separator": DOC_SEPARATOR.hex(), "infini_gram_version": infini_gram_version(),
                "shards": [{key: r[key] for key in SHARD_KEYS} for r in records],
                "files": {str(p.relative_to(work)): p.stat().st_size for p in sorted(work.rglob("*")) if p.is_file()}}
        (work / INDEX_INFO).write_text(json.dumps(info, indent=1) + "\n")
        if output_dir.exists():
            remove_tree(output_dir)  # an earlier index (the guard checked it is one)
        os.replace(work, output_dir)
        return output_dir
    except OSError as e:
        raise (write_error(output_dir, e) or e) from None
    finally:
        if work.is_dir() and not any(work.iterdir()):
            work.rmdir()  # nothing built: leave nothing behind


def guard_index_output(data_dir: Path, output_dir: Path) -> Path:
    """The output guard for --output_dir: never a data file (the default trace_index/ lies inside the data_dir, so
    each data file is an input, not the folder), a folder holding one, a user folder or a link. The build folder
    beside it must be writable too."""
    data_files = {f"data file {name}": data_dir / name for name in (MANIFEST, *all_files())}
    output_dir = guard_output(output_dir, "--output_dir", folder=True, inputs=data_files, made_by="trace index",
                              ours=INDEX_INFO)
    guard_output(build_folder(output_dir), "--output_dir", folder=True, inputs=data_files, made_by="trace index",
                 ours=lambda p: all(c.name == INDEX_INFO or c.name.startswith(("shard_", ".shard_"))
                                    for c in p.iterdir()))
    return output_dir


def run_indexer(cmd: list[str]) -> tuple[int, str]:
    """Run infini-gram's indexer, echoing its phase lines (make-part, merge, concat with their durations) to stderr
    as progress; returns its exit code and last output line (the error, when it fails)."""
    last_line = ""
    with child_process(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            line = line.strip().split("\r")[-1].strip()
            if line and "%|" not in line:  # progress bars say nothing about a failure
                last_line = line
            if line.startswith("Step") or ": Done." in line:
                print(f"infini-gram: {line}", file=sys.stderr, flush=True)
        return proc.wait(), last_line


def infini_gram_version() -> str:
    from importlib.metadata import version

    return version("infini-gram")



@cli_main
def main(argv: list[str] | None = None) -> None:
    args = parse(IndexArgs, argv, "trace index")
    data_dir = Path(args.data_dir)
    if not (data_dir / MANIFEST).is_file():
        raise UserError(f"{data_dir} is not a data_dir (no {MANIFEST}): make it with `gpt2-owt prepare`")
    output_dir = guard_index_output(data_dir, Path(args.output_dir) if args.output_dir else data_dir / INDEX_DIR)
    out = build_index(data_dir, output_dir, args.num_proc, args.mem_gb, args.shards, args.shard_ids)
    if out is None:
        print(f"built shards {args.shard_ids} of {args.shards} in {build_folder(output_dir)};"
              f" when every machine is done, run `gpt2-owt trace index` with the same --shards and no "
              f"--shard_ids to finish the index")
        return
    info = read_json(out / INDEX_INFO, "trace index record")
    print(f"index of {info['num_tokens']:,} tokens in {len(info['shards'])} shard(s) at {out} "
          f"({sum(info['files'].values()):,} bytes)")



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


def check_index(data_dir: Path, index_dir: Path, split: TokenSplit) -> dict:
    """The index record, checked before any index file is opened by the native engine (which segfaults on a
    truncated table): it parses and has the current format, every file it lists has its recorded size, and it was
    built from this data_dir's current train.bin. One UserError naming what to rebuild otherwise."""
    rebuild = f"rebuild it with `gpt2-owt trace index --data_dir {data_dir}`"
    info_path = index_dir / INDEX_INFO
    if not info_path.is_file():
        raise UserError(f"no trace index at {index_dir}: build it with `gpt2-owt trace index --data_dir {data_dir}`")
    info = read_json(info_path, "trace index record")
    shards, files = info.get("shards"), info.get("files")
    if info.get("format") != INDEX_FORMAT or not isinstance(files, dict) or not isinstance(shards, list) or not shards \
            or not all(isinstance(r, dict) and all(k in r for k in SHARD_KEYS) for r in shards) \
            or not isinstance(info.get("train_bin"), dict):
        raise DamagedFile(f"trace index record {info_path} is damaged or of another format (expected format "
                          f"{INDEX_FORMAT} with shards, files and train_bin): {rebuild}")
    for name, size in files.items():
        path = index_dir / name
        if not path.is_file():
            raise UserError(f"trace index file {path} is missing: {rebuild}")
        if path.stat().st_size != size:
            raise UserError(f"trace index file {path} is damaged ({path.stat().st_size:,} bytes, the index recorded "
                            f"{size:,}): {rebuild}")
    for record in shards:
        folder = index_dir / record["dir"]
        expected = table_bytes((folder / "tokenized.0").stat().st_size) if (folder / "tokenized.0").is_file() else -1
        if not (folder / "table.0").is_file() or (folder / "table.0").stat().st_size != expected:
            raise UserError(f"trace index file {folder / 'table.0'} is not the suffix array of its tokenized.0: {rebuild}")
    if info.get("data_manifest_sha256") != sha256_file(data_dir / MANIFEST) or info.get("num_tokens") != split.num_tokens:
        raise UserError(f"the trace index at {index_dir} was built from another data_dir ({info.get('data_dir')}) or "
                        f"an older version of it: {rebuild}")
    train_bin, recorded = data_dir / tokens_file("train"), info["train_bin"]
    stat = train_bin.stat()
    if stat.st_size != recorded.get("bytes") or (stat.st_mtime_ns != recorded.get("mtime_ns")
                                                 and sha256_file(train_bin) != recorded.get("sha256")):
        raise UserError(f"{train_bin} changed after the trace index at {index_dir} was built (it no longer holds the "
                        f"indexed tokens): {rebuild}")
    return info


class TraceIndex:
    """The index of one data_dir's train.bin: token positions of an id sequence, in train.bin coordinates."""

    def __init__(self, data_dir: str | Path, index_dir: str | Path | None = None):
        self.data_dir = Path(data_dir)
        self.dir = Path(index_dir) if index_dir else self.data_dir / INDEX_DIR
        self.split = open_split(self.data_dir, "train")
        self.info = check_index(self.data_dir, self.dir, self.split)
        records = self.info["shards"]
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

    def match_ends(self, ids: list[int]) -> np.ndarray:
        """For each start l, the end r of the longest ids[l:r] that occurs in train.bin (r == l: ids[l] never does).

        infini-gram's longest match at every position across all shards (`creativity`: the first stage of its
        `attribute`) finds matches inside documents. A match that ends on a document's EOT may go on in the next
        document of train.bin, as `positions` finds it: that continuation is searched for (binary search on the
        end, `positions` of each candidate). Ends never decrease with l (what occurs from l occurs from l + 1)."""
        ids = [int(i) for i in ids]
        ends = np.asarray(self.engine.creativity(input_ids=ids)["rs"] if ids else [], dtype=np.int64)
        for start in range(len(ids)):
            low = max(int(ends[start]), int(ends[start - 1]) if start else 0)
            crosses = low > ends[start] or (low > start and ids[low - 1] == EOT_TOKEN_ID)
            if crosses and low < len(ids):  # ids[start:low] occurs; how far does it go on?
                high = len(ids)
                while low < high:
                    mid = (low + high + 1) // 2
                    low, high = (mid, high) if self.positions(ids[start:mid]).size else (low, mid - 1)
            ends[start] = low
        return ends


def scan_positions(tokens: np.ndarray, ids: list[int]) -> np.ndarray:
    """The plain vectorised scan: candidate positions of the first id, then each further id checked on the survivors."""
    n = len(ids)
    cand = np.flatnonzero(tokens[: tokens.size - n + 1] == ids[0])
    for k in range(1, n):
        cand = cand[tokens[cand + k] == ids[k]]
    return cand


if __name__ == "__main__":
    main()
