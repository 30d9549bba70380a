"""The output folder of prepare_data: refuse to clobber, gather the splits; prepare_data writes it through the output
guard's atomic_output (core/output_paths.py).

Everything is written into `.NAME.partial-*` next to --output_dir (same filesystem) and renamed into place at the
end, so a folder named --output_dir is always complete; on any error or interruption the partial folder is deleted,
and one left by a killed run is deleted by the next. --overwrite
replaces only a folder that prepare_data made (it holds a manifest.json and nothing else than a data_dir's files),
never one that holds or lies inside the source data. Disk and permission failures become one line naming the path.
"""

import errno
import hashlib
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gpt2_owt.core.errors import UserError
from gpt2_owt.core.output_paths import check_writable_location, refuse_symlink
from gpt2_owt.training import manifest as manifest_lib
from gpt2_owt.training.data_dir import MANIFEST, TOKEN_DTYPE, all_files, doc_offsets_file, doc_rows_file, tokens_file
from gpt2_owt.training.prepare.tokenize import SourceTokens


GATHER_CHUNK_DOCS = 8192  # documents copied per write in the gather pass


# ---------------------------------------------------------------------------------------------------------------
# Before any work: what may be written where
# ---------------------------------------------------------------------------------------------------------------


def identity(manifest: dict) -> dict:
    """What makes two data_dirs the same dataset (not: counts, times, versions, how it was read)."""
    src = manifest["source"]
    return {"source": {k: src[k] for k in ("dataset", "dataset_config", "revision", "data_files", "split",
                                           "text_column")},
            "split": manifest["split"], "tokenizer": manifest["tokenizer"]["fingerprint"]}


def describe_files(paths: list[Path]) -> str:
    """'3 files, 12,345 bytes: a.txt, b/, c.csv' for a refusal message (folders counted by the files they hold)."""
    files = [p for path in paths for p in ([path] if not path.is_dir() else path.rglob("*")) if p.is_file()]
    shown = ", ".join(p.name + ("/" if p.is_dir() else "") for p in sorted(paths)[:5])
    more = f", ... ({len(paths) - 5} more)" if len(paths) > 5 else ""
    return f"{len(files)} file{'s' * (len(files) != 1)}, {sum(p.stat().st_size for p in files):,} bytes: {shown}{more}"


def check_not_in_source(output_dir: Path, source_paths: list[Path]) -> None:
    """The output may neither hold nor lie inside a local source file/folder (a rename or delete would hit it)."""
    out = output_dir.resolve()
    for src in source_paths:
        if out == src or src in out.parents:
            raise UserError(f"--output_dir {output_dir} lies inside the source data {src}: writing there would "
                            f"change the source; choose a folder outside it")
        if out in src.parents:
            raise UserError(f"--output_dir {output_dir} contains the source data {src}: replacing the folder would "
                            f"delete it; choose a folder that does not hold the source")


def check_creatable(output_dir: Path) -> None:
    """--output_dir (or its nearest existing parent) must be a folder."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output_dir {output_dir} exists and is not a folder")
    for parent in output_dir.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--output_dir {output_dir} cannot be created: {parent} is a file, not a folder")
            return


def check_output_dir(output_dir: Path, wanted: dict, overwrite: bool, source_paths: list[Path]) -> bool:
    """True if `output_dir` already holds exactly this dataset (verified); UserError if writing it would lose data."""
    refuse_symlink(output_dir, "--output_dir")
    check_creatable(output_dir)
    check_not_in_source(output_dir, source_paths)
    check_writable_location(output_dir, "--output_dir", folder=True)
    if not output_dir.exists() or not any(output_dir.iterdir()):
        return False
    entries = sorted(output_dir.iterdir())
    if not (output_dir / MANIFEST).is_file():
        if overwrite:
            raise UserError(f"--overwrite refuses to replace --output_dir {output_dir}: it holds no {MANIFEST}, so "
                            f"prepare_data did not make it, and {describe_files(entries)} would be lost; choose "
                            f"another folder")
        raise UserError(f"--output_dir {output_dir} holds files but no {MANIFEST} ({describe_files(entries)}): not "
                        f"a data_dir made by prepare_data, and --overwrite never replaces such a folder; choose "
                        f"another folder or empty it")
    existing = manifest_lib.read_manifest(output_dir)
    try:
        same = identity(existing) == wanted
    except (KeyError, TypeError) as e:
        raise UserError(f"{output_dir / MANIFEST} is not a data_dir manifest (no field {e}); it was not made by "
                        f"this prepare_data: choose another folder") from None
    if overwrite:
        foreign = [p for p in entries if p.name not in {MANIFEST, *all_files()}]
        if foreign:
            raise UserError(f"--overwrite refuses to replace --output_dir {output_dir}: besides a data_dir it holds "
                            f"files prepare_data did not make, and {describe_files(foreign)} would be lost; move "
                            f"them out first")
        return False
    if not same:
        raise UserError(f"--output_dir {output_dir} already holds a different dataset "
                        f"({existing['source']['dataset']}, val_fraction {existing['split']['test_size']}, "
                        f"seed {existing['split']['seed']}); pass --overwrite to replace it or choose another folder")
    manifest_lib.verify_data_dir(output_dir)
    return True


# ---------------------------------------------------------------------------------------------------------------
# Writing aside, then renaming into place
# ---------------------------------------------------------------------------------------------------------------


@contextmanager
def named_write_errors(output_dir: Path):
    """Full disk, read-only or permission failures while writing `output_dir` -> one UserError naming path + cause."""
    try:
        yield
    except OSError as e:
        if e.filename is not None and not on_the_way_to(Path(e.filename), output_dir):
            raise  # not a write of ours (reading a source file, say)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"no space left on the device of {output_dir.parent} ({e.strerror}"
                            f"{f' writing {e.filename}' if e.filename else ''}); nothing was left under "
                            f"{output_dir}: free space there (about twice the token bytes, ~36 GB for "
                            f"OpenWebText) or choose another --output_dir, then run again") from None
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise UserError(f"cannot write {e.filename or output_dir}: {e.strerror}; choose a writable "
                            f"--output_dir") from None
        raise


def on_the_way_to(path: Path, output_dir: Path) -> bool:
    """Is `path` a folder prepare_data creates to reach `output_dir`, or inside the folder that holds it?"""
    path, parent = path.resolve(), output_dir.parent.resolve()
    return path == parent or path in parent.parents or parent in path.parents


# ---------------------------------------------------------------------------------------------------------------
# Pass 2: gather each split's documents from the source-order token file
# ---------------------------------------------------------------------------------------------------------------


def gather_split(split: str, rows: np.ndarray, source: SourceTokens, source_offsets: np.ndarray,
                 out_dir: Path, progress: bool = True) -> dict:
    """Write `split`'s token file and document index (documents in `rows` order); return counts and token sha256."""
    lengths = source_offsets[rows + 1] - source_offsets[rows]
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    np.save(out_dir / doc_offsets_file(split), offsets)
    np.save(out_dir / doc_rows_file(split), rows.astype(np.int64))
    itemsize = np.dtype(TOKEN_DTYPE).itemsize
    digest = hashlib.sha256()
    bar = tqdm(total=len(rows), desc=f"write {tokens_file(split)}", unit="doc", unit_scale=True, mininterval=1.0,
               disable=not progress)
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
