"""TransformerLens loads a saved release folder offline and agrees with GPT2LMHeadModel (the `interp` extra)."""

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import GPT2LMHeadModel

from gpt2_owt.core.errors import UserError
from gpt2_owt.modeling.hf_folder import save_hf_folder
from gpt2_owt.modeling.model import build_model
from gpt2_owt.modeling.tokenizer import load_tokenizer

pytest.importorskip("transformer_lens", reason='TransformerLens not installed (pip install -e ".[interp]")')

from gpt2_owt.modeling.interp import load_transformer_lens  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "attention_pattern.py"
PROMPT = "The cat sat on the mat because it was tired."


@pytest.fixture(scope="module", params=["gelu_new", "gelu"])  # our training config; a nanoGPT import
def release_dir(request, tmp_path_factory):
    model = build_model("tiny", seed=3)
    model.config.activation_function = request.param
    with torch.no_grad():  # non-trivial biases and LayerNorms, so weight processing is exercised
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return save_hf_folder(model, tmp_path_factory.mktemp("tl") / f"release-{request.param}")


def hf_reference(release_dir, ids):
    model = GPT2LMHeadModel.from_pretrained(release_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(ids, output_attentions=True)
    return out.logits, out.attentions


def test_raw_bridge_logits_equal_hf(release_dir):
    bridge = load_transformer_lens(release_dir, compatibility_mode=False)
    ids = load_tokenizer(release_dir)(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = bridge(ids)
    ref, _ = hf_reference(release_dir, ids)
    assert logits.shape == ref.shape == (1, ids.shape[1], 50257)
    assert (logits - ref).abs().max().item() < 1e-5


def test_compatibility_mode_hooks_and_log_probs(release_dir):
    bridge = load_transformer_lens(release_dir)  # compatibility mode: folded LayerNorm, centred weights
    ids = bridge.to_tokens(PROMPT)
    assert ids[0, 0].item() == 50256  # TransformerLens prepends <|endoftext|> as BOS
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(ids)
    ref_logits, ref_attn = hf_reference(release_dir, ids)
    # centring the unembedding shifts each position's logits by a constant: log-probs are unchanged
    assert (logits.log_softmax(-1) - ref_logits.log_softmax(-1)).abs().max().item() < 1e-5
    assert cache["hook_embed"].shape == (1, ids.shape[1], 128)
    for layer in range(2):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        assert pattern.shape == (1, 4, ids.shape[1], ids.shape[1])
        assert (pattern - ref_attn[layer]).abs().max().item() < 1e-5


@pytest.mark.slow  # TransformerLens and matplotlib per model: ~2.6 s each
def test_attention_pattern_example(release_dir, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("attention_pattern", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    png = tmp_path / "pattern.png"
    pattern = example.main(["--model", str(release_dir), "--layer", "1", "--head", "2", "--output", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    n = len(load_tokenizer(release_dir)(PROMPT).input_ids) + 1  # + BOS
    assert pattern.shape == (n, n)
    assert torch.allclose(pattern.sum(-1), torch.ones(n), atol=1e-5) and not pattern.triu(1).any()  # causal
    assert "attends most to" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        example.main(["--model", str(release_dir), "--layer", "2"])


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="model folder .*nope does not exist"):
        load_transformer_lens(tmp_path / "nope")
