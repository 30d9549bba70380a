"""Every bad input stops the trainer with one `error:` line, exit code 2, and nothing written or overwritten."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers.training import TINY_YAML, metric_rows, run_inprocess
from gpt2_owt.core.readers import read_json
from gpt2_owt.training.manifest import file_entries, read_manifest, write_manifest
from gpt2_owt.training.run_dir import CHECKPOINTS, TRAINING_CONFIG, list_step_dirs

SHORT = dict(seq_len=32, global_batch_size=4, micro_batch_size=2, max_steps=2, warmup_steps=1, checkpoint_interval=1,
             eval_iters=1, export_steps=[], export_interval=0)


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its bytes (to prove nothing changed)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def expect_error(capsys, data_dir, out, match: str, **overrides) -> None:
    before = snapshot(out)
    with pytest.raises(SystemExit) as exc:
        run_inprocess(data_dir, out, **overrides)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and match in err[0], err
    assert snapshot(out) == before


def copy_data(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst


@pytest.fixture(scope="module")
def finished_run(trained_run):
    return trained_run(**SHORT)


def test_unknown_field_in_yaml_and_on_the_command_line(capsys, owt_data_dir, tmp_path):
    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text(TINY_YAML.read_text() + "\nlearning_rat: 0.1\n")
    with pytest.raises(SystemExit) as exc:
        from gpt2_owt.training.train import main

        main(["--config", str(yaml_file), "--data_dir", str(owt_data_dir), "--output_dir", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"error: unknown config field 'learning_rat' in {yaml_file} (did you mean 'learning_rate'?)" in err
    expect_error(capsys, owt_data_dir, tmp_path / "o", "unknown flag --lerning_rate: did you mean --learning_rate? "
                 "(--help lists the flags)", lerning_rate=0.1)
    expect_error(capsys, owt_data_dir, tmp_path / "o", "invalid int value: 'ten'", max_steps="ten")
    assert not (tmp_path / "o").exists()


def test_batch_not_divisible(capsys, owt_data_dir, tmp_path):
    expect_error(capsys, owt_data_dir, tmp_path / "o", "global_batch_size 4 is not divisible by micro_batch_size 3",
                 **SHORT | {"micro_batch_size": 3})


def test_seq_len_longer_than_the_model(capsys, owt_data_dir, tmp_path):
    expect_error(capsys, owt_data_dir, tmp_path / "o", "seq_len 512 exceeds the model's n_positions 256",
                 **SHORT | {"seq_len": 512})


def test_missing_data_dir(capsys, tmp_path):
    expect_error(capsys, tmp_path / "nowhere", tmp_path / "o", "does not exist", **SHORT)


def test_failed_manifest_check(capsys, owt_data_dir, tmp_path):
    data = copy_data(owt_data_dir, tmp_path / "data")
    tokens = np.fromfile(data / "val.bin", dtype=np.uint16)
    tokens[3] ^= 1  # same size, different bytes
    tokens.tofile(data / "val.bin")
    expect_error(capsys, data, tmp_path / "o", "val.bin has sha256", **SHORT)


def test_data_tokenized_with_another_tokenizer(capsys, owt_data_dir, tmp_path):
    data = copy_data(owt_data_dir, tmp_path / "data")
    manifest = read_manifest(data)
    manifest["tokenizer"]["fingerprint"] = "0" * 64
    write_manifest(data, manifest)
    expect_error(capsys, data, tmp_path / "o", "was tokenized with tokenizer 000000000000", **SHORT)


def test_token_id_outside_the_vocabulary(capsys, owt_data_dir, tmp_path):
    data = copy_data(owt_data_dir, tmp_path / "data")
    tokens = np.fromfile(data / "train.bin", dtype=np.uint16)
    tokens[100] = 60000
    tokens.tofile(data / "train.bin")
    manifest = read_manifest(data)
    manifest["files"] = file_entries(data)  # a consistent manifest: only the token check can catch it
    write_manifest(data, manifest)
    expect_error(capsys, data, tmp_path / "o", "train.bin holds token id 60000 >= the model's vocab_size 50257",
                 **SHORT)


def test_resume_from_a_checkpoint_of_another_config(capsys, owt_data_dir, finished_run, tmp_path):
    ckpt = finished_run / CHECKPOINTS / "step2"
    expect_error(capsys, owt_data_dir, tmp_path / "o", "was made with global_batch_size=4, this run has "
                 "global_batch_size=8", **SHORT | {"global_batch_size": 8, "resume_from_checkpoint": ckpt})
    wider = json.loads((Path(__file__).parents[1] / "modeling/configs/tiny.json").read_text()) | {"n_layer": 3}
    (tmp_path / "wider.json").write_text(json.dumps(wider))
    expect_error(capsys, owt_data_dir, tmp_path / "o", "was made with model=", **SHORT | {
        "model_config": tmp_path / "wider.json", "resume_from_checkpoint": ckpt})
    expect_error(capsys, owt_data_dir, tmp_path / "o", "is not a complete checkpoint",
                 **SHORT | {"resume_from_checkpoint": tmp_path})
    assert not (tmp_path / "o").exists()


def test_output_dir_holding_another_run(capsys, owt_data_dir, finished_run):
    expect_error(capsys, owt_data_dir, finished_run, "already holds a run", **SHORT | {"learning_rate": 1e-3})


def test_overwrite_output_dir_replaces_the_run(owt_data_dir, finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    (out / CHECKPOINTS / "step99").mkdir()  # a stale checkpoint of the old run must not survive
    assert run_inprocess(owt_data_dir, out, **SHORT | {"max_steps": 1, "warmup_steps": 0,
                                                       "overwrite_output_dir": "true"}) == 0
    assert [s for s, _ in list_step_dirs(out / CHECKPOINTS)] == [1]
    assert read_json(out / TRAINING_CONFIG)["max_steps"] == 1


def test_auto_resume_without_a_checkpoint_restarts_only_the_same_run(capsys, owt_data_dir, finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    shutil.rmtree(out / CHECKPOINTS)  # e.g. killed hard before its first checkpoint
    expect_error(capsys, owt_data_dir, out, "already holds a run",
                 **SHORT | {"seq_len": 16, "resume_from_checkpoint": "auto"})
    assert run_inprocess(owt_data_dir, out, **SHORT | {"resume_from_checkpoint": "auto"}) == 0
    assert [r["step"] for r in metric_rows(out, "train_loss")] == [1, 2]  # the old rows were replaced, not appended


def test_unavailable_attention_kernel_is_refused_before_anything_is_written(capsys, owt_data_dir, tmp_path):
    out = tmp_path / "run"  # flash_attention_2 needs the flash_attn package (and CUDA): neither is here
    expect_error(capsys, owt_data_dir, out, "flash_attention_2 needs the flash_attn package", **SHORT,
                 attn_implementation="flash_attention_2")
    assert not out.exists()
