"""Optimizer states on the Hub (`upload.py --with_optimizer_states`) and the data-order replay of `verify --data_dir`.

A real 3-step trainer run with a checkpoint every step is published to the local Hub server; step 1's Accelerate
state is downloaded back and the trainer resumes from it: weights, losses and batches equal both the uninterrupted
run and a resume from the local checkpoints/step1 (bitwise, CPU fp32).
"""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
from safetensors.torch import load_file

from gpt2_owt.core.records import sha256_file
from gpt2_owt.model_card import checkpoint_manifest as cm
from gpt2_owt.model_card.build import main as build_main
from helpers.release import make_results
from helpers.hub import blob, run_upload
from helpers.training import metric_rows, run_inprocess
from gpt2_owt.training.run_dir import CHECKPOINTS

pytestmark = pytest.mark.slow

REPO = "alice/gpt2-owt-states"
RUN = dict(seq_len=32, global_batch_size=4, micro_batch_size=2, max_steps=3, warmup_steps=1, eval_interval=0,
           eval_iters=1, checkpoint_interval=1, keep_last_checkpoints=3, export_steps=[0, 1, 2],
           record_fed_batches="true")


@pytest.fixture(scope="module")
def state_run(owt_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("states")
    run = root / "run"
    assert run_inprocess(owt_data_dir, run, **RUN) == 0
    results = make_results(root / "results.json", sha256_file(run / "hf" / "final" / cm.WEIGHTS))
    build_main(["--run_dir", str(run), "--eval_results", str(results), "--output_dir", str(root / "release"),
                "--repo_id", REPO])
    return run, root / "release"


def same_weights(a, b) -> bool:
    ta, tb = load_file(str(a)), load_file(str(b))
    return ta.keys() == tb.keys() and all(ta[k].equal(tb[k]) for k in ta)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_optimizer_states_upload_then_resume_equals_local_resume(hub, state_run, owt_data_dir, tmp_path):
    run, release = state_run
    argv = [release, "--repo_id", REPO, "--checkpoints", run / "hf", "--with_optimizer_states"]
    dry = run_upload(hub, *argv, "--dry_run")
    assert dry.returncode == 0 and "step1 <- " in dry.stdout and "as checkpoints/step1/: optimizer state" in dry.stdout
    hub.state.fail("POST", r"/commit/step2$", status=500)  # dies after step 1's state: the rerun resumes
    first = run_upload(hub, *argv)
    assert first.returncode == 2 and "Rerun the same command to resume" in first.stderr
    second = run_upload(hub, *argv)
    assert second.returncode == 0, second.stderr
    assert "step2: optimizer state checkpoints/step2/" in second.stdout

    manifest = json.loads(blob(hub, REPO, "main", cm.CHECKPOINTS_JSON))
    states = {e["branch"]: e["optimizer_state"] for e in manifest["checkpoints"]}
    assert states["step0"] is None  # no checkpoint at step 0 (nothing to resume)
    for branch, step in (("step1", 1), ("step2", 2), ("main", 3)):  # the final step's state rides on main
        local = run / CHECKPOINTS / f"step{step}"
        files = {p.relative_to(local).as_posix(): p.stat().st_size for p in local.rglob("*") if p.is_file()}
        assert states[branch] == {"path": f"checkpoints/step{step}/", "files": len(files),
                                  "bytes": sum(files.values())}
        remote = hub.state.snapshot(REPO, branch)
        assert {f"checkpoints/step{step}/{n}" for n in files} <= set(remote)
        assert remote[f"checkpoints/step{step}/optimizer.bin"] == sha256_file(local / "optimizer.bin")
    print(f"\noptimizer state sizes (tiny preset): {json.dumps({b: s['bytes'] for b, s in states.items() if s})}")

    download = tmp_path / "download"
    code = textwrap.dedent(f"""
        from huggingface_hub import snapshot_download
        snapshot_download("{REPO}", revision="step1", allow_patterns=["checkpoints/step1/*"], local_dir="{download}")
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=hub.env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from_hub, from_local = tmp_path / "from_hub", tmp_path / "from_local"
    assert run_inprocess(owt_data_dir, from_hub, resume_from_checkpoint=download / "checkpoints" / "step1", **RUN) == 0
    assert run_inprocess(owt_data_dir, from_local, resume_from_checkpoint=run / CHECKPOINTS / "step1", **RUN) == 0
    for out in (from_hub, from_local):
        for name in ("step2", "final"):
            assert same_weights(out / "hf" / name / cm.WEIGHTS, run / "hf" / name / cm.WEIGHTS), (out, name)
        assert [r["train_loss"] for r in metric_rows(out, "train_loss")] == [
            r["train_loss"] for r in metric_rows(run, "train_loss")][1:]
        assert (out / "fed_batches.jsonl").read_text().splitlines() == \
            (run / "fed_batches.jsonl").read_text().splitlines()[1:]


@pytest.mark.timeout(900)
def test_verify_replays_a_published_data_order(hub, state_run, owt_data_dir, tmp_path, capsys):
    from gpt2_owt.model_card.verify import main as verify_main

    run, release = state_run
    assert run_upload(hub, release, "--repo_id", REPO, "--checkpoints", run / "hf").returncode == 0
    local = tmp_path / "main"
    shutil.copytree(release, local)
    (local / cm.CHECKPOINTS_JSON).write_bytes(blob(hub, REPO, "main", cm.CHECKPOINTS_JSON))
    (local / "training_logs").mkdir()
    shutil.copy(run / "fed_batches.jsonl", local / "training_logs" / "fed_batches.jsonl")
    argv = [str(local), "--branches_dir", str(run / "hf"), "--data_dir", str(owt_data_dir)]
    assert verify_main(argv) == 0
    assert "PASS  data_order: all 3 batches of training_logs/fed_batches.jsonl reproduced with data_seed 1337" in \
        capsys.readouterr().out
    rows = (run / "fed_batches.jsonl").read_text().splitlines()
    forged = json.loads(rows[1]) | {"tokens_sha256": "0" * 64}
    (local / "training_logs" / "fed_batches.jsonl").write_text("\n".join([rows[0], json.dumps(forged), rows[2]]) + "\n")
    with pytest.raises(SystemExit) as e:
        verify_main(argv)
    out = capsys.readouterr().out
    assert e.value.code == 1 and "FAIL  data_order: 1 of 3 batches differ" in out and "(first at step 1)" in out
