import json
import math

import pytest
import torch

from gpt2_owt.core.errors import UserError
from gpt2_owt.modeling.config import list_presets, load_config, resolve_config_path
from gpt2_owt.modeling.model import build_model, count_parameters
from transformers import GPT2Config, GPT2LMHeadModel


def test_presets_listed():
    assert {"gpt2-124m", "tiny"} <= set(list_presets())


def test_gpt2_124m_shape_and_parameter_count():
    cfg = load_config("gpt2-124m")
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.n_positions, cfg.vocab_size) == (12, 12, 768, 1024, 50257)
    assert cfg.activation_function == "gelu_new" and cfg.layer_norm_epsilon == 1e-5
    assert cfg.tie_word_embeddings and cfg.bos_token_id == cfg.eos_token_id == 50256
    assert cfg.resid_pdrop == cfg.embd_pdrop == cfg.attn_pdrop == 0.0
    assert cfg.architectures == ["GPT2LMHeadModel"]
    model = build_model("gpt2-124m")
    assert count_parameters(model) == 124_439_808
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_build_from_config_path_equals_preset(tmp_path):
    path = resolve_config_path("tiny")
    a = build_model(str(path), seed=0)
    b = build_model("tiny", seed=0)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and torch.equal(pa, pb)
    # a folder holding config.json also works
    (tmp_path / "config.json").write_text(path.read_text())
    assert count_parameters(build_model(str(tmp_path))) == count_parameters(a)


def test_config_round_trip(tmp_path):
    cfg = load_config("gpt2-124m")
    cfg.save_pretrained(tmp_path)
    again = GPT2Config.from_pretrained(tmp_path)
    original = json.loads(resolve_config_path("gpt2-124m").read_text())
    saved = again.to_dict()
    for key, value in original.items():
        assert saved[key] == value, key
    assert load_config(str(tmp_path)).to_dict() == cfg.to_dict()


def test_gpt2_initialisation_stds():
    model = build_model("gpt2-124m", seed=1234)
    n_layer = model.config.n_layer
    resid_std = 0.02 / math.sqrt(2 * n_layer)
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            assert p.std().item() == pytest.approx(resid_std, rel=0.02), name
        elif name.endswith(("c_attn.weight", "c_fc.weight", "wte.weight", "wpe.weight")):
            assert p.std().item() == pytest.approx(0.02, rel=0.02), name
            assert abs(p.mean().item()) < 1e-3, name
        elif name.endswith("bias") and ".ln_" not in name and "ln_f" not in name:
            assert torch.count_nonzero(p) == 0, name
        elif ".ln_" in name or "ln_f" in name:
            expected = 1.0 if name.endswith("weight") else 0.0
            assert torch.all(p == expected), name


def test_seed_makes_init_reproducible():
    a, b = build_model("tiny", seed=7), build_model("tiny", seed=7)
    c = build_model("tiny", seed=8)
    assert torch.equal(a.transformer.h[0].attn.c_attn.weight, b.transformer.h[0].attn.c_attn.weight)
    assert not torch.equal(a.transformer.h[0].attn.c_attn.weight, c.transformer.h[0].attn.c_attn.weight)


def test_attention_implementation_choice():
    assert build_model("tiny").config._attn_implementation == "sdpa"
    eager = build_model("tiny", attn_implementation="eager", seed=3)
    sdpa = build_model("tiny", seed=3)
    ids = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(eager(ids).logits, sdpa(ids).logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(UserError, match="attn_implementation"):
        build_model("tiny", attn_implementation="bogus")


def test_tiny_forward_backward():
    model = build_model("tiny", seed=0)
    assert isinstance(model, GPT2LMHeadModel)
    ids = torch.randint(0, 50257, (2, 64), generator=torch.Generator().manual_seed(0))
    out = model(input_ids=ids, labels=ids)
    # an untrained model is close to uniform over the vocabulary: loss ~ ln(50257) = 10.82
    assert out.loss.item() == pytest.approx(math.log(50257), abs=0.3)
    out.loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0


def test_bad_preset_name_is_clear():
    with pytest.raises(UserError, match="neither a preset"):
        build_model("gpt2-999m")


def test_bad_config_path_is_clear(tmp_path):
    with pytest.raises(UserError, match="neither a preset"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="cannot read model config"):
        load_config(bad)
    other = tmp_path / "llama.json"
    other.write_text('{"model_type": "llama"}')
    with pytest.raises(UserError, match="only 'gpt2'"):
        load_config(other)
