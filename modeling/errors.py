"""User-facing errors: every stage command turns these into one line on stderr and exit code 2.

Anything else that escapes a command is a bug and keeps its traceback.
"""

import functools
import sys


class UserError(Exception):
    """A bad input the user can fix (wrong path, bad flag value, mismatched files...)."""


def first_line(e: Exception) -> str:
    """The first line of an exception's message (library errors append request ids, URLs, hints)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def cli_main(fn):
    """Decorate a `main(argv=None)` so a UserError prints `error: ...` and exits 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            # One write with its newline: under `accelerate launch` every rank reports the same error into one
            # pipe, and print()'s separate write of "\n" let two ranks' lines run together (CI, issue 11).
            sys.stderr.write(f"error: {e}\n")
            sys.stderr.flush()
            raise SystemExit(2) from None

    return wrapper
