"""The trainer, single process on CPU (fp32): learning, run folder contents, exports, exact resume, schedule,
weight decay groups, SIGTERM. Multi-process DeepSpeed runs are in test_train_distributed.py (slow)."""

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gpt2_owt.core.errors import UserError
from gpt2_owt.core.records import sha256_file
from gpt2_owt.modeling.model import build_model, count_parameters
from helpers.training import (LONG_RUN, REPO_ROOT, cli_env, load_export, metric_rows, run_inprocess, train_args,
                              untimed)
from gpt2_owt.core.folder_lock import LOCK_FILE
from gpt2_owt.core.readers import read_json
from gpt2_owt.modeling.flops import flops_per_token
from gpt2_owt.training.config import FIELD_NAMES, parse_config
from gpt2_owt.training.run_dir import (CHECKPOINTS, DATA_MANIFEST, FED_BATCHES, FINAL, HF_EXPORTS, METRICS,
                                       RESOLVED_KEYS, RUN_INFO, RUN_INFO_KEYS, TRAINING_CONFIG, list_step_dirs,
                                       read_metrics, read_rows)
from gpt2_owt.training.speed import exported_state_dict
from gpt2_owt.training.trainer import build_optimizer, build_scheduler, peak_flops

# The run every test here compares against: 30 steps of 4 x 32-token sequences, 2 micro batches of 2.
RUN = LONG_RUN


@pytest.fixture(scope="module")
def tiny_run(trained_run):
    return trained_run(**RUN)


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_weights(a: Path, b: Path) -> None:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    for name in ta:
        assert torch.equal(ta[name], tb[name]), name


def test_loss_falls_and_run_dir_follows_schema(tiny_run):
    train = metric_rows(tiny_run, "train_loss")
    assert [r["step"] for r in train] == list(range(1, 31))
    assert abs(train[0]["train_loss"] - math.log(50257)) < 0.2  # untrained: ~uniform over the vocabulary
    assert sum(r["train_loss"] for r in train[-10:]) / 10 < 9.3
    val = metric_rows(tiny_run, "val_loss")
    assert [r["step"] for r in val] == [10, 20, 30] and val[-1]["val_loss"] < 9.3
    for r in train:
        assert {"step", "tokens", "train_loss", "lr", "grad_norm", "tokens_per_sec", "mfu", "elapsed_seconds"} <= r.keys()
        assert r["tokens"] == r["step"] * 128 and r["mfu"] is None and r["grad_norm"] > 0

    cfg = read_json(tiny_run / TRAINING_CONFIG)
    assert set(cfg) == set(FIELD_NAMES) | set(RESOLVED_KEYS)  # the run folder's one key list (training/run_dir.py)
    assert cfg["gradient_accumulation_steps"] == 2 and cfg["world_size"] == 1 and cfg["weight_decay"] == 0.1
    info = read_json(tiny_run / RUN_INFO)
    assert set(info) == set(RUN_INFO_KEYS)
    assert info["status"] == "completed" and info["steps_done"] == 30 and info["tokens_seen"] == 30 * 128
    assert info["hardware"]["device_type"] == "cpu" and info["hardware"]["num_processes"] == 1
    assert info["hardware"]["deepspeed_zero_stage"] is None and info["finished_at"]
    assert info["num_parameters"] == count_parameters(build_model("tiny")) == 6_862_464  # tied embeddings once
    assert info["data_manifest_sha256"] == sha256_file(tiny_run / DATA_MANIFEST)
    assert info["flops_per_token"] == flops_per_token(build_model("tiny").config.to_dict(), 32)
    assert set(info["versions"]) >= {"torch", "transformers", "accelerate", "deepspeed", "python"}

    # checkpoints: every 10 steps, last 2 kept, nothing half-written left behind
    assert [s for s, _ in list_step_dirs(tiny_run / CHECKPOINTS)] == [20, 30]
    assert sorted(p.name for p in (tiny_run / CHECKPOINTS).iterdir()) == ["step20", "step30"]
    assert sorted(p.name for p in (tiny_run / HF_EXPORTS).iterdir()) == ["final", "step0", "step1", "step2"]


def test_card_flops_equal_the_trainers(tiny_run):
    """The model card's FLOPs per token, recomputed from the export's config.json, is what the trainer recorded."""
    from gpt2_owt.model_card.facts import CostInputs, compute_facts

    info = read_json(tiny_run / RUN_INFO)
    config = read_json(tiny_run / HF_EXPORTS / FINAL / "config.json")
    training_config = read_json(tiny_run / TRAINING_CONFIG)
    recorded = compute_facts(info, training_config, config, [], CostInputs())
    recomputed = compute_facts({k: v for k, v in info.items() if k != "flops_per_token"}, training_config, config, [],
                               CostInputs())
    assert recorded["flops_per_token"] == recomputed["flops_per_token"] == info["flops_per_token"]
    assert recorded["training_flops"] == info["flops_per_token"] * 30 * 128


