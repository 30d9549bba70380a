"""The torch-free core: light commands import no torch/transformers, the run folder writer (RunDir) and its
checkpoints (Checkpointer), the one FLOPs formula and device table, the reference numbers' single home."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2_owt.core.errors import UserError
from gpt2_owt.core.records import sha256_file
from gpt2_owt.modeling import flops
from helpers.training import REPO_ROOT
from gpt2_owt.core.readers import read_json
from gpt2_owt.training.checkpointer import CHECKPOINT_INFO_KEYS, Checkpointer, verify
from gpt2_owt.training.run_dir import (CHECKPOINTS, CHECKPOINT_INFO, FED_BATCHES, LOGS, METRICS, RUN_INFO, read_metrics,
                                       read_rows)
from gpt2_owt.training.run_dir import RunDir

HEAVY = ("torch", "transformers")


def imported_heavy(code: str) -> list[str]:
    """Heavy modules in sys.modules after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport sys, json; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("module", [f"gpt2_owt.{m}" for m in (
    "modeling", "core.records", "core.errors", "modeling.flops", "modeling.tokenizer", "modeling.hf_folder",
    "training.run_dir", "training.data_dir", "training.manifest", "training.data_order", "model_card.release_dir",
    "model_card.facts", "model_card.build", "upload", "model_card.verify", "model_card.checkpoint_manifest",
    "modeling.model_folder", "core.output_paths", "core.folder_lock", "training.checkpointer", "cli")])
def test_light_modules_import_no_torch(module):
    assert imported_heavy(f"import {module}") == []


@pytest.mark.timeout(300)
def test_light_commands_run_without_torch(owt_data_dir, tmp_path):
    """`manifest verify` and `upload --dry_run`-style runs (argument parsing, checks, error paths) stay torch-free."""
    verify = f"from gpt2_owt.training.manifest import main\nmain(['verify', '--data_dir', {str(owt_data_dir)!r}])"
    assert imported_heavy(verify) == []
    upload = ("from gpt2_owt import upload\ntry:\n    upload.main([" + repr(str(tmp_path / "missing")) +
              ", '--repo_id', 'x/y', '--dry_run'])\nexcept SystemExit as e:\n    assert e.code == 2")
    assert imported_heavy(upload) == []


# ---------------------------------------------------------------------------------------------------- RunDir
def write_rows(path, steps, key="step"):
    path.write_text("".join(json.dumps({key: s, "x": s * 10}) + "\n" for s in steps))


def test_resume_truncation_one_rule(tmp_path):
    """Resume at checkpoint S=5: metrics rows (step = updates done) keep step <= 5; fed_batches rows (update =
    0-based update index) keep update < 5, so the update the kill interrupted (update 5) is fed and written again."""
    run = RunDir(tmp_path)
    write_rows(tmp_path / METRICS, [1, 2, 3, 4, 5, 5, 6, 7])
    write_rows(tmp_path / FED_BATCHES, [0, 1, 2, 3, 4, 5, 6], key="update")
    run.truncate_rows(5)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5, 5]
    assert [r["update"] for r in read_rows(tmp_path / FED_BATCHES)] == [0, 1, 2, 3, 4]
    run.log_fed_batch(5, "ab")
    assert read_rows(tmp_path / FED_BATCHES)[-1] == {"update": 5, "tokens_sha256": "ab"}
    assert not list(tmp_path.glob(".*tmp*"))


class OneProcess:
    """Accelerate's side of a checkpoint save in one process: save_state writes the state files."""
    is_main_process = True

    def wait_for_everyone(self):
        pass

    def save_state(self, folder):
        (Path(folder) / "model.safetensors").write_text(f"weights of {folder}")


def save_checkpoints(checkpointer: Checkpointer, steps):
    for step in steps:
        info = {"step": step, "tokens": step * 10, "elapsed_seconds": 1.0, "world_size": 1, "zero_stage": None,
                "identity": {"seq_len": 4}}
        checkpointer.save(OneProcess(), step, info)


@pytest.mark.parametrize("keep_last, milestone, kept", [
    (2, 0, [40, 50]), (0, 0, [50]), (1, 20, [20, 40, 50]), (3, 30, [30, 40, 50]),
])
def test_checkpoint_pruning_always_keeps_the_latest(tmp_path, keep_last, milestone, kept):
    checkpointer = Checkpointer(tmp_path, keep_last, milestone)
    save_checkpoints(checkpointer, [10, 20, 30, 40, 50])
    assert [s for s, _ in checkpointer.steps()] == kept
    folder, info = checkpointer.latest()
    assert folder == tmp_path / CHECKPOINTS / "step50" and info == read_json(folder / CHECKPOINT_INFO)
    assert set(info) == set(CHECKPOINT_INFO_KEYS) and info["files"] == {"model.safetensors": sha256_file(
        folder / "model.safetensors")}
    assert sorted(p.name for p in (tmp_path / CHECKPOINTS).iterdir()) == [f"step{s}" for s in kept]


