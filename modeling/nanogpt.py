"""nanoGPT checkpoints (`ckpt.pt`) <-> `GPT2LMHeadModel`.

nanoGPT (karpathy/nanoGPT `model.py`, `train.py`) saves `{"model": state_dict, "model_args": {n_layer, n_head,
n_embd, block_size, bias, vocab_size, dropout}, ...}`. Its parameter names are Hugging Face GPT-2's names, with
three differences this module bridges:

- the four matmul weights are `nn.Linear` ([out, in]) where HF GPT-2 uses `Conv1D` ([in, out]): transposed, the
  same list nanoGPT's own `GPT.from_pretrained` transposes;
- `bias=False` models have no Linear/LayerNorm biases; HF GPT-2 always has them, so they are imported as zeros
  (the same function) and exported back as absent when they are all still exactly zero;
- `vocab_size` is usually padded 50257 -> 50304 for speed. The padded rows are real logits in nanoGPT's softmax,
  so slicing them off (the default, so the model matches the 50257-token tokenizer) changes log-probabilities
  slightly; `slice_vocab=False` keeps them and the model then reproduces nanoGPT's outputs exactly.

`torch.compile` prefixes every key with `_orig_mod.`; older nanoGPT (no flash attention) also stores each
layer's causal mask as the buffer `attn.bias`. Both are handled on import. nanoGPT's MLP uses `nn.GELU()`, the
exact erf GELU, so imports use `activation_function="gelu"` (not GPT-2's tanh approximation `gelu_new`).

The nanoGPT-layout state dict is also the meeting point for llm.c files (`modeling/llmc.py`).
"""

import os
import warnings
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from gpt2_owt.core.errors import UserError

from .config import load_config
from .tokenizer import VOCAB_SIZE

MODEL_ARGS_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout")
LINEAR_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
COMPILE_PREFIX = "_orig_mod."
NANOGPT_ACTIVATION = "gelu"  # nanoGPT's nn.GELU(): exact erf GELU
LAYER_NORM_EPS = 1e-5  # nanoGPT and llm.c hard-code it


class ConversionWarning(UserWarning):
    """A conversion that changes behaviour slightly (vocab slicing, activation mismatch)."""


def parameter_shapes(n_layer: int, n_embd: int, vocab_size: int, block_size: int, bias: bool) -> dict:
    """nanoGPT's parameters, in its `state_dict()` order, with shapes (Linear weights are [out, in])."""
    C = n_embd
    shapes = {"transformer.wte.weight": (vocab_size, C), "transformer.wpe.weight": (block_size, C)}
    for i in range(n_layer):
        layer = {
            "ln_1.weight": (C,), "ln_1.bias": (C,),
            "attn.c_attn.weight": (3 * C, C), "attn.c_attn.bias": (3 * C,),
            "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
            "ln_2.weight": (C,), "ln_2.bias": (C,),
            "mlp.c_fc.weight": (4 * C, C), "mlp.c_fc.bias": (4 * C,),
            "mlp.c_proj.weight": (C, 4 * C), "mlp.c_proj.bias": (C,),
        }
        for name, shape in layer.items():
            if bias or not name.endswith(".bias"):
                shapes[f"transformer.h.{i}.{name}"] = shape
    shapes["transformer.ln_f.weight"] = (C,)
    if bias:
        shapes["transformer.ln_f.bias"] = (C,)
    shapes["lm_head.weight"] = (vocab_size, C)
    return shapes


def bias_names(n_layer: int) -> list[str]:
    """The parameters a `bias=False` nanoGPT model lacks."""
    with_bias = parameter_shapes(n_layer, 1, 1, 1, bias=True)
    return [name for name in with_bias if name not in parameter_shapes(n_layer, 1, 1, 1, bias=False)]


def _is_linear_weight(name: str) -> bool:
    return name.endswith(LINEAR_WEIGHTS)


def clean_state_dict(state_dict: dict) -> dict:
    """Strip `torch.compile`'s `_orig_mod.` prefix and drop the causal-mask buffers (`...attn.bias`)."""
    cleaned = {}
    for name, tensor in state_dict.items():
        if name.startswith(COMPILE_PREFIX):
            name = name[len(COMPILE_PREFIX):]
        if name.endswith(".attn.bias"):  # a [1, 1, T, T] mask, not a parameter
            continue
        cleaned[name] = tensor
    return cleaned


