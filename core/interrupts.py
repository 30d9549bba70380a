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


def _default_signals_in_child():
    """In every process forked while a command holds `_raise_interrupted` (a pool that `datasets` starts for
    `load_dataset(num_proc=N)`, any library's worker): SIGINT/SIGTERM back to their default dispositions. Such a
    worker is the library's, not the command's: the pool ending it with SIGTERM at shutdown (multiprocess's exit
    handler terminates the workers) must just end it, not raise `Interrupted` inside it, which printed a traceback
    per worker and could leave one stuck on a lock its pool held, with the parent waiting for it forever (issue 33).
    A handler that is not ours is left alone."""
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) in (_raise_interrupted, _end_workers_first):
            signal.signal(sig, signal.SIG_DFL)
    _deferred.clear()


os.register_at_fork(after_in_child=_default_signals_in_child)


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
    threading.Timer(0.01, _redeliver, (signum,)).start()


def _redeliver(signum: int) -> None:
    """Send the swallowed signal again, unless an `Interrupted` was raised meanwhile (the handler is no longer ours):
    two swallowed copies of one signal (several finalizers) scheduled two re-deliveries, and the second one met the
    default disposition during the clean-up and ended the process with no `error: interrupted` line (issue 33)."""
    if signal.getsignal(signum) is _raise_interrupted:
        os.kill(os.getpid(), signum)


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


DEFER_GRACE_S = 5.0  # how long a library gets to unwind by itself once its workers are ended
_deferred: list = []  # [(signum, fallback timer)] while interrupts_deferred_to_children holds a signal


def _end_workers_first(signum, frame):
    """The handler inside interrupts_deferred_to_children: end the workers, let the library fail in its own code,
    and raise `Interrupted` if it has not unwound within DEFER_GRACE_S (a pool whose map waits forever for a dead
    worker's result) or on the next signal."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_interrupted)
    for child in _worker_processes():
        with contextlib.suppress(OSError, AttributeError):
            child.terminate()
    timer = threading.Timer(DEFER_GRACE_S, os.kill, (os.getpid(), signum))
    timer.daemon = True
    timer.start()
    _deferred.append((signum, timer))


@contextlib.contextmanager
def interrupts_deferred_to_children():
    """Inside: a library's multiprocessing code that must not be unwound at an arbitrary bytecode
    (`datasets.load_dataset` with num_proc: pools, a Manager, queues behind locks): `Interrupted` raised there could
    leave a lock held that the pool's own shutdown then waits for forever. A SIGINT/SIGTERM here first ends this
    process's worker processes (`_end_workers_first`); the library then fails through its own code path ("a
    subprocess died") and `Interrupted` is raised as the block is left. Only under `signals_raise_interrupted`."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not _raise_interrupted:
        yield
        return
    for sig in STOP_SIGNALS:
        signal.signal(sig, _end_workers_first)
    try:
        yield
    except BaseException:
        if _deferred:
            raise Interrupted(_deferred[0][0]) from None
        raise
    finally:
        for _, timer in _deferred:
            timer.cancel()
        got = [signum for signum, _ in _deferred]
        _deferred.clear()
        if not got:  # still ours to restore; after a signal _raise_interrupted is in place already
            for sig in STOP_SIGNALS:
                signal.signal(sig, _raise_interrupted)
    if got:
        raise Interrupted(got[0])


def _worker_processes() -> list:
    """The live child processes started through multiprocessing or its dill fork `multiprocess` (datasets')."""
    found = []
    for name in ("multiprocessing", "multiprocess"):
        module = sys.modules.get(name)
        if module is not None:
            found += module.active_children()
    return found


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