def test_checkpoint_info_has_one_key_list(tmp_path):
    """save() writes exactly CHECKPOINT_INFO_KEYS; verify() refuses an info that lacks one."""
    checkpointer = Checkpointer(tmp_path)
    with pytest.raises(ValueError, match="CHECKPOINT_INFO_KEYS"):
        checkpointer.save(OneProcess(), 1, {"step": 1})
    save_checkpoints(checkpointer, [1])
    folder = tmp_path / CHECKPOINTS / "step1"
    info = read_json(folder / CHECKPOINT_INFO)
    del info["identity"]
    (folder / CHECKPOINT_INFO).write_text(json.dumps(info))
    with pytest.raises(UserError, match=f"checkpoint {folder} is damaged: checkpoint_info.json lacks identity$"):
        verify(folder)


def test_run_info_status_never_leaves_completed(tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text("{}")
    run = RunDir(tmp_path / "run")
    run.start({"seed": 1}, manifest, {"steps_done": 0}, resuming=False)
    info = read_json(run.path / RUN_INFO)
    assert info["status"] == "running" and info["finished_at"] is None and info["started_at"]
    run.update_run_info("completed", steps_done=3, wall_time_seconds=2.0)
    run.update_run_info("running", steps_done=3)
    run.update_run_info("interrupted")
    info = read_json(run.path / RUN_INFO)
    assert info["status"] == "completed" and info["finished_at"] and info["steps_done"] == 3

    # a resume keeps started_at and the wall time so far; a fresh start over an old run clears it first
    again = RunDir(run.path)
    again.start({"seed": 1}, manifest, {"steps_done": 3}, resuming=True)
    assert again.run_info["started_at"] == info["started_at"] and again.run_info["wall_time_seconds"] == 2.0
    assert again.run_info["status"] == "completed"  # resuming a completed run does not make it look unfinished
    (run.path / LOGS).mkdir()
    (run.path / "notes.txt").write_text("mine")
    again.clear()
    assert sorted(p.name for p in run.path.iterdir()) == ["notes.txt"]


# ---------------------------------------------------------------------------------------------------- flops
def test_peak_table_matches_exact_device_names_only():
    assert flops.peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989.5e12
    assert flops.peak_bf16_flops("NVIDIA H100 NVL") == 835.5e12  # not the SXM number a substring "H100" would give
    assert flops.peak_bf16_flops("NVIDIA H100 PCIe") == 756.5e12
    assert flops.peak_bf16_flops("NVIDIA A100 80GB PCIe") == flops.peak_bf16_flops("NVIDIA A100-SXM4-40GB") == 312e12
    assert flops.peak_bf16_flops("NVIDIA H200") == 989.5e12 and flops.peak_bf16_flops("NVIDIA H200 NVL") == 835.5e12
    assert flops.peak_bf16_flops("NVIDIA L40S") == 362.05e12 and flops.peak_bf16_flops("NVIDIA B200") == 2.25e15
    for unknown in ("NVIDIA L40", "NVIDIA A100", "H100", "NVIDIA H100", "NVIDIA GeForce RTX 4090", "", None, "x86_64"):
        assert flops.peak_bf16_flops(unknown) is None and flops.tdp_watts(unknown) is None
    assert flops.tdp_watts("NVIDIA A100-SXM4-80GB") == 400 and flops.tdp_watts("NVIDIA A100-PCIE-40GB") == 250


def test_card_flops_are_the_trainers(tmp_path):
    """The card's fallback (no flops_per_token in run_info) is the trainer's formula, and it says which one."""
    from gpt2_owt.model_card.facts import CostInputs, compute_facts

    config = {"n_layer": 12, "n_embd": 768, "n_inner": None, "vocab_size": 50257, "n_positions": 1024}
    trainer_value = flops.flops_per_token(config, 1024)
    assert trainer_value == 854_438_400
    from_run_info = compute_facts({"flops_per_token": trainer_value, "tokens_seen": 10}, {"seq_len": 1024}, config,
                                  [], CostInputs())
    recomputed = compute_facts({"tokens_seen": 10}, {"seq_len": 1024}, config, [], CostInputs())
    assert from_run_info["flops_per_token"] == recomputed["flops_per_token"] == trainer_value
    assert recomputed["training_flops"] == 10 * trainer_value
    for facts in (from_run_info, recomputed):
        assert "6·N + 12·n_layer·n_embd·seq_len" in facts["flops_source"]


def test_reference_numbers_come_from_results_json():
    """The card shows the references results.json carries (eval/references.py), nothing of its own."""
    from gpt2_owt.eval.references import REFERENCES, task_references
    from gpt2_owt.model_card.facts import eval_rows

    refs = task_references("lambada_openai", {"acc": 0.3, "acc_last_token": 0.4, "perplexity": 40.0})
    assert refs["acc_last_token"] == [{"value": 0.4667, "source": REFERENCES[("lambada_openai", "acc_last_token")][0][1]}]
    assert [r["value"] for r in refs["acc"]] == [0.4599, 0.3256]
    results = {"tasks": {"lambada_openai": {"metrics": {"acc_last_token": 0.4}, "references": refs}}}
    (row,) = eval_rows(results)
    assert row["references"] == [(0.4667, refs["acc_last_token"][0]["source"])]
    del results["tasks"]["lambada_openai"]["references"]
    assert eval_rows(results)[0]["references"] == []
