"""The bad-input case table's machinery (issues 11, 17, 23), shared by every tests/test_bad_inputs*.py file:

- `Case`: one row of the table: the command (argv), how the inputs are damaged first (setup), the one `error:`
  line it must print (a fragment), the exit code, and the one-line fix that docs/troubleshooting.md shows
  (scripts/troubleshooting.py generates that page from every table).
- `check_case(case, workspace)`: runs the real command and asserts: exit code, exactly one `error:` line holding
  the message, no traceback, and every file under the workspace byte-identical afterwards (inputs unchanged,
  nothing written, no partial output left). The command runs in this process (`run_in_process`: the verb's
  `main(argv)` with stdout/stderr captured at the file descriptors and `SystemExit` turned into the exit code),
  which saves an interpreter start and the heavy imports per row; `subprocess_sample(cases)` picks one row per
  command that the tables also run as a real subprocess, proving the `python -m` entry point gives the same line.
- inputs built once per session and copied per test: a prepared data_dir, the same with a trace index, a tiny
  trained run, its eval results, its release folder and an llm.c export of its final weights. `Workspace` hands
  out fresh copies by name (`ws.get("model")`) so a case may damage them, and mounts small tmpfs folders for the
  read-only and full-disk cases where the machine allows it (root), or falls back to a chmod 555 folder.

Placeholders in argv and messages: {data} {indexed} {run} {model} {release} {results} {llmc} are fresh copies of
the session inputs, {ro} a read-only folder, {full} a full file system, {ws} the case's folder.
"""

import contextlib
import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from helpers.training import REPO_ROOT, cli_env


def _mount_tmpfs(where: Path, options: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, timeout=30)
    return done.returncode == 0


class Workspace:
    """A test's folder: copies of the session inputs on demand, plus read-only / full mounts. An in-process command's
    output is read from pytest's fd-level capture (`capfd`), asked for only then: a test of its own that captures
    with capsys can still use the folder."""

    def __init__(self, root: Path, sources: dict[str, Path], request=None):
        self.root, self.sources, self.mounts, self.request = root, sources, [], request

    @property
    def capfd(self):
        return self.request.getfixturevalue("capfd")

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


def run_command(argv: list[str], timeout: int = 300, **env) -> subprocess.CompletedProcess:
    """`argv` with `python` replaced by this interpreter, from the repository root, offline."""
    cmd = [sys.executable, *argv[1:]] if argv[0] == "python" else argv
    return subprocess.run(cmd, cwd=REPO_ROOT, env=cli_env(**env), capture_output=True, text=True, timeout=timeout)


def module_and_args(argv: list[str]) -> tuple[str, list[str]]:
    """(module, its arguments) of `python -m MODULE ARGS...` or `MODULE ARGS...` (the prepare table's form)."""
    if argv[0] == "python":
        assert argv[1] == "-m", argv
        return argv[2], argv[3:]
    return argv[0], argv[1:]


@contextlib.contextmanager
def process_state(module: str, args: list[str], env: dict[str, str]):
    """What a fresh `python -m module args` would have: its sys.argv, the repository root as working directory,
    `env` on top of the test's environment (HF_DATASETS_CACHE also where `datasets` already read it), and afterwards
    everything put back, Accelerate's per-process singletons included (a train row builds an Accelerator)."""
    saved_argv, saved_cwd, saved_env = sys.argv, os.getcwd(), dict(os.environ)
    patched = []
    if "HF_DATASETS_CACHE" in env:
        import datasets.config

        patched.append((datasets.config, "HF_DATASETS_CACHE", datasets.config.HF_DATASETS_CACHE))
        datasets.config.HF_DATASETS_CACHE = Path(env["HF_DATASETS_CACHE"])
    sys.argv = [module, *args]
    os.environ.update(env)
    os.chdir(REPO_ROOT)
    try:
        yield
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        for owner, name, value in patched:
            setattr(owner, name, value)
        if "accelerate.state" in sys.modules:
            from accelerate.state import AcceleratorState, GradientState

            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()


@dataclass
class Done:
    """What a command left: its exit code and everything it wrote to stdout and stderr (subprocess's fields)."""
    returncode: int
    stdout: str
    stderr: str


def run_in_process(argv: list[str], capfd, **env) -> Done:
    """`argv` (`python -m MODULE ARGS` or `MODULE ARGS`) as `MODULE.main(ARGS)` in this process, as the interpreter
    would run it: SystemExit's code is the exit code (None: 0, a string: printed, 1), any other exception prints its
    traceback and exits 1. Output is read at the file descriptors, so what libraries write there counts too."""
    module, args = module_and_args(argv)
    capfd.readouterr()  # drop what the test printed before
    code = 0
    with process_state(module, args, env):
        try:
            importlib.import_module(module).main(args)
        except SystemExit as e:
            if isinstance(e.code, str):
                sys.stderr.write(e.code + "\n")
            code = 1 if isinstance(e.code, str) else (e.code or 0)
        except BaseException:  # noqa: BLE001 (a crash is what the table must see, as a traceback)
            traceback.print_exc()
            code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    out, err = capfd.readouterr()
    return Done(code, out, err)


