"""Ctrl-C and SIGTERM in the long commands, in real processes (issue 23): one `error: interrupted by ...` line, exit
130 / 143, no partial output left, child processes ended, and what is kept said (and reusable). Also a SIGKILL,
which no handler sees: the partial it leaves is removed by the next run of the same command."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.training import REPO_ROOT, cli_env

GPT2_OWT = str(Path(sys.executable).parent / "gpt2-owt")
COPIES = 120  # the 37 sample documents repeated: ~4M tokens, several seconds of prepare and of indexing


def start(argv: list[str], tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen([GPT2_OWT, *argv], cwd=REPO_ROOT, env=cli_env(HF_DATASETS_CACHE=str(tmp_path / "cache")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the command ended before the signal: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, "timed out waiting for the command to get going"
        time.sleep(0.05)


def partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".partial-" in p.name or ".old-" in p.name
                  or p.name.startswith(".tmp-"))


def interrupted(proc: subprocess.Popen, sig: int) -> str:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 128 + sig and "Traceback" not in err, err[-3000:]
    assert lines[-1].startswith(f"error: interrupted by {signal.Signals(sig).name}; "), err[-3000:]
    assert sum(line.startswith("error: ") for line in lines) == 1, err[-3000:]
    return lines[-1]


@pytest.fixture(scope="module")
def big_corpus(original_files, tmp_path_factory) -> Path:
    docs = (original_files / "openwebtext-sample" / "owt_first37_docs.jsonl").read_text().splitlines()
    path = tmp_path_factory.mktemp("big") / "docs.jsonl"
    path.write_text("".join(line + "\n" for _ in range(COPIES) for line in docs))
    return path


def prepare_argv(source: Path, out: Path) -> list[str]:
    return ["prepare", "--dataset", "json", "--data_files", str(source), "--val_fraction", "0.01", "--num_proc", "1",
            "--output_dir", str(out), "--quiet"]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_prepare_interrupted_keeps_nothing(sig, big_corpus, tmp_path):
    out = tmp_path / "work" / "data"
    out.parent.mkdir()
    proc = start(prepare_argv(big_corpus, out), tmp_path)
    wait_for(lambda: any(p.name.startswith(".data.partial-") for p in out.parent.iterdir()), proc)
    time.sleep(1.0)  # into the tokenizing
    assert interrupted(proc, sig).endswith("; nothing kept")
    assert os.listdir(out.parent) == []


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_prepare_killed_leaves_a_partial_the_next_run_removes(big_corpus, original_files, tmp_path):
    out = tmp_path / "work" / "data"
    out.parent.mkdir()
    proc = start(prepare_argv(big_corpus, out), tmp_path)
    wait_for(lambda: any(p.name.startswith(".data.partial-") for p in out.parent.iterdir()), proc)
    proc.kill()
    proc.communicate(timeout=60)
    (stale,) = partials(out.parent)
    small = original_files / "openwebtext-sample" / "owt_first37_docs.jsonl"
    done = subprocess.run([GPT2_OWT, *prepare_argv(small, out)], cwd=REPO_ROOT, capture_output=True, text=True,
                          env=cli_env(HF_DATASETS_CACHE=str(tmp_path / "cache")), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"note: removed {out.parent / stale}, left by an interrupted run" in done.stderr
    assert os.listdir(out.parent) == ["data"]


@pytest.fixture(scope="module")
def big_data_dir(big_corpus, tmp_path_factory) -> Path:
    from gpt2_owt.training.prepare_data import run as prepare

    root = tmp_path_factory.mktemp("bigdata")
    return prepare(prepare_argv(big_corpus, root / "data")[1:] + ["--cache_dir", str(root / "cache")])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_prepare_with_datasets_worker_pool_ends_cleanly(big_corpus, tmp_path):
    """Two data files with --num_proc 2: `datasets` loads them in its own worker pool (issue 33). A plain run prints
    no worker traceback (the pool ends its workers with SIGTERM at shutdown), and a SIGTERM while that pool loads is
    the one `error: interrupted` line, exit 143, no worker left, nothing kept."""
    halves = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    lines = big_corpus.read_text().splitlines(keepends=True)
    for i, half in enumerate(halves):
        half.write_text("".join(lines[i::2]))

    def argv(out: Path) -> list[str]:
        return ["prepare", "--dataset", "json", "--data_files", *map(str, halves), "--val_fraction", "0.05",
                "--num_proc", "2", "--output_dir", str(out)]

    done = subprocess.run([GPT2_OWT, *argv(tmp_path / "ok")], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300, env=cli_env(HF_DATASETS_CACHE=str(tmp_path / "cache1")))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    out = tmp_path / "work" / "data"
    out.parent.mkdir()
    proc = start(argv(out), tmp_path)  # a fresh cache: the load runs in datasets' pool again
    wait_for(lambda: len(descendants(proc.pid)) >= 2, proc)  # datasets' workers are up: the load is under way
    workers = descendants(proc.pid)
    assert interrupted(proc, signal.SIGTERM).endswith("; nothing kept")
    assert alive(workers) == [] and os.listdir(out.parent) == []


def descendants(root: int) -> list[int]:
    """Live (not zombie) processes below `root`: the indexer and its rust steps, which run in a folder outside the
    test's (a path without spaces), so they are found by parentage, not by their command lines."""
    parent = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parent[int(pid)] = int(fields[1])
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, ppid in parent.items() if ppid in frontier]
        found += children
        frontier = children
    return found


def alive(pids: list[int]) -> list[int]:
    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
        except OSError:
            return False
    return [pid for pid in pids if running(pid)]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_trace_index_interrupted_ends_the_indexer_and_keeps_nothing(sig, big_data_dir, tmp_path):
    out = tmp_path / "index out"  # a space: the indexer's shell gets a safe path
    proc = start(["trace", "index", "--data_dir", str(big_data_dir), "--output_dir", str(out), "--num_proc", "1",
                  "--mem_gb", "1"], tmp_path)
    wait_for(lambda: len(descendants(proc.pid)) > 1, proc)  # the indexer and at least one of its steps
    children = descendants(proc.pid)
    assert interrupted(proc, sig).endswith("; nothing kept")
    deadline = time.monotonic() + 10
    while alive(children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive(children) == []
    assert not out.exists() and partials(tmp_path) == []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_eval_series_interrupted_keeps_finished_checkpoints_and_resumes(release_run, tmp_path):
    out = tmp_path / "evals"
    argv = ["eval", "--checkpoints", str(release_run / "hf"), "--output_dir", str(out), "--tasks", "lambada_openai",
            "--limit", "300", "--max_length", "64", "--batch_size", "4"]
    proc = start(argv, tmp_path)
    wait_for(lambda: (out / "step0" / "results.json").is_file(), proc, timeout=600)
    line = interrupted(proc, signal.SIGINT)
    assert line.endswith(f"; the checkpoints evaluated so far are kept in {out}: rerun the same command to continue")
    kept = json.loads((out / "step0" / "results.json").read_text())
    assert partials(out) == [] and not (out / ".writer.lock").exists() and not (out / "series.json").exists()
    done = subprocess.run([GPT2_OWT, *argv], cwd=REPO_ROOT, env=cli_env(), capture_output=True, text=True, timeout=800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "already evaluated, reused" in done.stdout and json.loads((out / "step0" / "results.json").read_text()) == kept
