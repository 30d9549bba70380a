"""The real multi-process paths on CPU: `accelerate launch` with DDP and DeepSpeed ZeRO-2 / ZeRO-3 on 2 processes, and two
launchers on loopback simulating 2 machines (DeepSpeed's standard multi-node launcher). Each is compared with the
same run in one process: same global batches, so the same losses (within 1e-5)."""

import subprocess

import pytest
import torch

from helpers.training import (REPO_ROOT, accelerate_cmd, cli_env, final_weights, free_port, load_export, metric_rows,
                              run_cli, train_args)
from gpt2_owt.core.readers import read_json
from gpt2_owt.training.run_dir import CHECKPOINTS, FINAL, HF_EXPORTS, RUN_INFO, TRAINING_CONFIG

pytestmark = pytest.mark.multiprocess

# world 2 x micro 2 = the global batch of 4 (no accumulation); one process accumulates 2 micro batches instead
RUN = dict(seq_len=32, global_batch_size=4, micro_batch_size=2, max_steps=8, warmup_steps=2, eval_interval=4,
           eval_iters=1, checkpoint_interval=4, export_steps=[0], export_interval=0)
IDS = torch.tensor([[464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]])


@pytest.fixture(scope="module")
def reference(trained_run):
    return trained_run(**RUN)


def launch(config_file, data_dir, out, *launcher_args, num_processes=2, **overrides):
    cmd = accelerate_cmd(config_file, num_processes, *launcher_args, "-m", "gpt2_owt.training.train",
                         *train_args(data_dir, out, **RUN | overrides))
    return run_cli(cmd, OMP_NUM_THREADS="1")


def assert_same_losses(run, reference, tol=1e-5):
    got, want = metric_rows(run, "train_loss"), metric_rows(reference, "train_loss")
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, 9))
    for g, w in zip(got, want):
        assert abs(g["train_loss"] - w["train_loss"]) < tol, (g, w)
        assert g["lr"] == pytest.approx(w["lr"], rel=1e-12)  # the schedule steps once per update, not per process
        # DeepSpeed measures the norm itself (over its flat fp32 partitions): equal to torch's within 1e-3. With
        # every norm > 1 here, clipping twice (or not at all) would move the losses far more than 1e-5.
        assert g["grad_norm"] == pytest.approx(w["grad_norm"], rel=1e-3)
    assert abs(metric_rows(run, "val_loss")[-1]["val_loss"] - metric_rows(reference, "val_loss")[-1]["val_loss"]) < tol


def assert_export_matches(run, reference):
    with torch.no_grad():
        got = load_export(run / HF_EXPORTS / FINAL)(IDS).logits
        want = load_export(reference / HF_EXPORTS / FINAL)(IDS).logits
    torch.testing.assert_close(got, want, atol=2e-4, rtol=0)


def assert_same_final_weights(run, other):
    """Resumed vs uninterrupted: the same tensors within 1e-6 (reductions may sum in another order)."""
    a, b = final_weights(run), final_weights(other)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)


def test_zero2_two_processes_then_resume(owt_data_dir, reference, tmp_path):
    out = tmp_path / "zero2"
    proc = launch("cpu_zero2.yaml", owt_data_dir, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_losses(out, reference)
    assert_export_matches(out, reference)
    hw = read_json(out / RUN_INFO)["hardware"]
    assert (hw["num_processes"], hw["num_machines"], hw["distributed_type"], hw["deepspeed_zero_stage"]) == \
        (2, 1, "DEEPSPEED", 2)
    assert read_json(out / TRAINING_CONFIG)["gradient_accumulation_steps"] == 1
    # resume the 2-process ZeRO-2 run from step 4 into a new folder: same final weights (within 1e-6)
    resumed = tmp_path / "zero2-resumed"
    proc = launch("cpu_zero2.yaml", owt_data_dir, resumed, resume_from_checkpoint=out / CHECKPOINTS / "step4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_final_weights(resumed, out)


def test_zero3_two_processes(owt_data_dir, reference, tmp_path):
    out = tmp_path / "zero3"
    proc = launch("cpu_zero3.yaml", owt_data_dir, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_losses(out, reference)
    assert_export_matches(out, reference)  # full weights gathered from the ZeRO-3 shards
    assert read_json(out / RUN_INFO)["hardware"]["deepspeed_zero_stage"] == 3


@pytest.mark.timeout(900)
@pytest.mark.parametrize("config_file", ["cpu_zero2.yaml", "cpu_zero3.yaml"])
def test_compiled_blocks_under_two_process_zero(owt_data_dir, reference, tmp_path, config_file):
    """compile: true (regional, in place) under 2-process DeepSpeed trains like the eager one-process run (losses
    within 1e-5) and exports plain parameter names."""
    out = tmp_path / "compiled"
    proc = launch(config_file, owt_data_dir, out, compile="true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_json(out / TRAINING_CONFIG)["compile"] is True
    assert_same_losses(out, reference)
    assert_export_matches(out, reference)
    assert not any("_orig_mod" in k for k in final_weights(out))


@pytest.mark.timeout(900)
@pytest.mark.parametrize("compile", ["false", "true"])
def test_ddp_two_processes(owt_data_dir, reference, tmp_path, compile):
    """DDP (torchrun through `accelerate launch`, gloo on CPU), eager and compiled: trains like the one-process run."""
    out = tmp_path / "ddp"
    proc = launch("cpu_ddp.yaml", owt_data_dir, out, compile=compile)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hw = read_json(out / RUN_INFO)["hardware"]
    assert (hw["num_processes"], hw["distributed_type"], hw["deepspeed_zero_stage"]) == (2, "MULTI_CPU", None)
    assert_same_losses(out, reference)
    assert_export_matches(out, reference)
    assert not any("_orig_mod" in k for k in final_weights(out))


def test_one_process_checkpoint_resumes_under_two_process_ddp(owt_data_dir, reference, tmp_path):
    """A checkpoint without DeepSpeed holds whole state: the one-process run's step 4 continues on 2 DDP ranks to
    the one-process run's final weights (within 1e-6: the all-reduce sums in another order)."""
    out = tmp_path / "ddp-resumed"
    proc = launch("cpu_ddp.yaml", owt_data_dir, out, resume_from_checkpoint=reference / CHECKPOINTS / "step4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["step"] for r in metric_rows(out, "train_loss")] == [5, 6, 7, 8]
    assert_same_final_weights(out, reference)


def test_simulated_two_nodes_zero2(owt_data_dir, reference, tmp_path):
    out, port = tmp_path / "two-nodes", free_port()
    procs = []
    for machine_rank in (0, 1):
        cmd = accelerate_cmd("cpu_zero2.yaml", 2, "--num_machines", "2", "--machine_rank", str(machine_rank),
                             "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
                             "--deepspeed_multinode_launcher", "standard", "-m", "gpt2_owt.training.train",
                             *train_args(owt_data_dir, out, **RUN))
        procs.append(subprocess.Popen(cmd, env=cli_env(OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT))
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    assert_same_losses(out, reference)
    hw = read_json(out / RUN_INFO)["hardware"]
    assert (hw["num_processes"], hw["num_machines"]) == (2, 2)


def test_batch_not_divisible_by_the_world_size(owt_data_dir, tmp_path):
    proc = launch("cpu_zero2.yaml", owt_data_dir, tmp_path / "o", micro_batch_size=4)
    assert proc.returncode != 0
    assert "error: global_batch_size 4 is not divisible by micro_batch_size 4 x world size 2 = 8" in proc.stderr
    assert not (tmp_path / "o").exists()
