"""Load a release, or checkpoint N of a series, into TransformerLens.

    bridge = load_transformer_lens("runs/tiny", step=8)           # a run folder: runs/tiny/hf/step8
    bridge = load_transformer_lens("runs/tiny", step=200)         # its last step: hf/final (no hf/step200 needed)
    bridge = load_transformer_lens("user/gpt2-owt", step=8)       # a Hub repo: branch step8 (the last step: main)
    available_steps("user/gpt2-owt")                              # [0, 1, 2, 4, 8, ..., 200]

Checkpoints are listed and looked up by step through modeling/checkpoint_series.py, the listing every reader uses.

Needs the `interp` extra (`pip install -e ".[interp]"`, transformer-lens 4.x). TransformerLens 4 dropped
`HookedTransformer.from_pretrained` for GPT-2-style checkpoints in favour of `TransformerBridge`, which wraps the
Hugging Face model itself (and knows only Pythia's and stanford-crfm's checkpoint naming, hence this module):

- `compatibility_mode=False`: raw weights; logits equal `GPT2LMHeadModel`'s (eager attention) to ~1e-6.
- `compatibility_mode=True` (default): `enable_compatibility_mode()`, i.e. HookedTransformer's hook names
  (`hook_embed`, `blocks.0.attn.hook_pattern`, ...) and its weight processing (LayerNorm folded, weights and
  unembedding centred). Centring the unembedding shifts every logit of a position by the same amount, so
  log-probabilities (not raw logits) still equal the Hugging Face model's.

A Hub checkpoint is fetched with `snapshot_download` (weights, config, tokenizer only: not the optimizer state that
may share the branch) and then loaded like a local folder. The tokenizer is the folder's own, hash-checked against
the shipped one.
"""

from pathlib import Path

from gpt2_owt.core.errors import UserError

from .checkpoint_series import checkpoint_folder as series_folder
from .checkpoint_series import FINAL, HF_EXPORTS, distinct_steps, is_hub_id, list_checkpoints, select_checkpoint
from .model_folder import check_model_folder
from .tokenizer import load_tokenizer


def available_steps(repo_or_run_dir: str | Path) -> list[int]:
    """Steps that `load_transformer_lens(..., step=N)` can load: a run's exports or a repo's branches, the final
    step included (hf/final or main) whether or not it also has a stepN folder or branch."""
    return [c.step for c in distinct_steps(list_checkpoints(repo_or_run_dir))]


def checkpoint_folder(repo_or_run_dir: str | Path, step: int | None = None) -> Path:
    """A local `from_pretrained` folder for the release (step None) or step N of a run folder or Hub repo."""
    if step is None:
        if is_hub_id(repo_or_run_dir):
            return series_folder(select_checkpoint(list_checkpoints(repo_or_run_dir), "main", str(repo_or_run_dir)))
        path = Path(repo_or_run_dir)
        final = path / HF_EXPORTS / FINAL
        return path if (path / "config.json").is_file() or not final.is_dir() else final
    return series_folder(select_checkpoint(list_checkpoints(repo_or_run_dir), step, str(repo_or_run_dir)))


def load_transformer_lens(repo_or_run_dir: str | Path, step: int | None = None, device: str = "cpu",
                          compatibility_mode: bool = True):
    """A `transformer_lens.model_bridge.TransformerBridge` over a release folder, or step N of a run / Hub repo."""
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        raise UserError('TransformerLens is not installed: pip install -e ".[interp]"') from None
    folder = checkpoint_folder(repo_or_run_dir, step)
    check_model_folder(folder, tokenizer=True)  # a clear error (wrong path, damaged file, another architecture)
    # before TransformerLens builds anything or tries the Hub
    bridge = TransformerBridge.boot_transformers(str(folder), device=device, tokenizer=load_tokenizer(folder))
    if compatibility_mode:
        bridge.enable_compatibility_mode(disable_warnings=True)
    return bridge