def subprocess_sample(cases: list) -> list:
    """The first row of each command in `cases`: the rows the tables also run in a real subprocess."""
    first = {}
    for case in cases:
        first.setdefault(module_and_args(case.argv)[0], case)
    return list(first.values())



# -------------------------------------------------------------------------------------------------- the table
@dataclass
class Case:
    id: str
    argv: list[str]  # the command: ["python", "-m", module, ...] (or a module first, tests/test_bad_inputs_prepare.py)
    setup: Callable | None  # damages or creates inputs first (gets the Workspace, or the prepare table's Inputs)
    message: str  # a fragment of the one `error:` line it prints
    fix: str = ""  # what the user does about it, one line (docs/troubleshooting.md)
    code: int = 2


PLACEHOLDER = re.compile(r"\{(\w+)\}")


def fill(text: str, ws: Workspace) -> str:
    return PLACEHOLDER.sub(lambda m: str(ws.root if m.group(1) == "ws" else ws.get(m.group(1))), text)


def check_case(case: Case, ws: Workspace, timeout: int = 300, in_process: bool = True) -> str:
    """Run the case's command on fresh inputs (in this process, or a real subprocess); assert one clear line and
    nothing changed. Returns the line."""
    argv = [fill(a, ws) for a in case.argv]
    if case.setup:
        case.setup(ws)
    before = snapshot(ws.root)
    done = run_in_process(argv, ws.capfd) if in_process else run_command(argv, timeout=timeout)
    err = done.stderr.strip()
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert done.returncode == case.code and len(errors) == 1, err
    record_error_line(case.id, errors[0], ws.root)
    assert fill(case.message, ws) in errors[0], err
    assert snapshot(ws.root) == before  # inputs byte-identical, nothing written or left behind
    return errors[0]



def table_tests(cases: list[Case]):
    """The two tests of a bad-input table over the `workspace` fixture: every row in process, and the first row of
    each command again as `python -m ...` in its own process (the entry point gives the same line). A table module
    binds them to its own names: `test_bad_input_is_one_clear_line, test_bad_input_in_a_real_process =
    table_tests(CASES)`."""

    @pytest.mark.timeout(400)
    @pytest.mark.parametrize("case", cases, ids=[c.id for c in cases])
    def test_bad_input_is_one_clear_line(case, workspace):
        check_case(case, workspace)

    @pytest.mark.slow  # one interpreter start and the verb's imports per row: ~8 s each
    @pytest.mark.timeout(300)
    @pytest.mark.parametrize("case", subprocess_sample(cases), ids=lambda c: c.id)
    def test_bad_input_in_a_real_process(case, workspace):
        check_case(case, workspace, in_process=False)

    return test_bad_input_is_one_clear_line, test_bad_input_in_a_real_process

# -- setups: each damages or creates something in the workspace ------------------------------------------------------
def truncate(relative: str, keep: int | None = None):
    def setup(ws):
        p = ws.path(relative)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2 if keep is None else keep])
    return setup


def overwrite(relative: str, content: bytes, offset: int | None = None):
    def setup(ws):
        p = ws.path(relative)
        if offset is None:
            p.write_bytes(content)
        else:
            data = bytearray(p.read_bytes())
            data[offset:offset + len(content)] = content
            p.write_bytes(bytes(data))
    return setup


def append(relative: str, content: bytes):
    def setup(ws):
        with open(ws.path(relative), "ab") as f:
            f.write(content)
    return setup


def edit_json(relative: str, edit: Callable | None = None, **changes):
    """Replace keys of a JSON object file, or apply `edit(data) -> new data`."""
    def setup(ws):
        p = ws.path(relative)
        data = json.loads(p.read_text())
        p.write_text(json.dumps(edit(data) if edit else {**data, **changes}))
    return setup


def remove(*relatives: str):
    def setup(ws):
        for r in relatives:
            p = ws.path(r)
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    return setup


def user_folder(relative: str):
    """A folder of the user's own files."""
    def setup(ws):
        (ws.root / relative).mkdir(parents=True)
        (ws.root / relative / "notes.txt").write_text("my notes\n")
    return setup


def user_file(relative: str, content: bytes = b"my notes\n"):
    def setup(ws):
        ws.path(relative).parent.mkdir(parents=True, exist_ok=True)
        ws.path(relative).write_bytes(content)
    return setup


def symlink(relative: str, target: str):
    def setup(ws):
        (ws.root / relative).symlink_to(fill(target, ws))
    return setup


def copy_results_into(folder: str):
    def setup(ws):
        (ws.root / folder).mkdir()
        shutil.copyfile(ws.get("results"), ws.root / folder / "results.json")
    return setup


def both(*setups):
    def setup(ws):
        for s in setups:
            s(ws)
    return setup
