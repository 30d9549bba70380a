"""Build a fresh GPT-2 from a preset or config path, with GPT-2's initialisation.

Initialisation is Hugging Face's `GPT2PreTrainedModel._init_weights`, which is GPT-2's scheme (checked by
tests/test_modeling.py): Linear/Conv1D and embedding weights ~ N(0, initializer_range), biases 0, LayerNorm
(1, 0), and the residual projections `attn.c_proj`/`mlp.c_proj` ~ N(0, initializer_range / sqrt(2 * n_layer)).
"""

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from gpt2_owt.core.errors import UserError

from .config import load_config

ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")


def build_model(
    config: str | GPT2Config = "gpt2-124m", attn_implementation: str = "sdpa", seed: int | None = None
) -> GPT2LMHeadModel:
    """A freshly initialised `GPT2LMHeadModel` (fp32). `seed` makes the initial weights reproducible."""
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise UserError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {attn_implementation!r}")
    if not isinstance(config, GPT2Config):
        config = load_config(config)
    config._attn_implementation = attn_implementation
    if seed is not None:
        torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied input/output embeddings counted once), as GPT-2's 124M is counted."""
    return sum(p.numel() for p in model.parameters())


def fuse_gelu(model: torch.nn.Module) -> int:
    """Swap every `gelu_new` activation (GPT-2's tanh approximation, ~8 elementwise ops in eager mode) for the
    one-kernel `F.gelu(approximate="tanh")`: the same function (max difference measured by tests/test_speed.py), no
    weights, `config.json` unchanged. The trainer and eval.evaluate use it; returns how many were swapped."""
    from transformers.activations import GELUTanh, NewGELUActivation

    swapped = 0
    for module in model.modules():
        for name, child in module.named_children():
            if type(child) is NewGELUActivation:
                setattr(module, name, GELUTanh())
                swapped += 1
    return swapped
