"""nanoGPT / llm.c conversions: parity against an independent reference forward pass, bitwise round trips, errors.

The reference GPT-2 (`reference_logits`) and the llm.c writer (`write_llmc_reference`) below are written from
nanoGPT's `model.py` and llm.c's `train_gpt2.py` directly and import nothing from the converter.
"""

import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel

from gpt2_owt.core.errors import UserError
from gpt2_owt.core.records import sha256_file
from gpt2_owt.modeling.convert import main as convert_main
from gpt2_owt.modeling.llmc import read_llmc, to_llmc
from gpt2_owt.modeling.model import build_model
from gpt2_owt.modeling.nanogpt import ConversionWarning, from_nanogpt, to_nanogpt
from gpt2_owt.modeling.tokenizer import TOKENIZER_DIR, TOKENIZER_SHA256

L, NH, C, T = 2, 4, 64, 32  # small random models: 2 layers, n_embd 64, context 32
V = 50257
IDS = torch.tensor([[50256, 15496, 995, 11, 428, 318, 257, 1332, 13, 50256, 40, 588]])


# ---------------------------------------------------------------- independent reference (nanoGPT's layout)

def nanogpt_state_dict(vocab_size=V, bias=True, seed=0):
    """Random weights in nanoGPT's names and shapes (Linear [out, in]); scaled so GELU's flavour matters."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.2, offset=0.0):
        return offset + scale * torch.randn(*shape, generator=g)

    sd = {"transformer.wte.weight": rand(vocab_size, C), "transformer.wpe.weight": rand(T, C)}
    for i in range(L):
        p = f"transformer.h.{i}."
        for name, out_in in [("ln_1", None), ("attn.c_attn", (3 * C, C)), ("attn.c_proj", (C, C)),
                             ("ln_2", None), ("mlp.c_fc", (4 * C, C)), ("mlp.c_proj", (C, 4 * C))]:
            sd[p + name + ".weight"] = rand(C, scale=0.1, offset=1.0) if out_in is None else rand(*out_in)
            if bias:
                sd[p + name + ".bias"] = rand(C if out_in is None else out_in[0], scale=0.1)
    sd["transformer.ln_f.weight"] = rand(C, scale=0.1, offset=1.0)
    if bias:
        sd["transformer.ln_f.bias"] = rand(C, scale=0.1)
    sd["lm_head.weight"] = sd["transformer.wte.weight"]  # tied, one tensor
    return sd


def model_args(vocab_size=V, bias=True):
    return dict(n_layer=L, n_head=NH, n_embd=C, block_size=T, bias=bias, vocab_size=vocab_size, dropout=0.0)


def reference_logits(sd, ids, gelu_approximate="none"):
    """GPT-2 forward from nanoGPT's model.py (absent biases = bias=False); returns logits over all rows of wte."""
    def ln(x, name):
        return F.layer_norm(x, (C,), sd[name + ".weight"], sd.get(name + ".bias"), 1e-5)

    def linear(x, name):
        return F.linear(x, sd[name + ".weight"], sd.get(name + ".bias"))

    B, Tn = ids.shape
    x = sd["transformer.wte.weight"][ids] + sd["transformer.wpe.weight"][:Tn]
    causal = torch.ones(Tn, Tn, dtype=torch.bool).tril()
    for i in range(L):
        p = f"transformer.h.{i}."
        q, k, v = linear(ln(x, p + "ln_1"), p + "attn.c_attn").split(C, dim=2)
        q, k, v = (t.view(B, Tn, NH, C // NH).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // NH)
        att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        x = x + linear((att @ v).transpose(1, 2).reshape(B, Tn, C), p + "attn.c_proj")
        h = F.gelu(linear(ln(x, p + "ln_2"), p + "mlp.c_fc"), approximate=gelu_approximate)
        x = x + linear(h, p + "mlp.c_proj")
    return ln(x, "transformer.ln_f") @ sd["lm_head.weight"].T


def hf_logits(model, ids=IDS):
    with torch.no_grad():
        return model(ids).logits


def write_llmc_reference(path, sd, dtype):
    """llm.c train_gpt2.py `write_model`: 256-int32 header, then 16 tensors in write_tensors' order."""
    Vp = -(-V // 128) * 128
    header = np.zeros(256, dtype=np.int32)
    header[:8] = [20240326, {"float32": 3, "bfloat16": 5}[dtype], T, V, L, NH, C, Vp]
    wte = sd["transformer.wte.weight"]
    tensors = [torch.cat([wte, torch.zeros(Vp - V, C)]), sd["transformer.wpe.weight"]]
    for name in ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
                 "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                 "mlp.c_proj.weight", "mlp.c_proj.bias"]:
        tensors += [sd[f"transformer.h.{i}.{name}"] for i in range(L)]
    tensors += [sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"]]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        for t in tensors:
            t = t.to(torch.float32 if dtype == "float32" else torch.bfloat16)
            f.write((t if dtype == "float32" else t.view(torch.int16)).numpy().tobytes())


def save_nanogpt_ckpt(path, sd, args, compiled=False, mask_buffers=False):
    """A ckpt.pt as nanoGPT's train.py writes it (extra keys included)."""
    sd = dict(sd)
    if mask_buffers:  # older nanoGPT without flash attention keeps the causal mask as a buffer
        for i in range(L):
            sd[f"transformer.h.{i}.attn.bias"] = torch.ones(T, T).tril().view(1, 1, T, T)
    if compiled:
        sd = {"_orig_mod." + k: v for k, v in sd.items()}
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([param], lr=6e-4, betas=(0.9, 0.95), fused=False)
    param.sum().backward()
    optimizer.step()  # a real optimizer state: torch.load(weights_only=True) must accept it
    torch.save({"model": sd, "model_args": args, "optimizer": optimizer.state_dict(), "iter_num": 5000,
                "best_val_loss": torch.tensor(2.9), "config": {"dataset": "openwebtext"}}, path)


def assert_state_dicts_equal(a, b):
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name


# ---------------------------------------------------------------- nanoGPT

@pytest.mark.parametrize("bias", [True, False])
def test_nanogpt_import_logits_match_reference(bias):
    sd = nanogpt_state_dict(bias=bias)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = from_nanogpt(sd, model_args(bias=bias))
    notes = [str(w.message) for w in caught if issubclass(w.category, ConversionWarning)]
    assert notes == ([] if bias else [notes[0]]) and all("bias=False" in n for n in notes)
    assert model.config.activation_function == "gelu" and model.config.vocab_size == V
    ref = reference_logits(sd, IDS)
    assert (hf_logits(model) - ref).abs().max().item() < 1e-5
    # the tolerance is meaningful: GPT-2's tanh GELU instead of nanoGPT's exact one is far outside it
    assert (reference_logits(sd, IDS, gelu_approximate="tanh") - ref).abs().max().item() > 1e-4


def test_nanogpt_padded_vocab_slice_and_keep():
    sd = nanogpt_state_dict(vocab_size=50304)
    ref = reference_logits(sd, IDS)  # nanoGPT's 50304 logits
    with pytest.warns(ConversionWarning, match="sliced to 50257"):
        sliced = from_nanogpt(sd, model_args(vocab_size=50304))
    logits = hf_logits(sliced)
    assert logits.shape[-1] == V
    assert (logits - ref[..., :V]).abs().max().item() < 1e-5  # raw logits unchanged for real tokens...
    shift = (logits.log_softmax(-1) - ref.log_softmax(-1)[..., :V]).abs().max().item()
    assert shift > 1e-4  # ...but log-probs renormalise, which is what the warning says

    kept = from_nanogpt(sd, model_args(vocab_size=50304), slice_vocab=False)
    assert kept.config.vocab_size == 50304
    assert (hf_logits(kept).log_softmax(-1) - ref.log_softmax(-1)).abs().max().item() < 1e-5
    with pytest.raises(UserError, match="without --keep_vocab_padding"):
        to_llmc(kept)  # llm.c would take the padded rows for real tokens


@pytest.mark.parametrize("vocab_size,bias", [(V, True), (50304, True), (V, False)])
def test_nanogpt_round_trip_is_bitwise(vocab_size, bias):
    sd = nanogpt_state_dict(vocab_size=vocab_size, bias=bias)
    model = from_nanogpt(sd, model_args(vocab_size, bias), slice_vocab=False)
    out_sd, out_args = to_nanogpt(model)
    assert out_args == model_args(vocab_size, bias)
    assert_state_dicts_equal(out_sd, sd)
    assert out_sd["lm_head.weight"] is out_sd["transformer.wte.weight"]  # tied as in nanoGPT


def test_hf_to_nanogpt_to_hf_is_bitwise():
    model = build_model("tiny", seed=1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_()
    sd, args = to_nanogpt(model, pad_vocab=50304)
    assert args["bias"] is True and args["vocab_size"] == 50304
    assert not sd["transformer.wte.weight"][V:].any()
    with pytest.warns(ConversionWarning, match="sliced"):
        back = from_nanogpt(sd, args, activation_function=model.config.activation_function)
    assert_state_dicts_equal(back.state_dict(), model.state_dict())
    with pytest.raises(UserError, match="non-zero biases"):
        to_nanogpt(model, bias=False)


def test_nanogpt_cli_round_trip(tmp_path, capsys):
    sd = nanogpt_state_dict(vocab_size=50304, bias=False)
    ckpt = tmp_path / "ckpt.pt"
    save_nanogpt_ckpt(ckpt, sd, model_args(50304, bias=False), compiled=True, mask_buffers=True)
    out = tmp_path / "hf"
    # Whatever ran before in this process (a warning filter a library left behind, the same conversion already
    # warned at the same source lines): every run prints its notes.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for folder in (tmp_path / "first", out):
            convert_main(["--from", "nanogpt", str(ckpt), "--output_dir", str(folder)])
            warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
            assert [w.split()[1] for w in warned] == ["bias=False", "vocab_size"]
    for name, digest in TOKENIZER_SHA256.items():
        assert sha256_file(out / name) == digest
    info = json.loads((out / "conversion.json").read_text())
    assert info["source_sha256"] == sha256_file(ckpt) and info["vocab_size"] == V
    assert any("sliced" in n for n in info["notes"]) and any("bias=False" in n for n in info["notes"])
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 50256
    model = GPT2LMHeadModel.from_pretrained(out).eval()
    assert (hf_logits(model) - reference_logits(sd, IDS)[..., :V]).abs().max().item() < 1e-5

    back = tmp_path / "back.pt"
    convert_main(["--to", "nanogpt", "--model", str(out), "--output", str(back), "--pad_vocab", "50304"])
    ckpt_back = torch.load(back, weights_only=True)
    assert ckpt_back["model_args"] == model_args(50304, bias=False)
    expected = dict(sd, **{"transformer.wte.weight": torch.cat([sd["transformer.wte.weight"][:V],
                                                                torch.zeros(50304 - V, C)])})
    expected["lm_head.weight"] = expected["transformer.wte.weight"]
    assert_state_dicts_equal(ckpt_back["model"], expected)  # bitwise, padding rows now zero


# ---------------------------------------------------------------- llm.c

@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_llmc_import_matches_reference_and_round_trips_bytes(tmp_path, dtype):
    sd = nanogpt_state_dict()
    src = tmp_path / f"model_{dtype}.bin"
    write_llmc_reference(src, sd, dtype)
    out = tmp_path / "hf"
    convert_main(["--from", "llmc", str(src), "--output_dir", str(out)])
    model = GPT2LMHeadModel.from_pretrained(out).eval()
    assert model.config.activation_function == "gelu_new" and model.dtype == torch.float32
    # the stored (possibly bf16-rounded) weights, run in fp32 by the reference with llm.c's tanh GELU
    stored = {k: v.to(torch.bfloat16 if dtype == "bfloat16" else torch.float32).float() for k, v in sd.items()}
    assert (hf_logits(model) - reference_logits(stored, IDS, gelu_approximate="tanh")).abs().max().item() < 1e-5

    back = tmp_path / "back.bin"
    convert_main(["--to", "llmc", "--model", str(out), "--output", str(back), "--dtype", dtype])
    assert back.read_bytes() == src.read_bytes()


def test_hf_to_llmc_to_hf(tmp_path):
    model = build_model("tiny", seed=2)
    src = tmp_path / "hf"
    model.save_pretrained(src)
    for dtype in ("float32", "bfloat16"):
        path = tmp_path / f"m_{dtype}.bin"
        convert_main(["--to", "llmc", "--model", str(src), "--output", str(path), "--dtype", dtype])
        header, tensors = read_llmc(path)
        assert (header.version, header.vocab_size, header.padded_vocab_size) == ((3 if dtype == "float32" else 5), V, 50304)
        assert path.stat().st_size == 1024 + (2 if dtype == "bfloat16" else 4) * (
            50304 * 128 + 256 * 128 + 2 * 12 * 128 * 128 + 2 * 13 * 128 + 2 * 128)
        assert torch.equal(tensors["qkvw"][1], model.transformer.h[1].attn.c_attn.weight.detach().t().to(header.dtype))
        back = tmp_path / f"hf_{dtype}"
        convert_main(["--from", "llmc", str(path), "--output_dir", str(back)])
        back_sd = GPT2LMHeadModel.from_pretrained(back).state_dict()
        for name, t in model.state_dict().items():  # fp32 exact; bf16 exactly the rounded values
            assert torch.equal(back_sd[name], t.to(header.dtype).float()), name


# ---------------------------------------------------------------- errors: one line, exit 2, nothing written

def run_cli_error(argv, capsys):
    capsys.readouterr()  # drop earlier output (progress bars)
    with pytest.raises(SystemExit) as exc:
        convert_main([str(a) for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()  # progress bars may come first
    assert err[-1].startswith("error: ") and sum(line.startswith("error") for line in err) == 1
    return err[-1]


def test_cli_errors(tmp_path, capsys):
    out = tmp_path / "out"
    sd = nanogpt_state_dict()
    good_bin = tmp_path / "good.bin"
    write_llmc_reference(good_bin, sd, "float32")
    data = good_bin.read_bytes()

    assert "unknown checkpoint format 'keras'" in run_cli_error(["--from", "keras", "x.pt", "--output_dir", out], capsys)
    assert "exactly one of" in run_cli_error(["--output_dir", out], capsys)
    assert "activation_function" in run_cli_error(["--from", "llmc", good_bin, "--output_dir", out,
                                                   "--activation_function", "swish2"], capsys)
    assert "not found" in run_cli_error(["--from", "nanogpt", tmp_path / "missing.pt", "--output_dir", out], capsys)

    truncated_pt = tmp_path / "truncated.pt"
    save_nanogpt_ckpt(truncated_pt, sd, model_args())
    truncated_pt.write_bytes(truncated_pt.read_bytes()[:5000])
    assert "cannot load" in run_cli_error(["--from", "nanogpt", truncated_pt, "--output_dir", out], capsys)

    wrong = tmp_path / "wrong_shape.pt"
    save_nanogpt_ckpt(wrong, sd, dict(model_args(), n_embd=96, n_head=4))
    assert "shape" in run_cli_error(["--from", "nanogpt", wrong, "--output_dir", out], capsys)
    untied = dict(sd, **{"lm_head.weight": sd["lm_head.weight"] + 1})
    save_nanogpt_ckpt(wrong, untied, model_args())
    assert "tied" in run_cli_error(["--from", "nanogpt", wrong, "--output_dir", out], capsys)

    bad = tmp_path / "bad.bin"
    for payload, message in [
        (data[:-4], "truncated"),
        (data + b"\0" * 8, "unexpected bytes"),
        (data[:100], "shorter than"),
        (np.int32(20240327).tobytes() + data[4:], "magic"),
        (data[:4] + np.int32(4).tobytes() + data[8:], "version 4"),
    ]:
        bad.write_bytes(payload)
        assert message in run_cli_error(["--from", "llmc", bad, "--output_dir", out], capsys)
    assert not out.exists() and not list(tmp_path.glob(".out*"))  # nothing half-written

    convert_main(["--from", "llmc", str(good_bin), "--output_dir", str(out)])
    assert "not empty" in run_cli_error(["--from", "llmc", good_bin, "--output_dir", out], capsys)
    assert "--dtype" in run_cli_error(["--to", "llmc", "--model", out, "--output", tmp_path / "x.bin",
                                       "--dtype", "float16"], capsys)
    assert "smaller than" in run_cli_error(["--to", "nanogpt", "--model", out, "--output", tmp_path / "x.pt",
                                            "--pad_vocab", "100"], capsys)
    assert not (tmp_path / "x.pt").exists()
    assert "config" in run_cli_error(["--to", "nanogpt", "--model", TOKENIZER_DIR, "--output", tmp_path / "y.pt"],
                                     capsys)