def test_export_loads_and_gives_the_trained_logits(tiny_run):
    final = tiny_run / HF_EXPORTS / FINAL
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "vocab.json", "merges.txt", "export_info.json"):
        assert (final / name).is_file(), name
    info = read_json(final / "export_info.json")
    assert info == {"step": 30, "tokens": 30 * 128, "weights_sha256": sha256_file(final / "model.safetensors")}
    exported = load_export(final)
    # the trained model = the weights Accelerate saved in the final checkpoint (training layout: padded rows cut)
    trained = build_model("tiny")
    saved = tensors(tiny_run / CHECKPOINTS / "step30" / "model.safetensors")
    assert saved["transformer.wte.weight"].shape[0] == 50304
    missing, unexpected = trained.load_state_dict(exported_state_dict(saved, 50257), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    trained.eval()
    ids = torch.tensor([[464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]])
    with torch.no_grad():
        assert torch.equal(exported(ids).logits, trained(ids).logits)
    # step0 is the untrained init; it differs from the final weights
    assert not torch.equal(load_export(tiny_run / HF_EXPORTS / "step0")(ids).logits, exported(ids).logits)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(final)("Hello world")["input_ids"] == [15496, 995]


def test_resume_is_bitwise_identical(tiny_run, owt_data_dir, tmp_path):
    out = tmp_path / "resumed"
    assert run_inprocess(owt_data_dir, out, **RUN, resume_from_checkpoint=tiny_run / CHECKPOINTS / "step20") == 0
    assert_same_weights(out / HF_EXPORTS / FINAL / "model.safetensors",
                        tiny_run / HF_EXPORTS / FINAL / "model.safetensors")
    a, b = metric_rows(out, "train_loss"), metric_rows(tiny_run, "train_loss")[20:]
    assert [(r["step"], r["train_loss"], r["lr"], r["grad_norm"]) for r in a] == \
        [(r["step"], r["train_loss"], r["lr"], r["grad_norm"]) for r in b]


def test_lr_schedule_of_the_recipe():
    cfg = parse_config(["--config", str(REPO_ROOT / "training/configs/gpt2-124m-owt.yaml"), "--data_dir", "d",
                        "--output_dir", "o"])
    assert cfg.total_steps() == 52_453 and cfg.tokens_per_step() == 524_288
    assert cfg.gradient_accumulation_steps(8) == 4 and cfg.gradient_accumulation_steps(32) == 1
    with pytest.raises(UserError, match="not divisible by micro_batch_size 16 x world size 3 = 48"):
        cfg.gradient_accumulation_steps(3)
    opt = build_optimizer(torch.nn.Linear(2, 2), cfg)
    sched = build_scheduler(opt, cfg)
    lrs = []
    for _ in range(cfg.total_steps()):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(6e-4 / 2000, rel=1e-12)  # first update: warmup 1/2000
    assert lrs[999] == pytest.approx(6e-4 * 1000 / 2000, rel=1e-12)
    assert lrs[1999] == pytest.approx(6e-4, rel=1e-12)  # peak at the end of warmup
    mid = 2000 + (52_453 - 2000) // 2 - 1  # cosine half way: (peak + min) / 2
    assert lrs[mid] == pytest.approx((6e-4 + 6e-5) / 2, rel=1e-4)
    assert lrs[-1] == pytest.approx(6e-5, rel=1e-12)  # last update at min_lr
    assert all(a >= b for a, b in zip(lrs[1999:], lrs[2000:]))


def test_logged_lr_follows_the_schedule(tiny_run):
    rows = metric_rows(tiny_run, "train_loss")
    peak, low, warm, total = 3e-3, 3e-4, 3, 30
    for r in rows:
        s = r["step"] - 1  # update index
        if s < warm:
            expected = peak * (s + 1) / warm
        else:
            expected = low + (peak - low) * 0.5 * (1 + math.cos(math.pi * (s - warm + 1) / (total - warm)))
        assert r["lr"] == pytest.approx(expected, rel=1e-9)


def test_no_weight_decay_on_biases_and_layernorm():
    cfg = parse_config(["--data_dir", "d", "--output_dir", "o", "--max_steps", "10", "--warmup_steps", "1"])
    model = build_model("tiny", seed=0)
    opt = build_optimizer(model, cfg)
    decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in no_decay["params"]) == sorted(
        n for n, p in model.named_parameters() if n.endswith("bias") or ".ln_" in n)
    assert all(p.dim() >= 2 for p in decay["params"])
    # behaviour: with zero gradients AdamW only decays, so >=2-D weights shrink by (1 - lr * wd), the rest stay
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        expected = before[n] * (1 - 6e-4 * 0.1) if p.dim() >= 2 else before[n]
        assert torch.equal(p.detach(), expected), n


