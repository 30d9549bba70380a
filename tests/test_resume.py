"""Resume, in process on CPU: checkpoints are verified before they are trusted (sha256 of every file), damaged
newest ones are skipped by `auto`, per-step logs hold each step once (torn last lines dropped), a changed run
identity is refused unless allowed and recorded, a completed run stays completed, the latest checkpoint is kept,
a full disk at a checkpoint or export is one clear error that leaves earlier checkpoints intact, and a second
trainer on a run folder in use is refused (one writer per run folder)."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gpt2_owt.core.folder_lock import LOCK_FILE, lock_holder
from gpt2_owt.core.records import sha256_file
from helpers.training import REPO_ROOT, cli_env, read_jsonl, metric_rows, run_inprocess, train_args, untimed
from gpt2_owt.core.readers import read_json
from gpt2_owt.training.checkpointer import verify
from gpt2_owt.training.manifest import read_manifest, write_manifest
from gpt2_owt.training.run_dir import (CHECKPOINT_INFO, CHECKPOINTS, DATA_MANIFEST, FINAL, HF_EXPORTS, METRICS, RUN_INFO,
                                       list_step_dirs)

pytestmark = pytest.mark.slow  # a 12-update reference run and a resumed run per test: ~2 min here

# 12 updates, checkpoints at 4, 8, 12 (all kept), batch hashes traced
RUN = dict(seq_len=32, global_batch_size=4, micro_batch_size=2, max_steps=12, warmup_steps=2, eval_interval=4,
           eval_iters=1, checkpoint_interval=4, keep_last_checkpoints=3, export_steps=[0, 2], export_interval=0,
           record_fed_batches="true")


@pytest.fixture(scope="module")
def reference(owt_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert run_inprocess(owt_data_dir, out, **RUN) == 0
    return out


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def copy_run(reference: Path, dst: Path, keep_up_to: int) -> Path:
    """The reference run as a run killed after its checkpoint `keep_up_to` would leave it (plus later rows)."""
    shutil.copytree(reference, dst)
    for step, path in list_step_dirs(dst / CHECKPOINTS):
        if step > keep_up_to:
            shutil.rmtree(path)
    shutil.rmtree(dst / HF_EXPORTS / FINAL)
    return dst




def assert_same_run(run: Path, reference: Path) -> None:
    """Bitwise-equal final weights, and metrics / fed_batches rows equal to the reference's except timings."""
    a = load_file(str(run / HF_EXPORTS / FINAL / "model.safetensors"))
    b = load_file(str(reference / HF_EXPORTS / FINAL / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert untimed(read_jsonl(run / METRICS)) == untimed(read_jsonl(reference / METRICS))
    assert read_jsonl(run / "fed_batches.jsonl") == read_jsonl(reference / "fed_batches.jsonl")


def expect_one_error(capsys, data_dir, out, match, **overrides) -> str:
    before = snapshot(out) if out.exists() else {}
    with pytest.raises(SystemExit) as exc:
        run_inprocess(data_dir, out, **overrides)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and match in err[0], err
    assert (snapshot(out) if out.exists() else {}) == before
    return err[0]


def test_checkpoint_info_lists_the_sha256_of_every_file(reference):
    for step, folder in list_step_dirs(reference / CHECKPOINTS):
        info = json.loads((folder / CHECKPOINT_INFO).read_text())
        files = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} - {CHECKPOINT_INFO}
        assert set(info["files"]) == files and {"model.safetensors", "optimizer.bin", "scheduler.bin"} <= files
        assert all(info["files"][name] == sha256_file(folder / name) for name in files)
        assert info["step"] == step and info["identity"]["learning_rate"] == 3e-3
        assert info["identity"]["data_manifest_sha256"] == sha256_file(reference / DATA_MANIFEST)
    assert [s for s, _ in list_step_dirs(reference / CHECKPOINTS)] == [4, 8, 12]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "truncated optimizer state": (lambda f: truncate(f / "optimizer.bin"), "optimizer.bin does not match its sha256 in checkpoint_info.json"),
    "garbage info": (lambda f: (f / CHECKPOINT_INFO).write_text("{not json"), "checkpoint_info.json is not valid JSON"),
    "missing file": (lambda f: (f / "scheduler.bin").unlink(), "scheduler.bin is missing"),
    "no info": (lambda f: (f / CHECKPOINT_INFO).unlink(), "is not a complete checkpoint (no checkpoint_info.json)"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_auto_skips_a_damaged_newest_checkpoint(capsys, damage, reference, owt_data_dir, tmp_path):
    out = copy_run(reference, tmp_path / "run", keep_up_to=8)
    spoil, message = DAMAGE[damage]
    spoil(out / CHECKPOINTS / "step8")
    capsys.readouterr()
    assert run_inprocess(owt_data_dir, out, **RUN, resume_from_checkpoint="auto") == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(out / CHECKPOINTS / "step8") in warnings[0], warnings
    assert warnings[0].endswith(f"{message}; trying the previous checkpoint"), warnings
    assert_same_run(out, reference)  # resumed from step4, re-ran 5..12 and replaced the damaged step8
    verify(out / CHECKPOINTS / "step8")


def test_explicit_damaged_checkpoint_is_one_error(capsys, reference, owt_data_dir, tmp_path):
    folder = tmp_path / "step8"
    shutil.copytree(reference / CHECKPOINTS / "step8", folder)
    truncate(folder / "optimizer.bin")
    expect_one_error(capsys, owt_data_dir, tmp_path / "o", f"checkpoint {folder} is damaged: optimizer.bin does not "
                     "match its sha256 in checkpoint_info.json", **RUN, resume_from_checkpoint=folder)
    (folder / CHECKPOINT_INFO).write_bytes(b"\xff\xfe garbage")
    expect_one_error(capsys, owt_data_dir, tmp_path / "o", "checkpoint_info.json is not valid JSON",
                     **RUN, resume_from_checkpoint=folder)
    assert not (tmp_path / "o").exists()


def test_auto_with_only_damaged_checkpoints_is_one_error(capsys, reference, owt_data_dir, tmp_path):
    out = copy_run(reference, tmp_path / "run", keep_up_to=8)
    for _, folder in list_step_dirs(out / CHECKPOINTS):
        truncate(folder / "model.safetensors")
    before = snapshot(out)
    with pytest.raises(SystemExit) as exc:
        run_inprocess(owt_data_dir, out, **RUN, resume_from_checkpoint="auto")
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: no intact checkpoint in {out / CHECKPOINTS} (all 2 are damaged): resume from an " \
                      "earlier copy or start again with --overwrite_output_dir"
    assert len(err) == 3 and snapshot(out) == before


def test_torn_last_rows_and_the_interrupted_update_are_not_kept(reference, owt_data_dir, tmp_path):
    """A kill after update 9 started (its batch traced) and mid-way through writing a metrics row: the resume from
    step8 keeps metrics rows <= 8, fed_batches rows < 8, and drops both torn last lines."""
    out = copy_run(reference, tmp_path / "run", keep_up_to=8)
    for name in (METRICS, "fed_batches.jsonl"):
        lines = (out / name).read_text().splitlines(keepends=True)
        (out / name).write_text("".join(lines[:-2]) + lines[-2][:15])
    assert run_inprocess(owt_data_dir, out, **RUN, resume_from_checkpoint="auto") == 0
    assert_same_run(out, reference)
    assert [r["update"] for r in read_jsonl(out / "fed_batches.jsonl")] == list(range(12))


def changed_data_dir(owt_data_dir: Path, dst: Path) -> Path:
    """The same tokens under a manifest that differs (another data_dir identity)."""
    shutil.copytree(owt_data_dir, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    manifest = read_manifest(dst)
    manifest["source"] = {**manifest.get("source", {}), "note": "another corpus"}
    write_manifest(dst, manifest)
    return dst


def test_resume_refuses_a_changed_run_identity(capsys, reference, owt_data_dir, tmp_path):
    out = copy_run(reference, tmp_path / "run", keep_up_to=8)
    step8 = out / CHECKPOINTS / "step8"
    hint = "(pass --allow_changed_config true to continue with the change; run_info.json records it)"
    err = expect_one_error(capsys, owt_data_dir, out, "was made with learning_rate=0.003, this run has "
                           f"learning_rate=0.001 {hint}", **RUN | {"learning_rate": 1e-3},
                           resume_from_checkpoint="auto")
    assert err == f"error: checkpoint {step8} was made with learning_rate=0.003, this run has learning_rate=0.001 " \
                  f"{hint}"
    other = changed_data_dir(owt_data_dir, tmp_path / "other-data")
    expect_one_error(capsys, other, out, f"was made with data_manifest_sha256={sha256_file(out / DATA_MANIFEST)}, "
                     f"this run has data_manifest_sha256={sha256_file(other / 'manifest.json')}",
                     **RUN, resume_from_checkpoint="auto")
    expect_one_error(capsys, owt_data_dir, out, "was made with total_steps=12, warmup_steps=2, this run has "
                     "total_steps=20, warmup_steps=3", **RUN | {"max_steps": 20, "warmup_steps": 3},
                     resume_from_checkpoint="auto")


def test_allowed_change_is_recorded_as_a_segment_and_shown_on_the_card(reference, owt_data_dir, tmp_path):
    out = copy_run(reference, tmp_path / "run", keep_up_to=8)
    for _ in range(2):  # a repeated resume with the same change records it once
        assert run_inprocess(owt_data_dir, out, **RUN | {"learning_rate": 1e-3}, resume_from_checkpoint=
                             out / CHECKPOINTS / "step8", allow_changed_config="true") == 0
    segments = read_json(out / RUN_INFO)["segments"]
    assert [{k: s[k] for k in ("from_step", "changes")} for s in segments] == \
        [{"from_step": 8, "changes": {"learning_rate": {"old": 3e-3, "new": 1e-3}}}]
    assert read_json(out / RUN_INFO)["status"] == "completed"
    assert json.loads((out / CHECKPOINTS / "step12" / CHECKPOINT_INFO).read_text())["identity"]["learning_rate"] == 1e-3
    rows, want = metric_rows(out, "train_loss"), metric_rows(reference, "train_loss")
    assert [r["step"] for r in rows] == list(range(1, 13)) and untimed(rows[:8]) == untimed(want[:8])
    for got, ref in zip(rows[8:], want[8:]):  # the new peak governs from update 8 on: same cosine, same min_lr
        cosine = (ref["lr"] - 3e-4) / (3e-3 - 3e-4)
        assert got["lr"] == pytest.approx(3e-4 + (1e-3 - 3e-4) * cosine, rel=1e-9)

    from gpt2_owt.model_card.build import main as build_card

    release = tmp_path / "release"
    build_card(["--run_dir", str(out), "--output_dir", str(release)])
    card = (release / "README.md").read_text()
    assert "Changes during the run" in card and "| 8 | `learning_rate` | 0.003 | 0.001 |" in card


def test_model_change_is_refused_even_when_changes_are_allowed(capsys, reference, owt_data_dir, tmp_path):
    wider = json.loads((Path(__file__).parents[1] / "modeling/configs/tiny.json").read_text()) | {"n_layer": 3}
    (tmp_path / "wider.json").write_text(json.dumps(wider))
    err = expect_one_error(capsys, owt_data_dir, tmp_path / "o", "was made with model=", **RUN | {
        "model_config": tmp_path / "wider.json", "allow_changed_config": "true",
        "resume_from_checkpoint": reference / CHECKPOINTS / "step8"})
    assert "allow_changed_config" not in err


def test_a_completed_run_stays_completed_after_a_crashed_resume(reference, owt_data_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = read_json(out / RUN_INFO)
    from gpt2_owt.training.trainer import Trainer

    def crash(self):
        raise RuntimeError("crashed while building the model")

    monkeypatch.setattr(Trainer, "build", crash)
    with pytest.raises(RuntimeError, match="crashed"):
        run_inprocess(owt_data_dir, out, **RUN, resume_from_checkpoint="auto")
    after = read_json(out / RUN_INFO)
    keys = ("status", "finished_at", "steps_done", "tokens_seen", "num_parameters")
    assert {k: after[k] for k in keys} == {k: before[k] for k in keys} and after["status"] == "completed"
    assert after["num_parameters"] == before["num_parameters"] > 0


def test_keep_last_checkpoints_0_keeps_the_latest(owt_data_dir, tmp_path):
    out = tmp_path / "run"
    assert run_inprocess(owt_data_dir, out, **RUN | {"max_steps": 6, "checkpoint_interval": 2,
                                                     "keep_last_checkpoints": 0, "export_steps": []}) == 0
    assert [s for s, _ in list_step_dirs(out / CHECKPOINTS)] == [6]


# -------------------------------------------------------------------------------- full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 120 MB tmpfs: room for one checkpoint of the tiny model (~83 MB: weights + AdamW state), not two. Skipped
    where mounting is not allowed (the monkeypatched export test below covers the same path everywhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=120m", "tmpfs", str(mount)], capture_output=True,
                          timeout=30)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], capture_output=True, timeout=30)  # lazy: a lingering handle


def test_full_disk_at_a_checkpoint_then_a_rerun_with_space_completes(capsys, small_disk, reference, owt_data_dir):
    out = small_disk / "run"
    quick = RUN | {"export_steps": []}
    with pytest.raises(SystemExit) as exc:
        run_inprocess(owt_data_dir, out, **quick)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    err[-1] = err[-1][err[-1].index("error: "):]  # after the progress bar's last redraw
    assert err[-1] == f"error: cannot write {out / CHECKPOINTS / 'step8'}: No space left on device " \
                      f"({out / CHECKPOINTS / '.tmp-step8'}); nothing half-written was kept and earlier " \
                      "checkpoints are intact: free space, then continue with --resume_from_checkpoint auto"
    assert sorted(p.name for p in (out / CHECKPOINTS).iterdir()) == ["step4"]  # no partial folder, any name
    verify(out / CHECKPOINTS / "step4")
    subprocess.run(["mount", "-o", "remount,size=600m", str(small_disk)], check=True, timeout=30)
    assert run_inprocess(owt_data_dir, out, **quick, resume_from_checkpoint="auto") == 0
    assert [s for s, _ in list_step_dirs(out / CHECKPOINTS)] == [4, 8, 12]
    final = load_file(str(out / HF_EXPORTS / FINAL / "model.safetensors"))
    want = load_file(str(reference / HF_EXPORTS / FINAL / "model.safetensors"))
    assert all(torch.equal(final[k], want[k]) for k in want)


def test_full_disk_at_an_export_keeps_earlier_checkpoints(capsys, reference, owt_data_dir, tmp_path, monkeypatch):
    out = copy_run(reference, tmp_path / "run", keep_up_to=8)
    from transformers import PreTrainedModel

    real = PreTrainedModel.save_pretrained

    def full_disk_at_final(self, folder, *args, **kwargs):
        if Path(folder).name.startswith(f".{FINAL}.tmp-"):
            (Path(folder)).mkdir(parents=True, exist_ok=True)
            (Path(folder) / "model.safetensors").write_bytes(b"partial")
            raise OSError(28, "No space left on device", str(Path(folder) / "model.safetensors"))
        return real(self, folder, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full_disk_at_final)
    with pytest.raises(SystemExit) as exc:
        run_inprocess(owt_data_dir, out, **RUN, resume_from_checkpoint="auto")
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: cannot write {out / HF_EXPORTS / FINAL}: No space left on device (")
    assert err.endswith("model.safetensors); nothing half-written was kept and earlier checkpoints are intact: free "
                        "space, then continue with --resume_from_checkpoint auto")
    assert sorted(p.name for p in (out / HF_EXPORTS).iterdir()) == ["step0", "step2"]
    for _, folder in list_step_dirs(out / CHECKPOINTS):
        verify(folder)  # intact
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", real)
    assert run_inprocess(owt_data_dir, out, **RUN, resume_from_checkpoint="auto") == 0
    assert_same_run(out, reference)


# -------------------------------------------------------------------------------- one writer per run folder
@pytest.mark.slow  # two launched trainers: ~1 min on 2 shared cores
@pytest.mark.timeout(600)
def test_second_trainer_on_a_run_in_use_is_refused_and_the_first_completes(reference, owt_data_dir, tmp_path):
    """Two `--resume_from_checkpoint auto` on one run folder (issue 23): the second is one line naming the first's
    PID and changes nothing; the first, frozen meanwhile (SIGSTOP) so that the folder cannot change under the
    check, then completes the same run as the uninterrupted reference, each row once."""
    out = copy_run(reference, tmp_path / "run", keep_up_to=4)
    argv = [sys.executable, "-m", "gpt2_owt.training.train",
            *train_args(owt_data_dir, out, **RUN, resume_from_checkpoint="auto")]
    first = subprocess.Popen(argv, cwd=REPO_ROOT, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.time() + 300
        while (lock_holder(out) or {}).get("pid") != first.pid:
            assert first.poll() is None and time.time() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.02)
        first.send_signal(signal.SIGSTOP)
        before = snapshot(out)
        second = subprocess.run(argv, cwd=REPO_ROOT, env=cli_env(), capture_output=True, text=True, timeout=300)
        assert second.returncode == 2 and snapshot(out) == before
        assert second.stderr.strip().splitlines()[-1:] == [second.stderr.strip()], second.stderr[-3000:]
        assert second.stderr.startswith(f"error: {out} is in use by another writer (train, PID {first.pid}, since ")
        assert second.stderr.strip().endswith("wait for it to end or stop it; two writers would corrupt the folder")
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=60)
    assert_same_run(out, reference)
    assert [r["step"] for r in metric_rows(out, "train_loss")] == list(range(1, 13))
    assert read_json(out / RUN_INFO)["status"] == "completed" and not (out / LOCK_FILE).exists()
