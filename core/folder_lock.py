"""One writer per folder: an exclusive OS lock (`fcntl.flock`) on `FOLDER/.writer.lock`, held for as long as a
command writes there (the trainer on its run folder, replay and the eval series on their own output folders).

    with FolderLock(run_dir, "train"):       # UserError naming the holder if another process writes there
        ...                                   # nobody else writes in run_dir until the block ends

The lock belongs to the open file: the OS drops it when the process ends, however it ends (exit, exception,
SIGKILL, out of memory), so a killed writer never blocks the next one and no PID file has to be cleaned up. The
file only records who holds it (PID, command, host, since when), so that a refused writer can name the holder:

    error: runs/tiny is in use by another writer (train, PID 4242 on node-3, since 2026-12-05T17:02:36+00:00):
    wait for it to end or stop it; two writers would corrupt the folder

The lock file exists only while the lock is held (a killed holder leaves it behind, harmless: the next writer
takes it over). A folder the lock had to create is removed again on release if nothing else was written into it,
so a command that fails its checks after locking leaves nothing behind. flock works across processes of one
machine and, on Linux, on NFS (emulated with byte-range locks); processes on different machines writing to one
folder through a file system without lock support are not detected.

Torch-free (standard library only).
"""

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

from .errors import UserError, os_error_message

LOCK_FILE = ".writer.lock"


class FolderLock:
    """An exclusive lock on `folder` for `command` (the verb that writes there: "train", "replay", ...)."""

    def __init__(self, folder: str | Path, command: str):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.command = command
        self.created_folder = False
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "FolderLock":
        """Take the lock now or raise UserError naming the holder (never waits). Creates the folder if needed."""
        if self.held:
            return self
        self.created_folder = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(os_error_message(self.folder, e)) from None
        for _ in range(100):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise UserError(os_error_message(self.path, e)) from None
                raise UserError(f"{self.folder} is in use by another writer ({describe(lock_holder(self.folder))}): "
                                "wait for it to end or stop it; two writers would corrupt the folder") from None
            if self._is_current(fd):
                break
            os.close(fd)  # a releasing holder removed the file between our open and our lock: take the new one
        else:
            raise UserError(f"cannot lock {self.path}: it keeps being replaced by other processes")
        self._fd = fd
        record = {"pid": os.getpid(), "command": self.command, "host": socket.gethostname(),
                  "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(record) + "\n").encode())
        return self

    def release(self) -> None:
        """Give the lock up (the file goes first, while still held, so no other process can lock a file that is
        about to disappear); remove the folder if acquire() made it and nothing else was written into it."""
        if not self.held:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None
        if self.created_folder:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only if empty

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise UserError(os_error_message(self.path, e)) from None

    def _is_current(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False


def lock_holder(folder: str | Path, wait_s: float = 1.0) -> dict | None:
    """{"pid", "command", "host", "since"} of the process holding `folder`'s lock, None if no process holds it.
    (A holder writes its record right after locking: a reader that comes in between waits up to `wait_s`.)"""
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None  # nobody holds it (the file is a killed holder's leftover)
        except OSError:
            pass
        deadline = time.monotonic() + wait_s
        while True:
            text = os.pread(fd, 4096, 0).decode(errors="replace")
            with contextlib.suppress(ValueError):
                return json.loads(text)
            if time.monotonic() > deadline:
                return {}
            time.sleep(0.02)
    finally:
        os.close(fd)


def describe(holder: dict | None) -> str:
    """`train, PID 4242 on node-3, since 2026-...` (or what is known of it)."""
    if not holder:
        return "PID unknown"
    host = f" on {holder['host']}" if holder.get("host") and holder["host"] != socket.gethostname() else ""
    return f"{holder.get('command', '?')}, PID {holder.get('pid', '?')}{host}, since {holder.get('since', '?')}"
