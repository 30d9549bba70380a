"""`gpt2-owt verify` of a local release (built by `gpt2-owt card`, never uploaded) against its own records (issue 33):
a release that lost or changed a file its release_manifest.json lists, and a published fed_batches.jsonl shorter
than the run it records, fail verification (exit 1, the FAIL line naming the file); the inputs stay byte-identical.
The release, its run and data are the bad-input tables' session copies (tests/helpers/cli.py Workspace)."""

import shutil

import pytest

from helpers.cli import snapshot
from gpt2_owt.model_card.verify import main as verify_main
from gpt2_owt.training.run_dir import FED_BATCHES


def verify(ws, capsys, *extra: str) -> tuple[int, dict[str, str]]:
    """(exit code, check -> its PASS/FAIL/SKIP line) of verify over the workspace's release and run/hf."""
    argv = ["--release_dir", str(ws.get("release")), "--branches_dir", str(ws.get("run") / "hf"), *extra]
    capsys.readouterr()
    try:
        code = verify_main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr().out
    lines = {line.split(":", 1)[0].split()[-1]: line for line in out.splitlines() if line[:4] in ("PASS", "FAIL", "SKIP")}
    return code, lines


def published_log(ws, keep_bytes: int | None = None):
    """The run's fed_batches.jsonl copied into the release as `gpt2-owt upload --with_training_logs` publishes it,
    cut to its first `keep_bytes` bytes."""
    logs = ws.get("release") / "training_logs"
    logs.mkdir()
    data = (ws.get("run") / FED_BATCHES).read_bytes()
    (logs / FED_BATCHES).write_bytes(data if keep_bytes is None else data[:keep_bytes])


@pytest.mark.timeout(300)
def test_a_release_that_lost_or_changed_a_listed_file_fails(workspace, capsys):
    code, lines = verify(workspace, capsys)
    assert code == 0 and "every file release_manifest.json lists is on main" in lines["files"]
    (workspace.get("release") / "tokenizer.json").unlink()
    (workspace.get("release") / "LICENSE-NOTICE-data.md").write_text("edited by hand\n")
    before = snapshot(workspace.root)
    code, lines = verify(workspace, capsys)
    assert code == 1, lines
    assert lines["files"].startswith("FAIL") and "main has no tokenizer.json (release_manifest.json lists it)" in \
        lines["files"] and "main/LICENSE-NOTICE-data.md differs from the sha256 release_manifest.json records" in \
        lines["files"]
    assert snapshot(workspace.root) == before


@pytest.mark.timeout(300)
def test_a_published_fed_batches_log_shorter_than_the_run_fails(workspace, capsys):
    data = str(workspace.get("data"))
    published_log(workspace)
    code, lines = verify(workspace, capsys, "--data_dir", data)
    assert code == 0 and lines["data_order"].startswith("PASS  data_order: all 2 batches"), lines
    shutil.rmtree(workspace.get("release") / "training_logs")
    first_row = (workspace.get("run") / FED_BATCHES).read_bytes().index(b"\n") + 1
    published_log(workspace, keep_bytes=first_row + 20)  # one whole row and a torn one of the run's 2 updates
    before = snapshot(workspace.root)
    code, lines = verify(workspace, capsys, "--data_dir", data)
    assert code == 1, lines
    assert lines["data_order"] == ("FAIL  data_order: training_logs/fed_batches.jsonl records 1 distinct updates "
                                   "(0..0), the release trained 2 (0..1): the log is incomplete")
    assert snapshot(workspace.root) == before


@pytest.mark.timeout(300)
def test_a_release_without_its_card_fails_the_card_check(workspace, capsys):
    """README.md deleted (issue 33 sweep: a FileNotFoundError traceback): the files check names it, the card and
    data checks fail, exit 1."""
    (workspace.get("release") / "README.md").unlink()
    workspace.get("run")
    before = snapshot(workspace.root)
    code, lines = verify(workspace, capsys)
    assert code == 1, lines
    assert "main has no README.md (release_manifest.json lists it)" in lines["files"]
    assert lines["card"] == "FAIL  card: the release has no README.md (the model card)"
    assert lines["data"].startswith("FAIL")
    assert snapshot(workspace.root) == before


@pytest.mark.timeout(300)
def test_a_damaged_record_of_the_derived_list_is_named(workspace, capsys):
    """A release_manifest.json without its step/tokens (issue 33 sweep: blamed on a 'checkpoints.json derived for
    ...' the user never had): one line naming release_manifest.json, exit 2."""
    path = workspace.get("release") / "release_manifest.json"
    path.write_text('{"files": {}, "step": 2}')
    workspace.get("run")
    before = snapshot(workspace.root)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        verify_main(["--release_dir", str(workspace.get("release")), "--branches_dir", str(workspace.get("run") / "hf")])
    assert e.value.code == 2
    assert capsys.readouterr().err == (f"error: release_manifest.json on main is damaged (tokens None, expected "
                                       "int)\n")
    assert snapshot(workspace.root) == before
