"""Provenance records every stage writes (data manifest, run_info.json, results.json, export_info.json):
file hashes, package versions, and JSON files written atomically so a reader never sees half a record.

Torch-free (standard library only): the light commands (`manifest verify`, `upload.py`, `model_card`) import it.
"""

import contextlib
import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path

from .errors import UserError, os_error_message


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def package_versions(names) -> dict[str, str | None]:
    """{"python": ..., name: installed version or None} for each distribution name."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_json_atomic(path: str | Path, data: dict) -> Path:
    """Write `data` as indented JSON to `path` via a temp name in the same folder, then rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as e:  # full disk, read-only location, a folder under that name: one line, no partial file
        with contextlib.suppress(OSError):  # on a read-only file system the clean-up fails the same way
            tmp.unlink(missing_ok=True)
        raise UserError(os_error_message(path, e)) from None
    return path
