"""The training-time speed options (training/speed.py) keep the model the same: fused GELU, padded output layer, fused
AdamW, regional compilation; and the trainer's exports/checkpoints stay in the plain GPT-2 layout with them on."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from transformers.activations import GELUTanh, NewGELUActivation

from gpt2_owt.modeling.model import build_model
from helpers.training import load_export, metric_rows, run_inprocess
from gpt2_owt.core.readers import read_json
from gpt2_owt.training import speed
from gpt2_owt.training.config import parse_config
from gpt2_owt.training.run_dir import CHECKPOINT_INFO, CHECKPOINTS, FINAL, HF_EXPORTS, RUN_INFO, TRAINING_CONFIG
from gpt2_owt.training.trainer import build_optimizer, lm_loss

V = 50257
SHORT = dict(seq_len=32, global_batch_size=4, micro_batch_size=2, max_steps=4, warmup_steps=1, eval_interval=0,
             eval_iters=1, checkpoint_interval=2, export_steps=[0], export_interval=0)


def batch(seed=0, rows=4, length=33):
    return torch.randint(0, V, (rows, length), generator=torch.Generator().manual_seed(seed))


def test_fused_gelu_is_gelu_new():
    x = torch.linspace(-12, 12, 1_000_001)
    diff = (GELUTanh()(x) - NewGELUActivation()(x)).abs().max().item()
    assert diff < 1e-6, diff  # same function, one kernel (measured: ~2e-7, float32 rounding)
    model = build_model("tiny", seed=0)
    assert speed.fuse_gelu(model) == model.config.n_layer
    assert all(type(b.mlp.act) is GELUTanh for b in model.transformer.h)
    assert model.config.activation_function == "gelu_new"  # what config.json says


def test_padded_output_layer_gives_the_same_loss_and_gradients():
    plain, padded = build_model("tiny", seed=0), build_model("tiny", seed=0)
    assert speed.pad_vocab(padded, 64) == 50304 == padded.lm_head.weight.shape[0]
    assert padded.lm_head.weight is padded.transformer.wte.weight and padded.config.vocab_size == V
    tokens = batch()
    losses = []
    for model in (plain, padded):
        loss = lm_loss(model, tokens, V)
        loss.backward()
        losses.append(loss)
    assert abs(losses[0].item() - losses[1].item()) < 1e-6
    grad_plain, grad_padded = plain.transformer.wte.weight.grad, padded.transformer.wte.weight.grad
    assert torch.equal(grad_padded[V:], torch.zeros_like(grad_padded[V:]))  # no gradient ever reaches padded rows
    torch.testing.assert_close(grad_padded[:V], grad_plain, atol=1e-6, rtol=0)
    for (name, a), (_, b) in zip(plain.named_parameters(), padded.named_parameters()):
        if name != "transformer.wte.weight":
            torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=0, msg=name)
    exported = speed.exported_state_dict(padded.state_dict(), V)
    assert {k: v.shape for k, v in exported.items()} == {k: v.shape for k, v in plain.state_dict().items()}
    torch.testing.assert_close(exported["transformer.wte.weight"], plain.transformer.wte.weight, atol=0, rtol=0)


def test_fused_adamw_on_cpu_only_where_equal_to_foreach():
    """After 5 steps: on CUDA torch's fused kernel is the default; on CPU it is used only if it is bit-equal."""
    cfg = parse_config(["--data_dir", "-", "--output_dir", "-", "--max_steps", "10", "--warmup_steps", "1",
                       "--learning_rate", "3e-3"])
    weights = {}
    for fused in (False, True):
        model = build_model("tiny", seed=0)
        opt = build_optimizer(model, cfg, fused=fused)
        assert opt.defaults["fused" if fused else "foreach"] is True
        for step in range(5):
            lm_loss(model, batch(step), V).backward()
            opt.step()
            opt.zero_grad()
        weights[fused] = torch.cat([p.detach().flatten() for p in model.parameters()])
    diff = (weights[True] - weights[False]).abs().max().item()
    assert diff < 1e-3  # the same algorithm
    # measured here: ~5e-5 apart (a different rounding order), so not the CPU default
    assert speed.resolve_auto(cfg.fused_adamw, on_cuda=False) == (diff == 0.0)
    assert speed.resolve_auto(None, on_cuda=True) and not speed.resolve_auto(False, on_cuda=True)


