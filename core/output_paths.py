"""The one output guard: where a command may write, checked before any work starts, and how it writes there, so a
bad output location costs nothing and never destroys data.

    out = guard_output(args.output_dir, "--output_dir", folder=True, inputs={"data_dir": args.data_dir},
                       made_by="trace index", ours="trace_index.json")        # before the expensive work
    ...
    with atomic_output(out, folder=True) as tmp:                              # write everything into tmp
        ...                                                                   # renamed into place at the end

Rules shared by every stage (issues 17 and 23):
- an output never is, lies inside, or contains one of the command's inputs (run_dir, data_dir, model folder, ...);
- an existing output is replaced only if the same stage made it, recognised by its marker file or format
  (release_manifest.json, conversion.json, results.json's own keys, ...); anything else is refused with what would
  be lost (and `--overwrite` flags never widen that);
- an output that is a symbolic link is refused (nothing is written or deleted through a link);
- an unwritable location (permission, read-only file system, a file where a folder should be) is found before the
  work; a failing write (full disk) is one line naming the destination and the cause;
- everything is written under a temporary name beside the output (`.NAME.partial-XXXX`, same file system) and
  renamed into place when complete; an error or an interruption (core/interrupts.py) deletes it, and a partial
  left by a killed process (SIGKILL, power loss) is deleted by the next command writing the same output: each
  partial holds an OS lock (flock) while its writer lives, so a partial nobody holds is known to be stale.
"""

import contextlib
import errno
import fcntl
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import UserError, os_error_message
from .folder_lock import LOCK_FILE

PARTIAL = ".partial-"  # temp outputs are named f".{name}{PARTIAL}XXXX" beside the output


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


# ---------------------------------------------------------------------------------------------------------------
# The guard: every check, before the work
# ---------------------------------------------------------------------------------------------------------------


def refuse_symlink(path: str | Path, flag: str) -> None:
    path = Path(path)
    if path.is_symlink():
        raise UserError(f"{flag} {path} is a symbolic link (to {os.readlink(path)}): give the real path; nothing is "
                        "written or deleted through a link")


def guard_output(path: str | Path, flag: str, *, folder: bool, inputs: dict[str, str | Path | None] | None = None,
                 made_by: str | None = None, ours: str | Callable[[Path], bool] | None = None,
                 replace: bool = True) -> Path:
    """Check an output location before the work; returns it as an absolute path.

    `inputs`: name -> path of everything the command reads (the output may not be, lie inside or contain one).
    `ours`: how to recognise an existing output this command may replace: a marker file name (folders) or a
    predicate on the path; `made_by` names the command in the refusal. Without `ours` an existing non-empty output
    is always refused. `replace=False` refuses even the command's own output (the caller wants `--overwrite`).
    """
    path = Path(path).expanduser()
    refuse_symlink(path, flag)
    check_not_overlapping(path, inputs or {}, flag)
    what = made_by or "this command"
    if folder:
        if path.exists() and not path.is_dir():
            raise UserError(f"{flag} {path} is an existing file, not a folder; refusing to replace it")
        # the writer lock a command may already hold there is not content
        entries = [p for p in path.iterdir() if p.name != LOCK_FILE] if path.is_dir() else []
        if entries:
            mine = ours(path) if callable(ours) else ours is not None and (path / ours).is_file()
            if not mine:
                marker = f" (no {ours})" if isinstance(ours, str) else ""
                raise UserError(f"{flag} {path} was not made by {what}{marker}; writing there would replace what it "
                                f"holds ({_listing(path)}): remove it yourself or choose another folder")
            if not replace:
                raise UserError(f"{flag} {path} already holds an output of {what} (pass --overwrite to replace it)")
    else:
        if path.is_dir():
            raise UserError(f"{flag} {path} is an existing folder; give a file path")
        if path.exists():
            if not (callable(ours) and ours(path)):
                raise UserError(f"{flag} {path} exists and is not a file written by {what}; refusing to replace it "
                                f"(choose another {flag})")
            if not replace:
                raise UserError(f"{flag} {path} already exists (pass --overwrite to replace it)")
    check_writable_location(path, flag, folder=folder)
    return path.absolute()


