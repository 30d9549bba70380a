"""Inputs for the command-line tests (tests/test_bad_inputs.py, tests/test_console_scripts.py), built once per
session and copied per test: a prepared data_dir, a tiny trained run, its eval results, its release folder and
an llm.c export of its final weights.

`Workspace` hands out fresh copies by name (`ws.get("model")`) so a test may damage them, and mounts small tmpfs
folders for the read-only and full-disk cases where the machine allows it (root), or falls back to a chmod 555
folder (read-only, non-root).
"""

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from train_support import REPO_ROOT, cli_env


@pytest.fixture(scope="session")
def cli_sources(owt_data_dir, release_run, tmp_path_factory) -> dict[str, Path]:
    """name -> a read-only original: data, run (the real tiny trainer run), model (= run/hf/final), results,
    release, llmc."""
    from gpt2_owt.model_card.build import run as build_release
    from gpt2_owt.modeling import sha256_file
    from gpt2_owt.modeling.convert import export_checkpoint
    from release_fixtures import copy_run, make_results

    root = tmp_path_factory.mktemp("cli_sources")
    run = copy_run(release_run, root / "run")
    model = run / "hf" / "final"
    results = make_results(root / "results.json", sha256_file(model / "model.safetensors"))
    release = build_release(["--run_dir", str(run), "--eval_results", str(results), "--output_dir",
                             str(root / "release")])
    llmc = export_checkpoint("llmc", model, root / "model.bin")
    return {"data": owt_data_dir, "run": run, "model": model, "results": results, "release": release, "llmc": llmc}


def _mount_tmpfs(where: Path, options: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, timeout=30)
    return done.returncode == 0


class Workspace:
    """A test's folder: copies of the session inputs on demand, plus read-only / full mounts."""

    def __init__(self, root: Path, sources: dict[str, Path]):
        self.root, self.sources, self.mounts = root, sources, []

    def get(self, name: str) -> Path:
        if name == "ro":
            return self.readonly_dir()
        if name == "full":
            return self.full_dir()
        src = self.sources[name]
        dst = self.root / (src.name if src.is_file() else name)
        if not dst.exists():
            shutil.copytree(src, dst) if src.is_dir() else shutil.copyfile(src, dst)
            if src.is_dir():  # the session originals may be read-only; copies must be writable by the test
                for p in [dst, *dst.rglob("*")]:
                    p.chmod(p.stat().st_mode | 0o200)
        return dst

    def path(self, relative: str) -> Path:
        """`self.root / relative`, copying the input it lies in first (e.g. "model/config.json")."""
        head = relative.split("/", 1)[0]
        if head in self.sources:
            self.get(head)
        return self.root / relative

    def readonly_dir(self) -> Path:
        where = self.root / "ro"
        if where.exists():
            return where
        where.mkdir()
        if _mount_tmpfs(where, "ro,size=1m"):
            self.mounts.append(where)
        elif os.geteuid() != 0:
            where.chmod(0o555)
        else:
            pytest.skip("cannot make a read-only folder: root without mount permission")
        return where

    def full_dir(self) -> Path:
        """A tmpfs that is already full (creating an empty file still works; writing a byte fails with ENOSPC)."""
        where = self.root / "full"
        if where.exists():
            return where
        where.mkdir()
        if not _mount_tmpfs(where, "size=64k"):
            pytest.skip("cannot mount a small tmpfs here (needs root); the in-process ENOSPC test covers this")
        self.mounts.append(where)
        with open(where / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
        return where

    def unmount(self) -> None:
        for where in self.mounts:
            subprocess.run(["umount", str(where)], capture_output=True, timeout=30)
        for p in [self.root / "ro"]:
            if p.exists():
                p.chmod(0o755)


@pytest.fixture
def workspace(tmp_path, cli_sources):
    ws = Workspace(tmp_path, cli_sources)
    yield ws
    ws.unmount()


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file (and "<dir>" for every folder) under `root`."""
    found = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        found[rel] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def record_error_line(case_id: str, line: str, root: Path) -> None:
    """With GPT2_OWT_ERROR_TABLE=FILE, append the line a bad-input case printed (its temp root shown as TMP): how the
    README's Troubleshooting and the issue notes get the exact messages."""
    table = os.environ.get("GPT2_OWT_ERROR_TABLE")
    if table:
        with open(table, "a") as f:
            f.write(f"{case_id}\t{line.replace(str(root), 'TMP')}\n")


def run_command(argv: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """`argv` with `python` replaced by this interpreter, from the repository root, offline."""
    cmd = [sys.executable, *argv[1:]] if argv[0] == "python" else argv
    return subprocess.run(cmd, cwd=REPO_ROOT, env=cli_env(), capture_output=True, text=True, timeout=timeout)