def validate_model_args(model_args) -> dict:
    """The seven nanoGPT `model_args`, type-checked; unknown extra keys are ignored with a warning."""
    if not isinstance(model_args, dict):
        raise UserError(f"nanoGPT model_args must be a dict, got {type(model_args).__name__}")
    missing = [k for k in MODEL_ARGS_KEYS if k not in model_args]
    if missing:
        raise UserError(f"nanoGPT model_args lacks {missing} (has {sorted(model_args)})")
    extra = sorted(set(model_args) - set(MODEL_ARGS_KEYS))
    if extra:
        warnings.warn(f"ignoring nanoGPT model_args keys this converter does not know: {extra}", ConversionWarning)
    args = {k: model_args[k] for k in MODEL_ARGS_KEYS}
    for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
        if not isinstance(args[k], int) or isinstance(args[k], bool) or args[k] <= 0:
            raise UserError(f"nanoGPT model_args[{k!r}] must be a positive int, got {args[k]!r}")
    if args["n_embd"] % args["n_head"]:
        raise UserError(f"n_embd {args['n_embd']} is not divisible by n_head {args['n_head']}")
    if args["vocab_size"] < VOCAB_SIZE:
        raise UserError(
            f"vocab_size {args['vocab_size']} < {VOCAB_SIZE}: not a GPT-2-tokenizer model (e.g. a character-level "
            "nanoGPT run), which this GPT-2 release format cannot represent"
        )
    args["bias"] = bool(args["bias"])
    args["dropout"] = float(args["dropout"])
    return args


