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
