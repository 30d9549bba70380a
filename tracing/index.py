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
data manifest's sha256 and the shards, and every query refuses an index whose record does not match the
data_dir. Several machines: each runs `index --shards S --shard_ids ...` for its share (into a shared build
folder, or copy the shard folders together after), then one run without --shard_ids finishes the index.
Token position mapping: a match at byte offset b in document d of a shard (both counted within the shard) has
b = 2 * (p - first_token + d + 1), i.e. p = first_token + b // 2 - d - 1 (each earlier document of the shard
and this one added a 2-byte separator).
An n-gram spanning two documents of train.bin (it holds an EOT followed by the next document's tokens) cannot
match across infini-gram's separators: it is split after each EOT into pieces that each lie in one document
(so in one shard), the rarest piece is looked up, and its candidates are checked against train.bin.
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpt2_owt.modeling import EOT_TOKEN_ID, UserError, cli_main, sha256_file
from gpt2_owt.modeling.hf_argparser import HfArgumentParser
from gpt2_owt.training.data_dir import MANIFEST, TokenSplit, open_split

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



@cli_main
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = HfArgumentParser(IndexArgs, allow_abbrev=False).parse_args_into_dataclasses(args=argv)[0]
    data_dir = Path(args.data_dir)
    if not (data_dir / MANIFEST).is_file():
        raise UserError(f"{data_dir} is not a data_dir (no {MANIFEST}): make it with `gpt2-owt prepare`")
    if args.num_proc < 1 or args.mem_gb < 1:
        raise UserError("--num_proc and --mem_gb must be >= 1")
    output_dir = Path(args.output_dir) if args.output_dir else data_dir / INDEX_DIR
    out = build_index(data_dir, output_dir, args.num_proc, args.mem_gb, args.shards, args.shard_ids)
    if out is None:
        print(f"built shards {args.shard_ids} of {args.shards} in {build_folder(output_dir)};"
              f" when every machine is done, run `gpt2-owt trace index` with the same --shards and no "
              f"--shard_ids to finish the index")
        return
    info = json.loads((out / INDEX_INFO).read_text())
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


class TraceIndex:
    """The index of one data_dir's train.bin: token positions of an id sequence, in train.bin coordinates."""

    def __init__(self, data_dir: str | Path, index_dir: str | Path | None = None):
        self.data_dir = Path(data_dir)
        self.dir = Path(index_dir) if index_dir else self.data_dir / INDEX_DIR
        self.split = open_split(self.data_dir, "train")
        info_path = self.dir / INDEX_INFO
        if not info_path.is_file():
            raise UserError(f"no trace index at {self.dir}: build it with "
                            f"`gpt2-owt trace index --data_dir {self.data_dir}`")
        self.info = json.loads(info_path.read_text())
        if self.info.get("data_manifest_sha256") != sha256_file(self.data_dir / MANIFEST) or \
                self.info.get("num_tokens") != self.split.num_tokens:
            raise UserError(f"the trace index at {self.dir} was built from another data_dir ({self.info.get('data_dir')})"
                            f" or an older version of it: rebuild it with `gpt2-owt trace index`")
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
