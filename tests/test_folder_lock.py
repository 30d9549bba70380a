"""One writer per folder (core/folder_lock.py): a second writer is refused with one line naming the holder's PID,
a lock dies with its process (a SIGKILLed holder never blocks the next writer), and a folder the lock created is
gone again when nothing was written into it."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from gpt2_owt.core.errors import UserError
from gpt2_owt.core.folder_lock import LOCK_FILE, FolderLock, lock_holder

HOLD = textwrap.dedent("""
    import sys, time
    from gpt2_owt.core.folder_lock import FolderLock
    lock = FolderLock(sys.argv[1], "holder").acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


@pytest.fixture
def holder(tmp_path):
    """A separate process holding tmp_path/run's lock; yields (process, folder)."""
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc, folder
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.mark.timeout(60)
def test_second_writer_is_refused_naming_the_holder(holder):
    proc, folder = holder
    record = lock_holder(folder)
    assert record["pid"] == proc.pid and record["command"] == "holder"
    with pytest.raises(UserError) as e:
        FolderLock(folder, "train").acquire()
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"{folder} is in use by another writer (holder, PID {proc.pid}, since ")
    assert line.endswith("wait for it to end or stop it; two writers would corrupt the folder")


@pytest.mark.timeout(60)
def test_a_killed_holder_never_blocks_the_next_writer(holder):
    proc, folder = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert (folder / LOCK_FILE).is_file() and lock_holder(folder) is None  # its file is left behind, unlocked
    with FolderLock(folder, "train") as lock:
        assert lock_holder(folder)["pid"] == os.getpid() and lock.held
    assert not (folder / LOCK_FILE).exists()


def test_lock_is_reentrant_free_after_release_and_cleans_up_what_it_created(tmp_path):
    folder = tmp_path / "a" / "run"
    lock = FolderLock(folder, "replay").acquire()
    assert lock.created_folder and json.loads((folder / LOCK_FILE).read_text())["command"] == "replay"
    assert lock.acquire() is lock  # already held by this object: no-op
    with pytest.raises(UserError, match="is in use by another writer"):  # another lock object, same process
        FolderLock(folder, "train").acquire()
    lock.release()
    assert not folder.exists()  # made by the lock and left empty: removed
    with FolderLock(folder, "train"):
        (folder / "kept.txt").write_text("x")
    assert sorted(p.name for p in folder.iterdir()) == ["kept.txt"]
    existing = tmp_path / "mine"
    existing.mkdir()
    FolderLock(existing, "train").acquire().release()
    assert existing.is_dir() and not any(existing.iterdir())  # not made by the lock: kept


def test_unwritable_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=f"cannot write {blocker / 'run'}"):
        FolderLock(blocker / "run", "train").acquire()
