"""Where a command may write: checks run before any work starts, so a bad output location costs nothing and never
destroys data.

Rules shared by every stage (issue 17):
- an output never is, lies inside, or contains one of the command's inputs (run_dir, data_dir, model folder, ...);
- `--overwrite` replaces only what the same stage made, recognised by its marker file (release_manifest.json,
  conversion.json, results.json's own keys, ...); anything else is refused with what would be lost;
- an unwritable location (permission, read-only file system) is found before the work, a failing write (full disk)
  is one line naming the path and the cause, with nothing left under the final name.
"""

import errno
import os
from pathlib import Path

from .errors import UserError


def os_error_message(path: str | Path, e: OSError) -> str:
    """`cannot write PATH: No space left on device` (the cause as the OS words it)."""
    return f"cannot write {path}: {e.strerror or e}"


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_location(path: str | Path, flag: str, folder: bool = False) -> None:
    """The file (or, with `folder`, the folder) `path` can be created and written: checked by a real write in its
    nearest existing ancestor."""
    path = Path(path).absolute()
    base = _nearest_existing(path if folder else path.parent)
    if not base.is_dir():
        raise UserError(f"{flag} {path}: {base} is a file, not a folder")
    probe = base / f".write-test-{os.getpid()}"
    try:  # a real write: os.access ignores read-only mounts and is always true for root
        probe.touch()
        probe.unlink()
    except OSError as e:
        cause = "read-only file system" if e.errno == errno.EROFS else (e.strerror or str(e))
        raise UserError(f"{flag} {path} cannot be written: {base} is not writable ({cause})") from None


def _relation(output: Path, other: Path) -> str | None:
    if output == other:
        return "is"
    if other in output.parents:
        return "is inside"
    if output in other.parents:
        return "contains"
    return None


def check_not_overlapping(output: str | Path, inputs: dict[str, str | Path | None], flag: str) -> None:
    """Refuse an output that is, lies inside or contains one of `inputs` (name -> path; None entries skipped)."""
    out = Path(output).resolve()
    for name, path in inputs.items():
        if path is None:
            continue
        relation = _relation(out, Path(path).resolve())
        if relation:
            raise UserError(f"{flag} {output} {relation} the {name} {path}: writing there could replace or delete "
                            f"the {name}; choose a separate folder")


def _listing(folder: Path, limit: int = 5) -> str:
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")
    return shown


def check_replaceable_folder(output: str | Path, marker: str, stage: str, flag: str = "--output_dir") -> None:
    """`--overwrite` may delete `output` only if `stage` made it (it holds `marker`); otherwise say what would go."""
    output = Path(output)
    if not output.exists():
        return
    if not output.is_dir():
        raise UserError(f"{flag} {output} is an existing file, not a folder; refusing to replace it")
    if any(output.iterdir()) and not (output / marker).is_file():
        raise UserError(f"{flag} {output} was not made by {stage} (no {marker}); --overwrite would delete what it "
                        f"holds ({_listing(output)}): remove it yourself or choose another folder")


def check_output_file(path: str | Path, flag: str) -> None:
    """A file output: not an existing folder, and its location is writable."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is an existing folder; give a file path")
    check_writable_location(path, flag)
