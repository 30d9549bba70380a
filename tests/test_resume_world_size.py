"""Resume at another world size (2-process CPU runs through `accelerate launch`, slow): a DeepSpeed ZeRO-2 checkpoint
is partitioned per process and is refused at another layout with one line saying what to launch, both ways."""

import json

import pytest

from helpers.training import accelerate_cmd, run_cli, run_inprocess, train_args
from gpt2_owt.training.run_dir import CHECKPOINTS

pytestmark = pytest.mark.multiprocess

RUN = dict(seq_len=32, global_batch_size=4, micro_batch_size=2, max_steps=8, warmup_steps=2, eval_interval=4,
           eval_iters=1, checkpoint_interval=4, export_steps=[], export_interval=0, record_fed_batches="true")


def launch(args: list[str], config_file: str = "cpu_zero2.yaml"):
    """2 CPU processes under an accelerate config (DeepSpeed)."""
    return run_cli([*accelerate_cmd(config_file, 2), "-m", "gpt2_owt.training.train", *args], timeout=900, OMP_NUM_THREADS="1")



@pytest.mark.timeout(1200)
def test_zero2_checkpoint_is_refused_by_one_process(capsys, owt_data_dir, tmp_path):
    zero2 = tmp_path / "zero2"
    proc = launch(train_args(owt_data_dir, zero2, **RUN))
    assert proc.returncode == 0, proc.stderr[-3000:]
    step4 = zero2 / CHECKPOINTS / "step4"
    assert json.loads((step4 / "checkpoint_info.json").read_text())["world_size"] == 2
    with pytest.raises(SystemExit) as exc:
        run_inprocess(owt_data_dir, tmp_path / "one", **RUN, resume_from_checkpoint=step4)
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: checkpoint {step4} was written by 2 processes with DeepSpeed ZeRO-2 and this run has 1 process "
        "without DeepSpeed: resume it with `accelerate launch --num_processes 2` and the same ZeRO-2 DeepSpeed "
        "config (docs/checkpoints.md: resume at another world size)"]
    assert not (tmp_path / "one").exists()


@pytest.mark.timeout(1200)
def test_one_process_checkpoint_is_refused_under_two_process_zero2(owt_data_dir, tmp_path):
    one = tmp_path / "one"
    assert run_inprocess(owt_data_dir, one, **RUN) == 0
    step4 = one / CHECKPOINTS / "step4"
    proc = launch(train_args(owt_data_dir, tmp_path / "z", **RUN, resume_from_checkpoint=step4))
    assert proc.returncode != 0  # each rank exits 2; the launcher reports the failure with its own code
    assert {line for line in proc.stderr.splitlines() if line.startswith("error:")} == {  # one line per rank
        f"error: checkpoint {step4} was written by 1 process without DeepSpeed and this run has 2 processes with "
        "DeepSpeed ZeRO-2: resume it without DeepSpeed (at any number of processes) (docs/checkpoints.md: resume at another "
        "world size)"}
    assert not (tmp_path / "z").exists()
