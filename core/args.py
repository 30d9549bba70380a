"""The one way a verb reads its command line: `args = parse(FindArgs, argv, "trace find")`.

Built on core/hf_argparser.py (transformers' HfArgumentParser, numbers checked, errors as one `error:` line):
- the usage names the full verb: `usage: gpt2-owt trace find [-h] ...`;
- a flag the verb does not know is refused before any other check, with its closest match:
  `error: unknown flag --txt: did you mean --text? (--help lists the flags)`;
- help texts say their default once (a help that words its own default gets no `(default: None)` after it).

Standard library only: every verb parses its flags before it imports torch, transformers, deepspeed, bergson or
gradio, so `--help` and a bad flag answer at once.
"""

import argparse
import difflib
import re
import sys
from collections.abc import Iterable

from .errors import UserError
from .hf_argparser import HfArgumentParser

PROGRAM = "gpt2-owt"
NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")  # a value, not a flag (argparse's own rule)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends `(default: X)` only to a help that does not already say its default, and never `(default: None)`."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is None or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def command_argv(argv: Iterable[str] | None) -> list[str]:
    """The verb's arguments: `argv`, or the process's own after the program name."""
    return list(sys.argv[1:] if argv is None else argv)


def unknown_flag(argv: list[str], known: set[str]) -> str | None:
    """The `error:` text for the first flag of `argv` outside `known` (None: every flag is known)."""
    for token in argv:
        if token == "--":
            return None
        if not token.startswith("-") or token == "-" or NEGATIVE_NUMBER.match(token):
            continue
        name = token.split("=", 1)[0]
        if name in known:
            continue
        close = difflib.get_close_matches(name, sorted(k for k in known if k.startswith("--")), n=1, cutoff=0.6)
        hint = f": did you mean {close[0]}?" if close else ""
        return f"unknown flag {name}{hint} (--help lists the flags)"
    return None


def parse(dataclass_type, argv: Iterable[str] | None = None, verb: str = "", *, positional: str | None = None,
          overrides: Iterable[str] | None = None, error: type[Exception] = UserError):
    """The verb's dataclass from `argv` (default: the process's arguments).

    `verb`: the words after `gpt2-owt` (the usage line names them). `positional`: a field that may also be given as
    one leading positional argument (`gpt2-owt upload RELEASE ...`). `overrides`: field names of another config the
    verb accepts as `--name value` after its own flags; then (args, the override strings) is returned. A bad flag
    raises `error` (UserError by default: one line, exit 2).
    """
    argv = command_argv(argv)

    class Parser(HfArgumentParser):
        def error(self, message):
            raise error(message)

    usage, description = None, None
    if positional:
        usage = f"%(prog)s [{positional.upper()}] [flags]"
        description = f"{positional.upper()} may be given as the first argument or as --{positional}."
    parser = Parser(dataclass_type, prog=f"{PROGRAM} {verb}".strip(), usage=usage, description=description,
                    formatter_class=HelpFormatter)
    known = set(parser._option_string_actions) | {f"--{name}" for name in overrides or ()}
    message = unknown_flag(argv, known)
    if message:
        raise error(message)
    args, rest = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if overrides is not None:
        return args, rest
    if positional:
        if len(rest) > 1 or (rest and getattr(args, positional)):
            raise error("give exactly one release folder")
        if rest:
            setattr(args, positional, rest[0])
    elif rest:
        raise error(f"unrecognized arguments: {' '.join(rest)}")
    return args
