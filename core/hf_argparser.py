"""The parser under core/args.py (every verb parses through its `parse`): transformers' `HfArgumentParser`, with
numbers validated where they are parsed and errors as one `error:` line, loaded without importing transformers (~2 s
on a shared CPU).

Numbers: every float field of every parsed dataclass must be finite (`--learning_rate nan`, `--gpu_watts inf` are
refused), and a field's metadata may bound it: `field(default=0.0, metadata={"help": ..., "ge": 0})` (keys "gt",
"ge", "lt", "le"). Bad flags raise UserError (exit 2 through `cli_main`) instead of argparse's usage dump; `--help`
still prints the usage and exits 0.

`transformers/hf_argparser.py` needs only the standard library and PyYAML, but `from transformers import ...`
first runs the package's __init__ (dependency checks, hub utilities). Light commands (`manifest verify`,
`upload.py`, `model_card.build`, `data_order`) load that one file directly, as its own module; if a future
transformers release makes it depend on the rest of the package, the normal import is used instead.
"""

import copy
import dataclasses
import importlib.util
import math
import operator
import types

from .errors import UserError


def _load_standalone():
    spec = importlib.util.find_spec("transformers")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = f"{list(spec.submodule_search_locations)[0]}/hf_argparser.py"
    module_spec = importlib.util.spec_from_file_location("gpt2_owt_hf_argparser", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except (ImportError, OSError):
        return None
    return module.HfArgumentParser


_HfArgumentParser = _load_standalone()
if _HfArgumentParser is None:
    from transformers import HfArgumentParser as _HfArgumentParser

BOUNDS = {"gt": (operator.gt, ">"), "ge": (operator.ge, ">="), "lt": (operator.lt, "<"), "le": (operator.le, "<=")}


def check_numbers(obj, prefix: str = "--") -> None:
    """UserError for a float field of dataclass `obj` that is NaN/inf, or a number outside its metadata bounds
    (None = unset is always allowed)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if isinstance(v, float) and not math.isfinite(v):
                raise UserError(f"{prefix}{f.name} must be a finite number, got {v}")
            for key, (holds, sign) in BOUNDS.items():
                if key in f.metadata and not holds(v, f.metadata[key]):
                    raise UserError(f"{prefix}{f.name} must be {sign} {f.metadata[key]}, got {v}")


class HfArgumentParser(_HfArgumentParser):
    """transformers' parser whose every result has its numbers checked (check_numbers) and whose errors are
    UserErrors (one line, exit 2)."""

    def error(self, message):
            raise UserError(message)

    @staticmethod
    def _parse_dataclass_field(parser, field):
        """The bounds are ours, not argparse's: the field reaches add_argument without them."""
        if any(key in field.metadata for key in BOUNDS):
            field = copy.copy(field)
            field.metadata = types.MappingProxyType({k: v for k, v in field.metadata.items() if k not in BOUNDS})
        _HfArgumentParser._parse_dataclass_field(parser, field)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # `--learning_rat 1` is a typo, not --learning_rate
        super().__init__(*args, **kwargs)

    def parse_args_into_dataclasses(self, args=None, return_remaining_strings=False, **kwargs):
        *outputs, rest = super().parse_args_into_dataclasses(args=args, return_remaining_strings=True, **kwargs)
        for obj in outputs:
            if dataclasses.is_dataclass(obj):
                check_numbers(obj)
        if return_remaining_strings:
            return (*outputs, rest)
        if rest:
            self.error(f"unrecognized arguments: {' '.join(rest)}")
        return tuple(outputs)

    def parse_dict(self, *args, **kwargs):
        outputs = super().parse_dict(*args, **kwargs)
        for obj in outputs:
            check_numbers(obj, prefix="")
        return outputs
