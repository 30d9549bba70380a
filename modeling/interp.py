"""Load a release (any `from_pretrained` GPT-2 folder) into TransformerLens, offline.

Needs the `interp` extra (`pip install -e ".[interp]"`, transformer-lens 4.x). TransformerLens 4 dropped
`HookedTransformer.from_pretrained` for GPT-2-style checkpoints in favour of `TransformerBridge`, which wraps the
Hugging Face model itself:

- `compatibility_mode=False`: raw weights; logits equal `GPT2LMHeadModel`'s (eager attention) to ~1e-6.
- `compatibility_mode=True` (default): `enable_compatibility_mode()`, i.e. HookedTransformer's hook names
  (`hook_embed`, `blocks.0.attn.hook_pattern`, ...) and its weight processing (LayerNorm folded, weights and
  unembedding centred). Centring the unembedding shifts every logit of a position by the same amount, so
  log-probabilities (not raw logits) still equal the Hugging Face model's.

The tokenizer is the folder's own, hash-checked against the shipped one; nothing is fetched from the Hub.
"""

from pathlib import Path

from .errors import UserError
from .model_folder import check_model_folder
from .tokenizer import load_tokenizer


def load_transformer_lens(release_dir: str | Path, device: str = "cpu", compatibility_mode: bool = True):
    """A `transformer_lens.model_bridge.TransformerBridge` over the GPT-2 in `release_dir`."""
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        raise UserError('TransformerLens is not installed: pip install -e ".[interp]"') from None
    check_model_folder(release_dir, tokenizer=True)  # a clear error (wrong path, damaged file, another
    # architecture) before TransformerLens builds anything or tries the Hub
    bridge = TransformerBridge.boot_transformers(str(release_dir), device=device,
                                                 tokenizer=load_tokenizer(release_dir))
    if compatibility_mode:
        bridge.enable_compatibility_mode(disable_warnings=True)
    return bridge
