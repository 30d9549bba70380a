"""Convert nanoGPT / llm.c checkpoints to and from `from_pretrained` GPT-2 folders.

    gpt2-owt convert --from nanogpt out/ckpt.pt --output_dir gpt2-from-nanogpt
    gpt2-owt convert --from llmc gpt2_124M.bin --output_dir gpt2-from-llmc
    gpt2-owt convert --to nanogpt --model release/ --output ckpt.pt [--pad_vocab 50304]
    gpt2-owt convert --to llmc --model release/ --output gpt2_124M.bin [--dtype bfloat16]

(console script: `gpt2-owt-convert`). Imported folders get our tokenizer, generation config and a
`conversion.json` naming the source file by SHA-256. Format details: `modeling/nanogpt.py`, `modeling/llmc.py`; they
and transformers (torch, ~2 s) are imported by the functions that convert, so `--help` and a bad flag answer at once.
"""

import sys
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from gpt2_owt.core.args import parse
from gpt2_owt.core.errors import UserError, cli_main
from gpt2_owt.core.output_paths import (check_not_overlapping, check_output_file, check_replaceable_folder,
                                        check_writable_location, refuse_symlink, write_error)
from gpt2_owt.core.records import sha256_file

from .hf_folder import load_hf_model, save_hf_folder
from .tokenizer import tokenizer_fingerprint

FORMATS = ("nanogpt", "llmc")
CONVERSION_INFO = "conversion.json"  # marks a folder this command imported (the only kind --overwrite replaces)


@dataclass
class ConvertArguments:
    source: list[str] = field(default_factory=list, metadata={
        "aliases": ["--from"], "help": "import: FORMAT PATH, FORMAT one of nanogpt, llmc"})
    output_dir: str | None = field(default=None, metadata={"help": "import: the from_pretrained folder to write"})
    target: str | None = field(default=None, metadata={
        "aliases": ["--to"], "help": "export: FORMAT, one of nanogpt, llmc"})
    model: str | None = field(default=None, metadata={"help": "export: the from_pretrained folder to read"})
    output: str | None = field(default=None, metadata={"help": "export: the checkpoint file to write"})
    keep_vocab_padding: bool = field(default=False, metadata={
        "help": "nanoGPT import: keep embedding rows past 50257 (exact nanoGPT softmax) instead of slicing them"})
    activation_function: str | None = field(default=None, metadata={
        "help": "import: override the activation (default: the format's own, gelu for nanoGPT, gelu_new for llm.c)"})
    pad_vocab: int | None = field(default=None, metadata={
        "help": "export: pad the vocabulary with zero rows to this size (nanogpt: none; llmc: next multiple of 128)"})
    bias: bool | None = field(default=None, metadata={
        "help": "nanoGPT export: bias flag (default: false exactly when every bias is zero)"})
    dtype: str = field(default="float32", metadata={"help": "llm.c export: float32 (version 3) or bfloat16 (version 5)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output"})

    def __post_init__(self):
        if bool(self.source) == bool(self.target):
            raise UserError("give exactly one of --from FORMAT PATH (import) or --to FORMAT (export)")
        if self.source:
            if len(self.source) != 2:
                raise UserError(f"--from takes FORMAT PATH, got {self.source}")
            check_format(self.source[0])
            if not self.output_dir:
                raise UserError("--from needs --output_dir")
            from transformers.activations import ACT2FN

            if self.activation_function and self.activation_function not in ACT2FN:
                raise UserError(f"unknown --activation_function {self.activation_function!r} (e.g. gelu, gelu_new)")
        else:
            check_format(self.target)
            from . import llmc

            if self.dtype not in llmc.DTYPE_VERSIONS:
                raise UserError(f"--dtype must be one of {', '.join(llmc.DTYPE_VERSIONS)}, got {self.dtype!r}")
            if not self.model or not self.output:
                raise UserError("--to needs --model DIR and --output FILE")


def check_format(name: str) -> None:
    if name not in FORMATS:
        raise UserError(f"unknown checkpoint format {name!r} (known: {', '.join(FORMATS)})")