@pytest.mark.slow  # inductor compiles for ~1-2 min on 2 shared cores
@pytest.mark.timeout(600)
def test_compiled_blocks_train_like_eager():
    """Regional compilation (inductor on CPU: the blocks and the loss head) gives eager's losses within 1e-5 and
    leaves parameter names plain; the compiled loss head alone matches eager's per-token losses and gradients."""
    torch._dynamo.reset()
    logits = torch.randn(2, 16, 50304, generator=torch.Generator().manual_seed(0))
    targets = batch(1, rows=2, length=16)
    results = {}
    for compiled in (False, True):
        x = logits.clone().requires_grad_()
        per_token = speed.token_losses_fn(compiled)(x, targets, V)
        per_token.mean().backward()
        results[compiled] = per_token.detach(), x.grad
    torch.testing.assert_close(results[True][0], results[False][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(results[True][1], results[False][1], atol=1e-9, rtol=0)
    assert torch.equal(results[True][1][..., V:], torch.zeros(2, 16, 50304 - V))  # padded rows: no gradient
    losses = {}
    for compiled in (False, True):
        model = build_model("tiny", seed=0)
        speed.apply_model_options(model, fused_gelu=True, pad_multiple=64, compile_model=compiled)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        losses[compiled] = []
        for step in range(3):
            loss = lm_loss(model, batch(step, rows=2), V, compiled=compiled)
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses[compiled].append(loss.item())
        assert not any("_orig_mod" in k for k in model.state_dict())
    assert max(abs(a - b) for a, b in zip(losses[False], losses[True])) < 1e-5, losses


def test_trainer_exports_the_plain_layout_with_speed_options_on(owt_data_dir, tmp_path):
    """Padded training vs unpadded: same losses and weights, same exported file layout and config."""
    on, off = tmp_path / "on", tmp_path / "off"
    assert run_inprocess(owt_data_dir, on, **SHORT) == 0
    assert run_inprocess(owt_data_dir, off, **SHORT, pad_vocab_to_multiple_of=0) == 0
    for a, b in zip(metric_rows(on, "train_loss"), metric_rows(off, "train_loss")):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-5 and a["grad_norm"] == pytest.approx(b["grad_norm"], 1e-5)
    ta = load_file(str(on / HF_EXPORTS / FINAL / "model.safetensors"))
    tb = load_file(str(off / HF_EXPORTS / FINAL / "model.safetensors"))
    assert {k: (v.shape, v.dtype) for k, v in ta.items()} == {k: (v.shape, v.dtype) for k, v in tb.items()}
    assert ta["transformer.wte.weight"].shape == (V, 128)
    # The weights agree up to float rounding of the two matmul shapes (50,304 vs 50,257 rows), which AdamW's
    # normalised update amplifies in near-zero gradients: measured up to 1.3e-5 (AMD EPYC) and 3.0e-5 (Intel Xeon
    # with AMX) after 4 steps, against up to 4 x lr = 2.4e-3 of movement per weight.
    for name in ta:
        torch.testing.assert_close(ta[name], tb[name], atol=1e-4, rtol=0, msg=name)
    for name in ("config.json", "generation_config.json"):
        assert (on / HF_EXPORTS / FINAL / name).read_text() == (off / HF_EXPORTS / FINAL / name).read_text()
    assert json.loads((on / HF_EXPORTS / FINAL / "config.json").read_text())["activation_function"] == "gelu_new"
    config = read_json(on / TRAINING_CONFIG)
    assert (config["compile"], config["fused_adamw"], config["fused_gelu"], config["pad_vocab_to_multiple_of"],
            config["tf32"], config["deterministic"]) == (False, False, True, 64, True, False)  # resolved for CPU
    assert read_json(on / CHECKPOINTS / "step4" / CHECKPOINT_INFO)["identity"]["model"]["vocab_rows"] == 50304
    # the metrics row says where the interval's time went
    row = metric_rows(on, "train_loss")[-1]
    assert {"data_seconds", "forward_backward_seconds", "record_seconds", "optimizer_seconds",
            "checkpoint_seconds"} <= row.keys()
    assert row["forward_backward_seconds"] > 0


def test_bf16_logits_reach_the_loss_head_uncast(owt_data_dir, tmp_path, monkeypatch):
    """Under bf16 the trainer's forward runs in `accelerator.autocast()` without the fp32 output cast that
    `accelerator.prepare` wraps around it (dropped through the public `unwrap_model(keep_fp32_wrapper=False)`), so
    the loss head gets bf16 logits (no fp32 copy of the [tokens, 50k] tensor); training is bit for bit what it is
    with Accelerate's wrappers left in place. Fails loudly if Accelerate changes what unwrap_model does."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    try:
        acc = Accelerator(mixed_precision="bf16", cpu=True)
        model = acc.prepare(build_model("tiny", seed=0))
        ids = batch()[:, :-1]
        assert model(input_ids=ids).logits.dtype == torch.float32  # Accelerate's autocast + fp32 cast
        acc.unwrap_model(model, keep_fp32_wrapper=False)  # what Trainer.build() does
        assert model(input_ids=ids).logits.dtype == torch.float32  # no autocast left: fp32 compute
        with acc.autocast():
            assert model(input_ids=ids).logits.dtype == torch.bfloat16  # the loss function's autocast
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()

    bf16 = dict(SHORT, mixed_precision="bf16")
    uncast, cast = tmp_path / "uncast", tmp_path / "cast"
    assert run_inprocess(owt_data_dir, uncast, **bf16) == 0
    real = Accelerator.unwrap_model
    monkeypatch.setattr(Accelerator, "unwrap_model", lambda self, model, keep_fp32_wrapper=True:
                        real(self, model, keep_fp32_wrapper=True))  # Accelerate's wrappers stay
    assert run_inprocess(owt_data_dir, cast, **bf16) == 0
    assert metric_rows(uncast, "train_loss") and [r["train_loss"] for r in metric_rows(uncast, "train_loss")] == \
        [r["train_loss"] for r in metric_rows(cast, "train_loss")]
    ta = load_file(str(uncast / HF_EXPORTS / FINAL / "model.safetensors"))
    tb = load_file(str(cast / HF_EXPORTS / FINAL / "model.safetensors"))
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_resume_across_compile_on_and_off(owt_data_dir, tmp_path):
    """A checkpoint saved by a compiled run resumes uncompiled (and the reverse) to the same weights (1e-5)."""
    compiled, eager = tmp_path / "compiled", tmp_path / "eager"
    assert run_inprocess(owt_data_dir, compiled, **SHORT, compile="true") == 0
    assert run_inprocess(owt_data_dir, eager, **SHORT, compile="false") == 0
    for source, other, flag in ((compiled, eager, "false"), (eager, compiled, "true")):
        out = tmp_path / f"resumed-{flag}"
        assert run_inprocess(owt_data_dir, out, **SHORT, compile=flag,
                             resume_from_checkpoint=source / CHECKPOINTS / "step2") == 0
        ids = torch.tensor([[464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]])
        with torch.no_grad():
            got = load_export(out / HF_EXPORTS / FINAL)(ids).logits
            want = load_export(other / HF_EXPORTS / FINAL)(ids).logits
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    assert not any("_orig_mod" in k for k in load_file(str(compiled / CHECKPOINTS / "step4" / "model.safetensors")))


@pytest.fixture
def restore_torch_determinism():
    env = {k: os.environ.get(k) for k in ("CUBLAS_WORKSPACE_CONFIG", "FLASH_ATTENTION_DETERMINISTIC")}
    yield
    for k, v in env.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False
    for enable in (torch.backends.cuda.enable_flash_sdp, torch.backends.cuda.enable_mem_efficient_sdp,
                   torch.backends.cuda.enable_math_sdp, torch.backends.cuda.enable_cudnn_sdp):
        enable(True)


@pytest.mark.slow  # two trainings: ~4 s
def test_deterministic_mode_sets_and_records_its_flags(owt_data_dir, tmp_path, restore_torch_determinism):
    plain, det = tmp_path / "plain", tmp_path / "det"
    assert run_inprocess(owt_data_dir, plain, **SHORT) == 0
    assert not read_json(plain / RUN_INFO)["determinism"]["use_deterministic_algorithms"]
    assert run_inprocess(owt_data_dir, det, **SHORT, deterministic="true") == 0
    assert torch.are_deterministic_algorithms_enabled()
    recorded = read_json(det / RUN_INFO)["determinism"]
    assert recorded == {
        "use_deterministic_algorithms": True, "cublas_workspace_config": ":4096:8",
        "flash_attention_deterministic": True, "cudnn_deterministic": True,
        "sdpa_backends": {"flash": True, "mem_efficient": False, "cudnn": False, "math": False},
        "float32_matmul_precision": "highest",
    }
    # CPU kernels were deterministic already: the pinned run computes exactly what the default run does
    assert [r["train_loss"] for r in metric_rows(det, "train_loss")] == [r["train_loss"] for r in metric_rows(plain, "train_loss")]


@pytest.mark.slow  # an interpreter importing torch: ~3 s
@pytest.mark.timeout(120)
def test_bench_gpu_exits_with_one_line_without_cuda():
    import subprocess
    import sys

    from helpers.training import REPO_ROOT, cli_env

    proc = subprocess.run([sys.executable, "benchmarks/bench_gpu.py"], cwd=REPO_ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=100)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: bench_gpu needs a CUDA GPU (torch.cuda.is_available() is False): nothing measured"]
