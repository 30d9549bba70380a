"""llm.c model files (`gpt2_124M.bin`, `gpt2_124M_bf16.bin`) <-> `GPT2LMHeadModel`.

The format is what karpathy/llm.c `train_gpt2.py` `write_model` writes and `train_gpt2.c`/`train_gpt2.cu`
`gpt2_build_from_checkpoint` reads:

- a header of 256 int32: magic 20240326, version (3: fp32, 5: bf16), maxT, V, L, NH, C, Vp, zeros;
- then 16 tensors back to back, all in the version's dtype, each stacked over layers, in `LLMC_ORDER`.
  Weights are `nn.Linear` [out, in] (nanoGPT's layout); `wte` has Vp rows, the rows past V are zeros.

llm.c's softmax and loss only ever look at the first V logits, so slicing the padded rows away on import
changes nothing (unlike nanoGPT's padded vocab). llm.c's GELU is the tanh approximation (`gelu_new`).
Conversion goes through the nanoGPT-layout state dict of `modeling/nanogpt.py`.
"""

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2LMHeadModel

from gpt2_owt.core.errors import UserError

from .nanogpt import ConversionWarning, from_nanogpt, to_nanogpt, warn_activation
from .tokenizer import VOCAB_SIZE

MAGIC = 20240326
HEADER_INTS = 256
VERSION_DTYPES = {3: torch.float32, 5: torch.bfloat16}
DTYPE_VERSIONS = {"float32": 3, "bfloat16": 5}
LLMC_ACTIVATION = "gelu_new"  # llm.c's GELU: the tanh approximation, as OpenAI's GPT-2
VOCAB_MULTIPLE = 128  # llm.c's pad_vocab: 50257 -> 50304

# llm.c's tensor order: (llm.c's name, nanoGPT name — per layer when "layer", else global —, kind)
LLMC_ORDER = [
    ("wte", "transformer.wte.weight", None),
    ("wpe", "transformer.wpe.weight", None),
    ("ln1w", "ln_1.weight", "layer"), ("ln1b", "ln_1.bias", "layer"),
    ("qkvw", "attn.c_attn.weight", "layer"), ("qkvb", "attn.c_attn.bias", "layer"),
    ("attprojw", "attn.c_proj.weight", "layer"), ("attprojb", "attn.c_proj.bias", "layer"),
    ("ln2w", "ln_2.weight", "layer"), ("ln2b", "ln_2.bias", "layer"),
    ("fcw", "mlp.c_fc.weight", "layer"), ("fcb", "mlp.c_fc.bias", "layer"),
    ("fcprojw", "mlp.c_proj.weight", "layer"), ("fcprojb", "mlp.c_proj.bias", "layer"),
    ("lnfw", "transformer.ln_f.weight", None), ("lnfb", "transformer.ln_f.bias", None),
]


@dataclass(frozen=True)
class LlmcHeader:
    version: int
    max_seq_len: int  # maxT
    vocab_size: int  # V
    num_layers: int  # L
    num_heads: int  # NH
    channels: int  # C
    padded_vocab_size: int  # Vp

    @property
    def dtype(self) -> torch.dtype:
        return VERSION_DTYPES[self.version]

    def tensor_shapes(self) -> dict:
        """llm.c's 16 tensors, in file order, with their stacked shapes."""
        L, C = self.num_layers, self.channels
        per_layer = {"ln1w": (C,), "ln1b": (C,), "qkvw": (3 * C, C), "qkvb": (3 * C,), "attprojw": (C, C),
                     "attprojb": (C,), "ln2w": (C,), "ln2b": (C,), "fcw": (4 * C, C), "fcb": (4 * C,),
                     "fcprojw": (C, 4 * C), "fcprojb": (C,)}
        shapes = {"wte": (self.padded_vocab_size, C), "wpe": (self.max_seq_len, C)}
        shapes.update({name: (L, *shape) for name, shape in per_layer.items()})
        shapes.update({"lnfw": (C,), "lnfb": (C,)})
        return {name: shapes[name] for name, _, _ in LLMC_ORDER}

    def num_bytes(self) -> int:
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        return HEADER_INTS * 4 + itemsize * sum(int(np.prod(s)) for s in self.tensor_shapes().values())

    def to_ints(self) -> np.ndarray:
        ints = np.zeros(HEADER_INTS, dtype=np.int32)
        ints[:8] = [MAGIC, self.version, self.max_seq_len, self.vocab_size, self.num_layers, self.num_heads,
                    self.channels, self.padded_vocab_size]
        return ints


def read_header(path: Path) -> LlmcHeader:
    size = path.stat().st_size
    if size < HEADER_INTS * 4:
        raise UserError(f"{path} is {size} bytes, shorter than llm.c's {HEADER_INTS * 4}-byte header")
    ints = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if ints[0] != MAGIC:
        raise UserError(f"{path} is not an llm.c GPT-2 model file (magic {ints[0]}, expected {MAGIC})")
    if ints[1] not in VERSION_DTYPES:
        raise UserError(f"{path}: llm.c model version {ints[1]} is not supported (3: fp32, 5: bf16)")
    header = LlmcHeader(*(int(x) for x in ints[1:8]))
    if min(header.max_seq_len, header.vocab_size, header.num_layers, header.num_heads, header.channels) <= 0:
        raise UserError(f"{path}: header has non-positive sizes {ints[2:8].tolist()}")
    if header.padded_vocab_size < header.vocab_size or header.channels % header.num_heads:
        raise UserError(f"{path}: inconsistent header (V={header.vocab_size}, Vp={header.padded_vocab_size}, "
                        f"C={header.channels}, NH={header.num_heads})")
    expected = header.num_bytes()
    if size < expected:
        raise UserError(f"{path} is truncated: its header implies {expected} bytes, the file has {size}")
    if size > expected:
        raise UserError(f"{path} has {size - expected} unexpected bytes after the {expected} its header implies")
    return header


