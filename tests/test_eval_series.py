"""`gpt2-owt eval --checkpoints RUN/hf` / `--repo_id ID --revisions ...`: a tiny trainer run's exports
evaluated as a series equal each folder evaluated alone; resume skips finished rows and recomputes changed weights;
the Hub path against the local server (tests/helpers/hub_server.py); bad inputs fail before anything is written."""

import json
import shutil
from pathlib import Path

import pytest

from gpt2_owt.eval.evaluate import main
from helpers.hub_server import PUBLISH_STEPS, alice_hub, run_with_hub

FAST = ["--tasks", "wikitext,lambada_openai,owt_val", "--max_length", "32", "--limit", "2", "--batch_size", "3",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def run_hf(owt_data_dir, tmp_path_factory):
    """hf/ of a real 2-step trainer run: step0, step1 and final, three different weights."""
    from helpers.training import run_inprocess

    run = tmp_path_factory.mktemp("series") / "run"
    assert run_inprocess(owt_data_dir, run, max_steps=2, warmup_steps=1, export_steps=[0, 1], seq_len=32,
                         micro_batch_size=4, global_batch_size=4, eval_interval=2, eval_iters=1,
                         checkpoint_interval=2) in (0, None)
    return run / "hf"


def fast(owt_data_dir) -> list[str]:
    return [*FAST, "--data_dir", str(owt_data_dir)]


def evaluate_alone(folder: Path, owt_data_dir, out: Path) -> dict:
    main(["--model", str(folder), "--output", str(out), *fast(owt_data_dir)])
    return json.loads(out.read_text())


def read_series(out: Path) -> list[dict]:
    return json.loads((out / "series.json").read_text())


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_series_rows_equal_each_checkpoint_evaluated_alone(run_hf, owt_data_dir, tmp_path):
    out = tmp_path / "series"
    main(["--checkpoints", str(run_hf), "--output_dir", str(out), *fast(owt_data_dir)])
    rows = read_series(out)
    assert [r["checkpoint"] for r in rows] == ["step0", "step1", "final"]
    assert [r["step"] for r in rows] == [0, 1, 2] and [r["tokens"] for r in rows] == [0, 128, 256]
    assert (out / "series.png").stat().st_size > 0
    for row in rows:
        folder = run_hf / row["checkpoint"]
        alone = evaluate_alone(folder, owt_data_dir, tmp_path / f"{row['checkpoint']}.json")
        stored = json.loads((out / row["results"]).read_text())
        assert stored["model"]["weights_sha256"] == alone["model"]["weights_sha256"] == row["weights_sha256"]
        assert row["metrics"] == {task: block["metrics"] for task, block in alone["tasks"].items()}
        assert stored["tasks"].keys() == alone["tasks"].keys() == {"wikitext", "lambada_openai", "owt_val"}
        assert row["counts"]["owt_val"]["tokens"] == alone["tasks"]["owt_val"]["counts"]["tokens"] > 0
    assert len({json.dumps(r["metrics"]) for r in rows}) == 3  # three different models, three different rows


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_resume_skips_finished_rows_and_recomputes_changed_weights(run_hf, owt_data_dir, tmp_path):
    hf = shutil.copytree(run_hf, tmp_path / "hf")
    out = tmp_path / "series"
    argv = ["--checkpoints", str(hf), "--output_dir", str(out), *fast(owt_data_dir)]
    main(argv)
    first = {r["checkpoint"]: r for r in read_series(out)}
    stamps = {name: json.loads((out / name / "results.json").read_text())["created_at"] for name in first}
    mtimes = {name: (out / name / "results.json").stat().st_mtime_ns for name in first}

    main(argv)  # nothing changed: every row read back, no results.json rewritten
    assert {r["checkpoint"]: r for r in read_series(out)} == first
    assert {name: (out / name / "results.json").stat().st_mtime_ns for name in first} == mtimes

    shutil.copy(hf / "step0" / "model.safetensors", hf / "step1" / "model.safetensors")  # step1 now = step0
    main(argv)
    rows = {r["checkpoint"]: r for r in read_series(out)}
    assert rows["step1"]["weights_sha256"] == first["step0"]["weights_sha256"]
    assert rows["step1"]["metrics"] == first["step0"]["metrics"] != first["step1"]["metrics"]
    assert (out / "step1" / "results.json").stat().st_mtime_ns != mtimes["step1"]
    for name in ("step0", "final"):
        assert (out / name / "results.json").stat().st_mtime_ns == mtimes[name] and rows[name] == first[name]
        assert json.loads((out / name / "results.json").read_text())["created_at"] == stamps[name]

    main([*argv, "--limit", "1"])  # other arguments (the last --limit wins): every row recomputed
    assert all((out / n / "results.json").stat().st_mtime_ns != mtimes[n] for n in ("step0", "final"))


def _error_of(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


@pytest.mark.timeout(300)
def test_bad_series_inputs_fail_before_anything_is_written(run_hf, owt_data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    empty = tmp_path / "empty_hf"
    empty.mkdir()
    assert "no checkpoints" in _error_of(capsys, ["--checkpoints", str(empty), "--output_dir", str(out)])
    assert "does not exist" in _error_of(capsys, ["--checkpoints", str(tmp_path / "nope"), "--output_dir", str(out)])
    hf = shutil.copytree(run_hf, tmp_path / "hf")
    (hf / "step1" / "model.safetensors").unlink()
    assert "step1" in _error_of(capsys, ["--checkpoints", str(hf), "--output_dir", str(out), *fast(owt_data_dir)])
    assert "--output_dir" in _error_of(capsys, ["--checkpoints", str(run_hf)])
    assert "exactly one" in _error_of(capsys, ["--checkpoints", str(run_hf), "--model", str(run_hf / "final"),
                                               "--output_dir", str(out)])
    assert "unknown task" in _error_of(capsys, ["--checkpoints", str(run_hf), "--output_dir", str(out),
                                                "--tasks", "hellaswag"])
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ Hub revisions

@pytest.fixture
def hub(tmp_path):
    with alice_hub(tmp_path / "hf_home") as server:
        yield server


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_series_over_hub_revisions_equals_the_local_series(run_hf, owt_data_dir, hub, tmp_path):
    publish = run_with_hub(hub.env, "-c", PUBLISH_STEPS, "alice/tiny-series", str(run_hf), "0,1")
    assert publish.returncode == 0, publish.stderr
    local = tmp_path / "local"
    main(["--checkpoints", str(run_hf), "--output_dir", str(local), *fast(owt_data_dir)])
    by_sha = {r["weights_sha256"]: r for r in read_series(local)}

    out = tmp_path / "hub"
    proc = run_with_hub(hub.env, "-m", "gpt2_owt.eval.evaluate", "--repo_id", "alice/tiny-series", "--revisions", "all",
                   "--output_dir", str(out), *fast(owt_data_dir))
    assert proc.returncode == 0, proc.stderr
    rows = read_series(out)
    assert [(r["checkpoint"], r["revision"], r["step"], r["tokens"]) for r in rows] == [
        ("step0", "step0", 0, 0), ("step1", "step1", 1, 128), ("main", "main", 2, 256)]
    for row in rows:
        assert row["metrics"] == by_sha[row["weights_sha256"]]["metrics"]
        stored = json.loads((out / row["results"]).read_text())
        assert stored["model"]["name_or_path"] == "alice/tiny-series" and stored["model"]["revision"] == row["revision"]

    picked = tmp_path / "picked"
    proc = run_with_hub(hub.env, "-m", "gpt2_owt.eval.evaluate", "--repo_id", "alice/tiny-series", "--revisions", "step1",
                   "--output_dir", str(picked), *fast(owt_data_dir))
    assert proc.returncode == 0, proc.stderr
    assert [r["checkpoint"] for r in read_series(picked)] == ["step1"]

    bad = tmp_path / "bad"
    proc = run_with_hub(hub.env, "-m", "gpt2_owt.eval.evaluate", "--repo_id", "alice/tiny-series", "--revisions", "step1,step7",
                   "--output_dir", str(bad), *fast(owt_data_dir))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: unknown revision(s) step7")
    assert "step0, step1" in proc.stderr and not bad.exists()
    proc = run_with_hub(hub.env, "-m", "gpt2_owt.eval.evaluate", "--repo_id", "alice/no-such-repo", "--output_dir", str(bad))
    assert proc.returncode == 2 and "not found" in proc.stderr and not bad.exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_card_gets_the_series_table_and_plot_and_keeps_the_final_model_index(run_hf, owt_data_dir, tmp_path):
    from gpt2_owt.model_card.build import main as build_main

    out = tmp_path / "series"
    main(["--checkpoints", str(run_hf), "--output_dir", str(out), *fast(owt_data_dir)])
    rows = read_series(out)
    release = tmp_path / "release"
    build_main(["--run_dir", str(run_hf.parent), "--eval_results", str(out / "final" / "results.json"),
                "--eval_series", str(out / "series.json"), "--output_dir", str(release), "--repo_id", "alice/tiny"])
    card = (release / "README.md").read_text()
    assert "### Evaluation over training" in card and "![eval_series.png](eval_series.png)" in card
    assert (release / "eval_series.png").stat().st_size > 0
    assert json.loads((release / "eval_series.json").read_text()) == rows
    for row in rows:
        wiki = row["metrics"]["wikitext"]["word_perplexity"]
        assert f"| `{row['checkpoint']}` | {row['step']} | {row['tokens']:,} | {wiki:.4f} |" in card
    owt_tokens = rows[-1]["counts"]["owt_val"]["tokens"]
    assert f"over {owt_tokens:,} tokens of the run's data_dir val split" in card
    final = json.loads((out / "final" / "results.json").read_text())["tasks"]["lambada_openai"]["metrics"]["acc"]
    model_index = card.split("---")[1]
    assert f"{final}" in model_index or f"{round(final, 4)}" in model_index
    with pytest.raises(SystemExit):
        build_main(["--run_dir", str(run_hf.parent), "--eval_series", str(out / "final" / "results.json"),
                    "--output_dir", str(tmp_path / "bad_release")])
    assert not (tmp_path / "bad_release").exists()
