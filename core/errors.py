"""User-facing errors: every stage command turns these into one line on stderr and exit code 2; Ctrl-C / SIGTERM
into one line and exit 130 / 143 (core/interrupts.py).

Anything else that escapes a command is a bug and keeps its traceback.
"""

import contextlib
import functools
import os
import signal
import sys

from .interrupts import interrupt_message, signals_raise_interrupted


class UserError(Exception):
    """A bad input the user can fix (wrong path, bad flag value, mismatched files...)."""


def first_line(e: Exception) -> str:
    """The first line of an exception's message (library errors append request ids, URLs, hints)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def os_error_message(path: object, e: OSError) -> str:
    """`cannot write PATH: No space left on device` (the cause as the OS words it)."""
    return f"cannot write {path}: {e.strerror or e}"


def cli_main(fn):
    """Decorate a `main(argv=None)`: a UserError prints `error: ...` and exits 2 instead of a traceback; SIGINT and
    SIGTERM unwind the command (its temp outputs and child processes are cleaned up on the way) and print
    `error: interrupted by SIGTERM; nothing kept` (or the command's note), exit 128 + signal."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with signals_raise_interrupted():
                return fn(*args, **kwargs)
        except UserError as e:
            _error_line(str(e))
            raise SystemExit(2) from None
        except KeyboardInterrupt as e:
            line, code = interrupt_message(e)
            _error_line(line)
            raise SystemExit(code) from None
        except BrokenPipeError:
            if not _stdout_is_closed():
                raise  # another pipe (a child process's): a bug to see
            raise SystemExit(128 + signal.SIGPIPE) from None

    return wrapper


def _stdout_is_closed() -> bool:
    """Whether the reader of stdout went away (`gpt2-owt data-order ... | head`: the write end of the pipe polls
    POLLERR). Then the command ends quietly, as a Unix tool killed by SIGPIPE would (exit 141), with stdout sent to
    /dev/null so Python's final flush of what is still buffered cannot raise again at exit."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        closed = any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no real stdout (a test's capture): not a closed pipe
        return False
    if closed:
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return closed


def _close_progress_bars() -> None:
    """End every tqdm bar still open (a command stopped mid-loop): a bar redraws its line with a carriage return and
    no newline, so the error line written after it was glued to the bar's text instead of being a line of its own
    (issue 33: `trace memorization` interrupted while decoding)."""
    std = sys.modules.get("tqdm.std")
    for bar in list(getattr(getattr(std, "tqdm", None), "_instances", None) or []):
        with contextlib.suppress(Exception):
            bar.close()


def _error_line(message: str) -> None:
    _close_progress_bars()
    # One write with its newline: under `accelerate launch` every rank reports the same error into one pipe, and
    # print()'s separate write of "\n" let two ranks' lines run together (CI, issue 11).
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