def read_llmc(path: str | Path) -> tuple[LlmcHeader, dict]:
    """`(header, tensors)`: llm.c's 16 named tensors (fp32 or bf16, as stored), shapes per `tensor_shapes()`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"llm.c model file not found: {path}")
    header = read_header(path)
    raw_dtype = np.float32 if header.dtype == torch.float32 else np.int16  # bf16 travels as raw 16-bit words
    flat = torch.from_numpy(np.fromfile(path, dtype=raw_dtype, offset=HEADER_INTS * 4))
    if header.dtype == torch.bfloat16:
        flat = flat.view(torch.bfloat16)
    tensors, offset = {}, 0
    for name, shape in header.tensor_shapes().items():
        count = int(np.prod(shape))
        tensors[name] = flat[offset:offset + count].reshape(shape)
        offset += count
    return header, tensors


def write_llmc(path: str | Path, header: LlmcHeader, tensors: dict) -> None:
    """Write header + tensors (cast to the header's dtype, round-to-nearest like llm.c's `write_bf16`)."""
    path = Path(path)
    shapes = header.tensor_shapes()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(header.to_ints().tobytes())
            for name, shape in shapes.items():
                t = tensors[name].detach().to(header.dtype).contiguous()
                assert tuple(t.shape) == shape, (name, tuple(t.shape), shape)
                f.write((t if header.dtype == torch.float32 else t.view(torch.int16)).numpy().tobytes())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def llmc_to_nanogpt(header: LlmcHeader, tensors: dict) -> tuple[dict, dict]:
    """Unstack llm.c's tensors into a nanoGPT-layout state dict (fp32) and its `model_args`."""
    V = header.vocab_size
    wte = tensors["wte"].float()
    if wte[V:].any():
        warnings.warn(f"llm.c padded vocab rows {V}..{header.padded_vocab_size - 1} are not zero; dropping them "
                      "(llm.c never reads them)", ConversionWarning)
    sd = {"transformer.wte.weight": wte[:V]}
    for short, name, kind in LLMC_ORDER[1:]:
        t = tensors[short].float()
        if kind == "layer":
            sd.update({f"transformer.h.{i}.{name}": t[i] for i in range(header.num_layers)})
        else:
            sd[name] = t
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    model_args = dict(n_layer=header.num_layers, n_head=header.num_heads, n_embd=header.channels,
                      block_size=header.max_seq_len, bias=True, vocab_size=V, dropout=0.0)
    return sd, model_args


def load_llmc(path: str | Path) -> GPT2LMHeadModel:
    """A `GPT2LMHeadModel` (fp32; bf16 files upcast exactly) from an llm.c model file."""
    header, tensors = read_llmc(path)
    if header.vocab_size != VOCAB_SIZE:
        raise UserError(f"{path}: vocab size {header.vocab_size} is not GPT-2's {VOCAB_SIZE}")
    sd, model_args = llmc_to_nanogpt(header, tensors)
    return from_nanogpt(sd, model_args, activation_function=LLMC_ACTIVATION)


def padded_vocab(vocab_size: int, multiple: int = VOCAB_MULTIPLE) -> int:
    return -(-vocab_size // multiple) * multiple


def to_llmc(model: GPT2LMHeadModel, dtype: str = "float32", pad_vocab: int | None = None) -> tuple[LlmcHeader, dict]:
    """`(header, tensors)` for `write_llmc`; `pad_vocab` defaults to llm.c's next multiple of 128."""
    if dtype not in DTYPE_VERSIONS:
        raise UserError(f"llm.c dtype must be one of {sorted(DTYPE_VERSIONS)}, got {dtype!r}")
    warn_activation(model.config, LLMC_ACTIVATION, "llm.c")
    V = model.config.vocab_size
    if V != VOCAB_SIZE:  # e.g. a nanoGPT import that kept its padded rows: llm.c would take them for real tokens
        raise UserError(f"llm.c export needs GPT-2's {VOCAB_SIZE}-token vocabulary, the model has {V} "
                        "(re-import it without --keep_vocab_padding)")
    Vp = padded_vocab(V) if pad_vocab is None else pad_vocab
    sd, args = to_nanogpt(model, bias=True, pad_vocab=Vp)
    header = LlmcHeader(DTYPE_VERSIONS[dtype], args["block_size"], V, args["n_layer"], args["n_head"],
                        args["n_embd"], Vp)
    tensors = {}
    for short, name, kind in LLMC_ORDER:
        if kind == "layer":
            tensors[short] = torch.stack([sd[f"transformer.h.{i}.{name}"] for i in range(header.num_layers)])
        else:
            tensors[short] = sd[name]
    return header, tensors
