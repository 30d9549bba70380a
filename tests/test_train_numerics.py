"""One numerics recipe under every backend, checked on CPU with bf16 forced: DeepSpeed ZeRO-2 on 2 processes trains
fp32 master weights with bf16 autocast (training.train.use_torch_autocast), and its exports are those fp32 master
weights, bit for bit; its losses match the Accelerate-autocast path that single-process and DDP runs take."""

import pytest
import torch
from safetensors.torch import load_file

from train_support import accelerate_cmd, read_rows, run_cli, run_inprocess, train_args
from training import run_dir as rd

pytestmark = pytest.mark.slow

RUN = dict(seq_len=32, global_batch_size=4, micro_batch_size=2, max_steps=6, warmup_steps=2, eval_interval=0,
           eval_iters=1, checkpoint_interval=6, export_steps=[0], export_interval=0, mixed_precision="bf16")
# Measured on the 2-core CPU: loss differences 0, 1e-6, 1.2e-4, 4e-6, 8e-6, 6e-5 over the 6 steps (the same bf16
# micro-batch compute; the fp32 gradient sums differ in order, which flips some bf16 roundings). Bound: 1e-3.
LOSS_TOL = 1e-3


@pytest.mark.timeout(900)
def test_zero2_bf16_exports_the_fp32_master_weights(owt_data_dir, tmp_path):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    autocast_run, zero2 = tmp_path / "autocast", tmp_path / "zero2"
    assert run_inprocess(owt_data_dir, autocast_run, **RUN) == 0
    cmd = accelerate_cmd("cpu_zero2.yaml", 2, "-m", "training.train", *train_args(owt_data_dir, zero2, **RUN))
    proc = run_cli(cmd, OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    hw = rd.read_json(zero2 / rd.RUN_INFO)["hardware"]
    assert (hw["mixed_precision"], hw["deepspeed_zero_stage"], hw["deepspeed_torch_autocast"]) == ("bf16", 2, True)

    exported = load_file(str(zero2 / rd.HF_EXPORTS / rd.FINAL / "model.safetensors"))
    assert {t.dtype for t in exported.values()} == {torch.float32}
    master = get_fp32_state_dict_from_zero_checkpoint(str(zero2 / rd.CHECKPOINTS / "step_6"), tag="pytorch_model")
    for name, tensor in exported.items():
        want = master[name][: tensor.shape[0]]  # the checkpoint holds the padded training layout
        assert torch.equal(tensor, want), name

    got, want = read_rows(zero2, "train_loss"), read_rows(autocast_run, "train_loss")
    assert len(got) == len(want) == 6
    diffs = [abs(g["train_loss"] - w["train_loss"]) for g, w in zip(got, want)]
    print("zero2 vs autocast loss diffs:", diffs)
    assert max(diffs) < LOSS_TOL
    plain = load_file(str(autocast_run / rd.HF_EXPORTS / rd.FINAL / "model.safetensors"))
    assert {k: (v.shape, v.dtype) for k, v in plain.items()} == {k: (v.shape, v.dtype) for k, v in exported.items()}
