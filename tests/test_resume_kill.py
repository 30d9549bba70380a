"""SIGKILL a real `gpt2-owt train` at seeded moments (mid-step, mid-checkpoint, mid-export, at a random
delay), each time continuing with `--resume_from_checkpoint auto`, until it finishes: the final weights, every
export and the per-step logs equal an uninterrupted run's (rows except timings, each step exactly once)."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from helpers.training import REPO_ROOT, cli_env, read_jsonl, run_inprocess, train_args, untimed
from gpt2_owt.core.readers import read_json
from gpt2_owt.training.run_dir import CHECKPOINTS, FINAL, HF_EXPORTS, METRICS, RUN_INFO, list_step_dirs

pytestmark = pytest.mark.slow

RUN = dict(seq_len=32, global_batch_size=4, micro_batch_size=2, max_steps=24, warmup_steps=2, eval_interval=4,
           eval_iters=1, checkpoint_interval=4, keep_last_checkpoints=2, export_steps=[0, 1, 2, 8, 16],
           export_interval=0, record_fed_batches="true")
SEED = int(os.environ.get("RESUME_KILL_SEED", "0"))
ATTEMPT_TIMEOUT = 240


def fresh_tmp(folder: Path, since: float) -> bool:
    """A hidden temp folder (`.tmp-stepN` checkpoint, `.NAME.tmp-PID` export being written) made by this attempt."""
    if not folder.is_dir():
        return False
    for p in folder.iterdir():
        try:
            if p.name.startswith(".") and ".tmp-" in f".{p.name}" and p.stat().st_mtime > since:
                return True
        except FileNotFoundError:  # renamed into place between listing and stat
            continue
    return False


def metrics_rows(out: Path) -> int:
    path = out / METRICS
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def moments(rng: random.Random) -> list[tuple[str, object]]:
    """(name, condition(out, attempt start, rows at start)) in a seeded order; each condition needs progress made
    by the attempt itself, so every attempt either is killed after doing something or runs to the end."""
    rows_ahead, delay = rng.randint(2, 9), rng.uniform(0.0, 6.0)
    found = [
        ("mid-checkpoint", lambda out, t0, rows: fresh_tmp(out / CHECKPOINTS, t0)),
        ("mid-export", lambda out, t0, rows: fresh_tmp(out / HF_EXPORTS, t0)),
        (f"mid-step ({rows_ahead} rows on)", lambda out, t0, rows: metrics_rows(out) >= rows + rows_ahead),
        (f"{delay:.2f} s after start", lambda out, t0, rows: time.time() - t0 > delay),
    ]
    rng.shuffle(found)
    return found


def start(data_dir: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "gpt2_owt.training.train", *train_args(data_dir, out, **RUN, resume_from_checkpoint="auto")]
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def kill_when(proc: subprocess.Popen, out: Path, condition) -> bool:
    """SIGKILL `proc` as soon as `condition` holds (polled every 5 ms); False if it finished first."""
    t0, rows = time.time(), metrics_rows(out)
    while time.time() - t0 < ATTEMPT_TIMEOUT:
        if proc.poll() is not None:
            return False
        if condition(out, t0, rows):
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            return True
        time.sleep(0.005)
    proc.kill()
    proc.communicate(timeout=60)
    raise AssertionError(f"attempt took over {ATTEMPT_TIMEOUT} s")




@pytest.mark.timeout(1500)
def test_sigkill_at_seeded_moments_then_auto_resume_equals_the_uninterrupted_run(owt_data_dir, tmp_path):
    reference = tmp_path / "reference"
    assert run_inprocess(owt_data_dir, reference, **RUN) == 0
    out = tmp_path / "killed"
    killed = []
    for name, condition in moments(random.Random(SEED)):
        if kill_when(start(owt_data_dir, out), out, condition):
            killed.append(name)
    proc = start(owt_data_dir, out)
    _, err = proc.communicate(timeout=ATTEMPT_TIMEOUT)
    assert proc.returncode == 0, err[-3000:]
    # The step-row and delay moments always land; a checkpoint or export write of the tiny model can be over before
    # the 5 ms poll sees its temp folder (on an idle machine), so those two are counted, not required.
    assert len(killed) >= 2 and any(name.startswith("mid-step") for name in killed), killed
    print(f"killed at: {killed}")

    a = load_file(str(out / HF_EXPORTS / FINAL / "model.safetensors"))
    b = load_file(str(reference / HF_EXPORTS / FINAL / "model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert untimed(read_jsonl(out / METRICS)) == untimed(read_jsonl(reference / METRICS))
    assert read_jsonl(out / "fed_batches.jsonl") == read_jsonl(reference / "fed_batches.jsonl")
    assert [r["update"] for r in read_jsonl(out / "fed_batches.jsonl")] == list(range(24))
    exports = sorted(p.name for p in (out / HF_EXPORTS).iterdir())
    assert exports == sorted(p.name for p in (reference / HF_EXPORTS).iterdir())  # no .tmp-* left
    for name in exports:
        assert read_json(out / HF_EXPORTS / name / "export_info.json") == \
            read_json(reference / HF_EXPORTS / name / "export_info.json"), name
    assert [s for s, _ in list_step_dirs(out / CHECKPOINTS)] == [20, 24]
    assert not [p for p in (out / CHECKPOINTS).iterdir() if p.name.startswith(".tmp-")]
    info = read_json(out / RUN_INFO)
    assert (info["status"], info["steps_done"], info["segments"]) == ("completed", 24, [])