# ---------------------------------------------------------------------------------------------------------------
# Writing: a locked partial beside the output, renamed into place
# ---------------------------------------------------------------------------------------------------------------


def _lock(path: Path) -> int | None:
    """An exclusive flock on `path` (file or folder), or None when another process holds it."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_tree(path: str | Path) -> None:
    """Delete a file or folder; a symbolic link is removed itself, never what it points to."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


def sweep_stale_partials(output: str | Path) -> list[Path]:
    """Delete the `.NAME.partial-*` beside `output` that no living process holds (left by a killed run)."""
    output = Path(output)
    swept = []
    if not output.parent.is_dir():
        return swept
    for partial in sorted(output.parent.glob(f".{output.name}{PARTIAL}*")):
        fd = _lock(partial) if not partial.is_symlink() else None
        if fd is None:
            continue  # a living writer holds it (or it is a link: not ours)
        try:
            remove_tree(partial)
            swept.append(partial)
        except OSError:
            pass  # unwritable: the write that follows reports the location
        finally:
            os.close(fd)
    for partial in swept:
        print(f"note: removed {partial}, left by an interrupted run", file=sys.stderr)
    return swept


def write_error(path: str | Path, e: BaseException) -> UserError | None:
    """One line naming the destination for a failed write (full disk, read-only, permission), else None.
    safetensors reports a full disk as a SafetensorError wrapping the OS error."""
    code = getattr(e, "errno", None)
    wrapped = re.search(r"\(os error (\d+)\)|code: (\d+),", str(e))  # Rust's io::Error inside SafetensorError
    if code is None and wrapped:
        code = int(wrapped.group(1) or wrapped.group(2))
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG):
        return UserError(f"cannot write {path}: {os.strerror(code)}")
    return None


@contextlib.contextmanager
def atomic_output(path: str | Path, folder: bool = False) -> Iterator[Path]:
    """Yield a locked temp path beside `path` to write the whole output into; on success it is renamed to `path`
    (replacing what guard_output allowed), on any exception or interruption it is deleted. A failed write is one
    UserError naming `path`. Stale partials of earlier killed runs are removed first."""
    path = Path(path).absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_partials(path)
        prefix = f".{path.name}{PARTIAL}"
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent) if folder else  # a file keeps its suffix:
                   _closed(tempfile.mkstemp(prefix=prefix, suffix=path.suffix, dir=path.parent)))  # writers read it
    except OSError as e:
        raise (write_error(path, e) or UserError(os_error_message(path, e))) from None
    fd = _lock(tmp)
    try:
        default_permissions(tmp, folder)
        yield tmp
        install(tmp, path)
    except Exception as e:
        error = write_error(path, e)
        if error is not None:
            raise error from None
        raise
    finally:
        with contextlib.suppress(OSError):
            if os.path.lexists(tmp):
                remove_tree(tmp)
        if fd is not None:
            os.close(fd)


def _closed(fd_and_name: tuple[int, str]) -> str:
    os.close(fd_and_name[0])
    return fd_and_name[1]


def default_permissions(tmp: Path, folder: bool) -> None:
    """mkdtemp/mkstemp create 0700/0600; the output gets the usual permissions of a new file or folder."""
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod((0o777 if folder else 0o666) & ~umask)


def install(tmp: Path, path: Path) -> None:
    """Rename the finished `tmp` to `path`. An existing folder is moved aside first and deleted once the new one is
    in place (put back if the rename fails); a file is replaced atomically."""
    if not tmp.is_dir() or not path.exists():
        os.replace(tmp, path)
        return
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)
        raise
    remove_tree(old)