def import_checkpoint(fmt: str, path: str | Path, output_dir: str | Path, *, keep_vocab_padding: bool = False,
                      activation_function: str | None = None, overwrite: bool = False) -> Path:
    """nanoGPT `ckpt.pt` or llm.c `.bin` -> a `from_pretrained` folder with our tokenizer."""
    from . import llmc, nanogpt

    path = Path(path)
    check_import_output(path, Path(output_dir), overwrite)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", nanogpt.ConversionWarning)
        if fmt == "nanogpt":
            state_dict, model_args = nanogpt.load_nanogpt_checkpoint(path)
            model = nanogpt.from_nanogpt(state_dict, model_args, slice_vocab=not keep_vocab_padding,
                                         activation_function=activation_function or nanogpt.NANOGPT_ACTIVATION)
        else:
            model = llmc.load_llmc(path)
            if activation_function:
                model.config.activation_function = activation_function
    notes = [str(w.message) for w in caught if issubclass(w.category, nanogpt.ConversionWarning)]
    for w in caught:  # replay them to the caller (and the CLI's stderr)
        warnings.warn(w.message, w.category, stacklevel=2)
    info = {"source_format": fmt, "source_file": path.name, "source_sha256": sha256_file(path),
            "activation_function": model.config.activation_function, "vocab_size": model.config.vocab_size,
            "tokenizer_fingerprint": tokenizer_fingerprint(), "notes": notes}
    try:
        return save_hf_folder(model, output_dir, extra_json={CONVERSION_INFO: info}, overwrite=overwrite)
    except Exception as e:  # full disk (an OSError, or safetensors' SafetensorError): save_hf_folder cleaned up
        error = write_error(output_dir, e)
        if error is None:
            raise
        raise error from None


def check_import_output(source: Path, output_dir: Path, overwrite: bool) -> None:
    """Before converting: the folder is apart from the source file, writable, and --overwrite replaces only a folder
    this command imported (it holds conversion.json)."""
    refuse_symlink(output_dir, "--output_dir")
    check_not_overlapping(output_dir, {"source checkpoint": source}, "--output_dir")
    if overwrite:
        check_replaceable_folder(output_dir, CONVERSION_INFO, "modeling.convert")
    elif output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output_dir {output_dir} is an existing file, not a folder")
    check_writable_location(output_dir, "--output_dir")


def is_export_of(fmt: str, path: Path) -> bool:
    """Whether `path` is a file of format `fmt` (what --overwrite may replace): a torch zip or an llm.c header."""
    if fmt == "nanogpt":
        return zipfile.is_zipfile(path)
    from . import llmc

    with open(path, "rb") as f:
        return int.from_bytes(f.read(4), "little") == llmc.MAGIC


def check_export_output(fmt: str, model_dir: Path, output: Path, overwrite: bool) -> None:
    refuse_symlink(output, "--output")
    check_output_file(output, "--output")
    check_not_overlapping(output, {"model folder": model_dir}, "--output")
    if output.exists() and not overwrite:
        raise UserError(f"output file {output} already exists (pass --overwrite)")
    if output.exists() and not is_export_of(fmt, output):
        raise UserError(f"--output {output} is not a {fmt} checkpoint file; --overwrite replaces only a file of the "
                        "format being written, refusing to replace it")
    if not output.parent.is_dir():
        raise UserError(f"output folder {output.parent} does not exist")


def export_checkpoint(fmt: str, model_dir: str | Path, output: str | Path, *, pad_vocab: int | None = None,
                      bias: bool | None = None, dtype: str = "float32", overwrite: bool = False) -> Path:
    """A `from_pretrained` folder -> nanoGPT `ckpt.pt` or llm.c `.bin` (written to a temp name, then renamed)."""
    from . import llmc, nanogpt

    output = Path(output)
    check_export_output(fmt, Path(model_dir), output, overwrite)
    model = load_hf_model(model_dir)
    try:
        if fmt == "nanogpt":
            nanogpt.warn_activation(model.config, nanogpt.NANOGPT_ACTIVATION, "nanoGPT")
            state_dict, model_args = nanogpt.to_nanogpt(model, bias=bias, pad_vocab=pad_vocab)
            nanogpt.save_nanogpt_checkpoint(output, state_dict, model_args)
        else:
            header, tensors = llmc.to_llmc(model, dtype=dtype, pad_vocab=pad_vocab)
            llmc.write_llmc(output, header, tensors)
    except Exception as e:  # full disk, read-only location: the writers have removed their temp file
        error = write_error(output, e)
        if error is None:
            raise
        raise error from None
    return output


def print_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = parse(ConvertArguments, argv, "convert")
    from . import nanogpt

    with warnings.catch_warnings():
        warnings.showwarning = print_warning  # one plain line each, not a source location
        # every conversion says what it changed, whatever filters earlier code left ("once", "ignore")
        warnings.simplefilter("always", nanogpt.ConversionWarning)
        run(args)


def run(args: ConvertArguments) -> None:
    if args.source:
        fmt, path = args.source
        out = import_checkpoint(fmt, path, args.output_dir, keep_vocab_padding=args.keep_vocab_padding,
                                activation_function=args.activation_function, overwrite=args.overwrite)
    else:
        out = export_checkpoint(args.target, args.model, args.output, pad_vocab=args.pad_vocab, bias=args.bias,
                                dtype=args.dtype, overwrite=args.overwrite)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
