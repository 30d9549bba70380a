"""transformers' `HfArgumentParser`, without importing transformers (~2 s on a shared CPU) for light commands.

`transformers/hf_argparser.py` needs only the standard library and PyYAML, but `from transformers import ...`
first runs the package's __init__ (dependency checks, hub utilities). Light commands (`manifest verify`,
`upload.py`, `model_card.build`, `data_order`) load that one file directly, as its own module; if a future
transformers release makes it depend on the rest of the package, the normal import is used instead.
"""

import importlib.util


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


HfArgumentParser = _load_standalone()
if HfArgumentParser is None:
    from transformers import HfArgumentParser  # noqa: F811


def parse_with_positional(dataclass_type, argv, field_name: str, error=None):
    """`dataclass_type` from argv by HfArgumentParser, where one optional positional argument may give `field_name`
    (`upload.py RELEASE ...`, `model_card.verify RELEASE`). Bad flags raise `error` (UserError by default)."""
    from .errors import UserError

    error = error or UserError

    class Parser(HfArgumentParser):
        def error(self, message):
            raise error(message)

    args, rest = Parser(dataclass_type).parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    unknown = [a for a in rest if a.startswith("-")]
    if unknown:
        raise error(f"unrecognized arguments: {' '.join(unknown)}")
    if len(rest) > 1 or (rest and getattr(args, field_name)):
        raise error("give exactly one release folder")
    if rest:
        setattr(args, field_name, rest[0])
    return args
