"""Ctrl-C and SIGTERM in any command: one line, exit 130/143, partial outputs removed, child processes ended.

`cli_main` (core/errors.py) turns SIGINT and SIGTERM into an `Interrupted` exception (a KeyboardInterrupt), so
every `finally:` / `except BaseException:` on the way up runs: temporary outputs (core/output_paths.py
`atomic_output`) are deleted, child processes started with `child_process` are ended, and the command prints

    error: interrupted by SIGTERM; nothing kept                  (the default)
    error: interrupted by SIGINT; 3 of 8 checkpoints kept in evals/r1: rerun the same command to continue

(the second part set by the command with `set_interrupt_note`), then exits 128 + the signal number. A second signal
while the clean-up runs ends the process at once (the default disposition comes back after the first).

Torch-free (standard library only).
"""

import contextlib
import functools
import os
import signal
import subprocess
import sys
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
NOTHING_KEPT = "nothing kept"
_note = [NOTHING_KEPT]


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum, frame):
    for sig in STOP_SIGNALS:  # a second signal during the clean-up ends the process at once
        signal.signal(sig, signal.SIG_DFL)
    raise Interrupted(signum)


def _deliver_again_if_swallowed(unraisable, fallback):
    """Python drops an exception raised where it cannot propagate (a weakref callback, `__del__`, the garbage
    collector) after printing it: a signal landing there would be lost and the command would run on. Such an
    `Interrupted` is delivered again a moment later, so it is raised in the command's own code; anything else goes
    to the hook that was there before (`fallback`)."""
    if not isinstance(unraisable.exc_value, Interrupted):
        return fallback(unraisable)
    signum = unraisable.exc_value.signum
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_interrupted)
    threading.Timer(0.01, os.kill, (os.getpid(), signum)).start()


@contextlib.contextmanager
def signals_raise_interrupted():
    """While inside: SIGINT/SIGTERM raise `Interrupted` (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    previous_hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(_deliver_again_if_swallowed, fallback=previous_hook)
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_interrupted)
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def set_interrupt_note(note: str) -> None:
    """What an interruption from now on leaves behind, e.g. "2 shards kept: rerun the same command to continue"."""
    _note[0] = note


def interrupt_message(e: KeyboardInterrupt) -> tuple[str, int]:
    """(the one line, the exit code) for an interruption; resets the note for the next command in this process."""
    signum = getattr(e, "signum", signal.SIGINT)
    note, _note[0] = _note[0], NOTHING_KEPT
    return f"interrupted by {signal.Signals(signum).name}; {note}", 128 + signum


@contextlib.contextmanager
def child_process(cmd: list[str], **popen_kwargs):
    """`subprocess.Popen(cmd)` in its own process group, ended with its whole group if this block is left by an
    exception (an interruption included): SIGTERM, then SIGKILL after 5 s. The child never outlives the command."""
    proc = subprocess.Popen(cmd, start_new_session=True, **popen_kwargs)
    try:
        yield proc
    except BaseException:
        end_process_group(proc)
        raise
    finally:
        for stream in (proc.stdout, proc.stderr, proc.stdin):
            if stream is not None:
                stream.close()
        if proc.poll() is None:
            proc.wait()


def end_process_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):  # grandchildren left in the group
        os.killpg(proc.pid, signal.SIGKILL)
