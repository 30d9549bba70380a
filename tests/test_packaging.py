"""The wheel ships every module and data file of the shipped folders, found by discovery (setup.py), not a list: a new
module, subpackage or data folder inside a room cannot silently stay behind."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers.training import REPO_ROOT


def tracked_files() -> list[str]:
    """The repository's files as git knows them (committed or added), without what a checkout leaves around."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO_ROOT, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    return [f for f in listed if (REPO_ROOT / f).is_file()]


def shipped(files: list[str]) -> list[str]:
    """What must be in the wheel: every file under a room (a top-level folder with an __init__.py) and the top-level
    verbs (the root's .py files but setup.py)."""
    rooms = {p.name for p in REPO_ROOT.iterdir() if (p / "__init__.py").is_file()}
    return sorted(f for f in files if f.split("/")[0] in rooms or ("/" not in f and f.endswith(".py") and
                                                                   f != "setup.py"))


@pytest.mark.timeout(600)
def test_wheel_ships_every_module_and_data_file(tmp_path):
    files = tracked_files()
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes((REPO_ROOT / name).read_bytes())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "wheel"), str(source)], check=True, timeout=500)
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    inside = {n for n in zipfile.ZipFile(wheel).namelist() if not n.split("/")[0].endswith(".dist-info")}
    expected = {f"gpt2_owt/{f}" for f in shipped(files)}
    assert {"gpt2_owt/cli.py", "gpt2_owt/core/args.py", "gpt2_owt/modeling/tokenizer/vocab.json",
            "gpt2_owt/tracing/space/app.py", "gpt2_owt/model_card/template.md.jinja"} <= expected
    assert sorted(expected - inside) == []  # nothing left behind
    assert sorted(inside - expected) == []  # and nothing but the shipped folders (no tests, docs, setup.py)
