"""User-facing errors: every stage command turns these into one line on stderr and exit code 2; Ctrl-C / SIGTERM
into one line and exit 130 / 143 (core/interrupts.py).

Anything else that escapes a command is a bug and keeps its traceback.
"""

import functools
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

    return wrapper


def _error_line(message: str) -> None:
    # One write with its newline: under `accelerate launch` every rank reports the same error into one pipe, and
    # print()'s separate write of "\n" let two ranks' lines run together (CI, issue 11).
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
