"""Load a release, or checkpoint N of a series, into TransformerLens.

    bridge = load_transformer_lens("runs/tiny", step=8)           # a run folder: runs/tiny/hf/step8
    bridge = load_transformer_lens("user/gpt2-owt", step=8)       # a Hub repo: branch step8
    available_steps("user/gpt2-owt")                              # [0, 1, 2, 4, 8, ...]

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

import re
from pathlib import Path

from .errors import UserError
from .hub_branches import step_branches
from .steps import parse_step_name, step_name
from .model_folder import check_model_folder
from .tokenizer import TOKENIZER_FILES, load_tokenizer

REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
MODEL_FILES = ["config.json", "generation_config.json", "model.safetensors", *TOKENIZER_FILES]


def _is_hub_id(repo_or_run_dir) -> bool:
    return not Path(repo_or_run_dir).exists() and bool(REPO_ID.match(str(repo_or_run_dir)))


def _exports(run_dir: Path) -> Path:
    return run_dir / "hf" if (run_dir / "hf").is_dir() else run_dir


def available_steps(repo_or_run_dir: str | Path) -> list[int]:
    """Steps that `load_transformer_lens(..., step=N)` can load: a run's hf/stepN exports or a repo's step{N} branches."""
    if _is_hub_id(repo_or_run_dir):
        return [step for step, _ in step_branches(str(repo_or_run_dir))]
    folder = _exports(Path(repo_or_run_dir))
    if not folder.is_dir():
        raise UserError(f"run folder not found: {repo_or_run_dir}")
    found = [(parse_step_name(p.name), p) for p in folder.iterdir()]
    return sorted(step for step, p in found if step is not None and (p / "config.json").is_file())


def checkpoint_folder(repo_or_run_dir: str | Path, step: int | None = None) -> Path:
    """A local `from_pretrained` folder for the release (step None) or step N of a run folder or Hub repo."""
    if _is_hub_id(repo_or_run_dir):
        from huggingface_hub import snapshot_download

        if step is not None and step not in (steps := available_steps(repo_or_run_dir)):
            raise UserError(f"{repo_or_run_dir} has no branch step{step}; available steps: {steps}")
        revision = None if step is None else step_name(step)
        return Path(snapshot_download(str(repo_or_run_dir), revision=revision, allow_patterns=MODEL_FILES))
    path = Path(repo_or_run_dir)
    if step is None:
        return path if (path / "config.json").is_file() or not (path / "hf" / "final").is_dir() else path / "hf" / "final"
    folder = _exports(path) / step_name(step)
    if not (folder / "config.json").is_file():
        raise UserError(f"{path} has no export of step {step}; available steps: {available_steps(path)}")
    return folder


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