def check_state_dict(state_dict: dict, shapes: dict, what: str) -> None:
    """Raise UserError naming the first mismatch between `state_dict` and the expected `shapes`."""
    missing = [k for k in shapes if k not in state_dict]
    unexpected = [k for k in state_dict if k not in shapes]
    if missing or unexpected:
        raise UserError(
            f"{what} does not match its model_args: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        )
    for name, shape in shapes.items():
        if tuple(state_dict[name].shape) != shape:
            raise UserError(
                f"{what}: {name} has shape {tuple(state_dict[name].shape)}, model_args imply {shape}"
            )


def gpt2_config(n_layer: int, n_head: int, n_embd: int, block_size: int, vocab_size: int,
                dropout: float = 0.0, activation_function: str = NANOGPT_ACTIVATION) -> GPT2Config:
    """Our GPT-2 preset reshaped: same token ids, eps 1e-5, tied embeddings."""
    config = load_config("gpt2-124m")
    config.update(dict(
        n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=block_size, vocab_size=vocab_size,
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, activation_function=activation_function,
        layer_norm_epsilon=LAYER_NORM_EPS,
    ))
    return config


def from_nanogpt(state_dict: dict, model_args: dict, *, slice_vocab: bool = True,
                 activation_function: str = NANOGPT_ACTIVATION) -> GPT2LMHeadModel:
    """A `GPT2LMHeadModel` (fp32) holding nanoGPT's weights.

    `slice_vocab`: drop embedding rows past 50257 (with a warning: nanoGPT's softmax ran over them too).
    """
    args = validate_model_args(model_args)
    sd = clean_state_dict(state_dict)
    L, V = args["n_layer"], args["vocab_size"]
    check_state_dict(sd, parameter_shapes(L, args["n_embd"], V, args["block_size"], args["bias"]), "nanoGPT state dict")
    if not torch.equal(sd["lm_head.weight"], sd["transformer.wte.weight"]):
        raise UserError("lm_head.weight differs from transformer.wte.weight: GPT-2 needs tied embeddings")

    hf = {name: (t.t() if _is_linear_weight(name) else t) for name, t in sd.items()}
    if not args["bias"]:  # zero biases compute exactly what bias=False computes
        warnings.warn("bias=False model: Linear and LayerNorm biases imported as zeros (the same function)",
                      ConversionWarning)
        zero_bias = parameter_shapes(L, args["n_embd"], V, args["block_size"], bias=True)
        hf.update({name: torch.zeros(zero_bias[name]) for name in bias_names(L)})
    if slice_vocab and V > VOCAB_SIZE:
        warnings.warn(
            f"vocab_size {V} sliced to {VOCAB_SIZE}: the {V - VOCAB_SIZE} padded logits are removed, so the "
            "softmax is normalised over the real tokens only and log-probs differ slightly from nanoGPT's "
            "(by the probability mass nanoGPT put on padding). Keep them with --keep_vocab_padding.",
            ConversionWarning,
        )
        hf["transformer.wte.weight"] = hf["transformer.wte.weight"][:VOCAB_SIZE]
        V = VOCAB_SIZE
    hf["lm_head.weight"] = hf["transformer.wte.weight"]

    config = gpt2_config(L, args["n_head"], args["n_embd"], args["block_size"], V, args["dropout"], activation_function)
    model = GPT2LMHeadModel(config)
    model.load_state_dict(hf, strict=True)  # copies into the model's own fp32 storage
    return model.eval()


def check_exportable(config: GPT2Config) -> None:
    """Refuse GPT-2 variants that nanoGPT and llm.c cannot express; warn about the GELU flavour elsewhere."""
    C = config.n_embd
    problems = []
    if config.n_inner not in (None, 4 * C):
        problems.append(f"n_inner={config.n_inner} (must be 4*n_embd)")
    if config.layer_norm_epsilon != LAYER_NORM_EPS:
        problems.append(f"layer_norm_epsilon={config.layer_norm_epsilon} (must be 1e-5)")
    if config.scale_attn_by_inverse_layer_idx or not config.scale_attn_weights:
        problems.append("non-standard attention scaling")
    if not config.tie_word_embeddings:
        problems.append("untied lm_head")
    if problems:
        raise UserError(f"model cannot be exported to nanoGPT/llm.c: {', '.join(problems)}")


def warn_activation(config: GPT2Config, target_activation: str, target: str) -> None:
    if config.activation_function != target_activation:
        warnings.warn(
            f"model uses activation {config.activation_function!r} but {target}'s MLP computes "
            f"{target_activation!r}: outputs there will differ slightly from this model's",
            ConversionWarning,
        )


def to_nanogpt(model: GPT2LMHeadModel, *, bias: bool | None = None, pad_vocab: int | None = None):
    """`(state_dict, model_args)` in nanoGPT's layout; tensors are fresh contiguous copies.

    `bias=None` exports `bias=False` exactly when every bias is zero (a bias-free model imported earlier), else
    True; `bias=False` with a non-zero bias is an error. `pad_vocab` appends zero embedding rows up to that size.
    """
    config = model.config
    check_exportable(config)
    L, V = config.n_layer, config.vocab_size
    hf = model.state_dict()
    if bias is None:
        bias = any(hf[name].any() for name in bias_names(L))
    elif not bias and any(hf[name].any() for name in bias_names(L)):
        raise UserError("--bias false, but the model has non-zero biases (exporting them as absent would change it)")
    padded = V if pad_vocab is None else pad_vocab
    if padded < V:
        raise UserError(f"pad_vocab {padded} is smaller than the model's vocab_size {V}")

    shapes = parameter_shapes(L, config.n_embd, padded, config.n_positions, bias)
    sd = {}
    for name in shapes:
        if name == "lm_head.weight":
            sd[name] = sd["transformer.wte.weight"]  # tied: one tensor, saved once, as nanoGPT does
        elif name == "transformer.wte.weight":
            wte = hf[name].detach().float()
            sd[name] = torch.cat([wte, wte.new_zeros(padded - V, wte.shape[1])]) if padded > V else wte.clone()
        else:
            t = hf[name].detach().float()
            sd[name] = t.t().contiguous() if _is_linear_weight(name) else t.clone()
    model_args = dict(n_layer=L, n_head=config.n_head, n_embd=config.n_embd, block_size=config.n_positions,
                      bias=bias, vocab_size=padded, dropout=float(config.resid_pdrop))
    return sd, model_args


def load_nanogpt_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """`(state_dict, model_args)` from a nanoGPT `ckpt.pt` (loaded with `weights_only=True`: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"nanoGPT checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, pickled code...
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load {path} as a torch checkpoint: {first_line}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise UserError(f"{path} is not a nanoGPT checkpoint (needs 'model' and 'model_args', has {keys})")
    return ckpt["model"], ckpt["model_args"]


def save_nanogpt_checkpoint(path: str | Path, state_dict: dict, model_args: dict) -> None:
    """Write `{"model", "model_args"}`: what nanoGPT's `sample.py` and `GPT(GPTConfig(**model_args))` need.

    No optimizer state, so nanoGPT's `train.py --init_from=resume` cannot continue from it.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save({"model": state_dict, "model_args": model_args}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