@pytest.mark.slow  # a launched end-to-end run plus its resume: ~1.5 min on 2 shared cores
def test_sigterm_saves_a_checkpoint_and_resume_matches(tiny_run, owt_data_dir, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "gpt2_owt.training.train", *train_args(owt_data_dir, out, **RUN)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(metric_rows(out, "train_loss") if (out / METRICS).exists() else []) < 4:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "interrupted by SIGTERM" in err
    # the one line every interrupted command ends with (issue 33 sweep: train's lacked the `error:` prefix)
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [
        f"error: interrupted by SIGTERM; the checkpoint of step {read_json(out / RUN_INFO)['steps_done']} is saved: "
        f"continue with --resume_from_checkpoint auto --output_dir {out}"], err[-2000:]
    info = read_json(out / RUN_INFO)
    killed_at = info["steps_done"]
    assert info["status"] == "interrupted" and 4 <= killed_at < 30
    assert list_step_dirs(out / CHECKPOINTS)[-1][0] == killed_at
    assert not (out / HF_EXPORTS / FINAL).exists()
    # continue the same run folder to the end: the weights equal the uninterrupted run's, bit for bit
    assert run_inprocess(owt_data_dir, out, **RUN, resume_from_checkpoint="auto") == 0
    assert_same_weights(out / HF_EXPORTS / FINAL / "model.safetensors",
                        tiny_run / HF_EXPORTS / FINAL / "model.safetensors")
    assert [r["step"] for r in metric_rows(out, "train_loss")] == list(range(1, 31))
    assert read_json(out / RUN_INFO)["status"] == "completed"




@pytest.mark.slow  # a launched run killed mid-way plus its resume: ~1.5 min on 2 shared cores
@pytest.mark.timeout(900)
def test_sigkill_between_checkpoints_then_resume_leaves_each_row_once(tiny_run, owt_data_dir, tmp_path):
    """A hard kill (no handler runs) after checkpoint 10 and some later updates: the resumed run drops the rows the
    killed one wrote after its checkpoint and writes them again, so metrics.jsonl and fed_batches.jsonl equal the
    uninterrupted run's (timing fields aside), each step exactly once."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "gpt2_owt.training.train", *train_args(owt_data_dir, out, **RUN)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(read_rows(out / FED_BATCHES)) < 14 and proc.poll() is None:
            time.sleep(0.05)
        proc.kill()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    checkpoint = list_step_dirs(out / CHECKPOINTS)[-1][0]
    assert checkpoint == 10
    assert max(r["update"] for r in read_rows(out / FED_BATCHES)) >= checkpoint  # rows past the checkpoint
    assert read_json(out / RUN_INFO)["status"] == "running"  # nothing ran on the way out
    assert (out / LOCK_FILE).is_file()  # the killed writer's lock file, no longer locked: it never blocks a resume

    assert run_inprocess(owt_data_dir, out, **RUN, resume_from_checkpoint="auto") == 0
    assert not (out / LOCK_FILE).exists()
    metrics, reference = read_metrics(out), read_metrics(tiny_run)
    assert [r["step"] for r in metrics if "train_loss" in r] == list(range(1, 31))
    assert [r["step"] for r in metrics if "val_loss" in r] == [10, 20, 30]
    assert untimed(metrics) == untimed(reference)
    fed = read_rows(out / FED_BATCHES)
    assert [r["update"] for r in fed] == list(range(30))
    assert fed == read_rows(tiny_run / FED_BATCHES)


def test_flops_per_token_and_peak_table(monkeypatch):
    from gpt2_owt.modeling.config import load_config

    # 6N (N = 12 x 7,077,888 block matmul weights + 38,597,376 tied embedding) + attention 12 * 12 * 768 * 1024
    assert flops_per_token(load_config("gpt2-124m").to_dict(), 1024) == 6 * 123_532_032 + 113_246_208 == 854_438_400
    assert peak_flops(torch.device("cpu"), "no") is None
    for name, peak in (("NVIDIA H100 80GB HBM3", 989.5e12), ("NVIDIA H100 PCIe", 756.5e12),
                       ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA H200", 989.5e12), ("Tesla V100-SXM2-32GB", None)):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, n=name: n)
        assert peak_flops(torch.device("cuda"), "bf16") == peak
        assert peak_flops(torch.device("cuda"), "no") is None  # the table is bf16 peaks: no MFU for fp32


def test_inprocess_run_restores_signal_handlers(owt_data_dir, tmp_path):
    """The trainer's SIGTERM/SIGINT handlers (save and stop) live only as long as the run: a process that runs it
    (tests, notebooks) gets its own handlers back, so its later forks still die on SIGTERM."""
    import signal

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    assert run_inprocess(owt_data_dir, tmp_path / "run", **{**RUN, "max_steps": 4, "export_steps": [0]}) == 0
    assert {sig: signal.getsignal(sig) for sig in before} == before
