"""Bad inputs to the prepare stage (`training.prepare_data`, `training.manifest verify`), through the real CLI.

Every case runs `<argv>` (a module and its arguments) as the module's `main(argv)` in this process
(tests/helpers/cli.py `run_in_process`; the first case also as `python -m <argv>` in a real subprocess) and must
end with exactly one `error: ...` line on stderr (no traceback) holding `message`, exit code `code`, and the folder the case works in unchanged: every input file
byte-identical, nothing created (no partial or half-written output), nothing deleted. `argv` and the setup work
in `{tmp}` (a fresh folder per case); `{data}` is a copy of the prepared 37-document sample made by setup.
The case list below is the table; tests/test_bad_inputs.py holds the other commands' cases in the same shape.
"""

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from helpers.cli import Case, record_error_line, run_in_process, subprocess_sample  # the one case table
from gpt2_owt.training.data_dir import MANIFEST

SAMPLE = "{tmp}/in/docs.jsonl"
PREPARE = ["gpt2_owt.training.prepare_data", "--dataset", "json", "--val_fraction", "0.1", "--num_proc", "1"]
VERIFY = ["gpt2_owt.training.manifest", "verify", "--data_dir", "{tmp}/data"]


@dataclass
class Inputs:
    tmp: Path  # the case's folder (snapshotted after setup)
    sample_jsonl: Path  # the 37 OpenWebText documents
    data_dir: Path  # prepared from them (read-only: copy it)

    def copy_sample(self, to: str = "in/docs.jsonl") -> Path:
        path = self.tmp / to
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.sample_jsonl, path)
        return path

    def copy_data_dir(self, to: str = "data") -> Path:
        shutil.copytree(self.data_dir, self.tmp / to)
        return self.tmp / to

    def edit_manifest(self, edit: Callable[[dict], object]) -> None:
        data = self.copy_data_dir()
        manifest = json.loads((data / MANIFEST).read_text())
        replaced = edit(manifest)
        (data / MANIFEST).write_text(json.dumps(manifest if replaced is None else replaced, indent=2))


def mount_tmpfs(path: Path, options: str) -> None:
    """Mount a tmpfs at `path` (root only); skip the case where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                          timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")


def read_only_location(inputs: Inputs) -> None:
    inputs.copy_sample()
    if os.geteuid() == 0:  # root writes through permission bits: only a read-only mount refuses it
        mount_tmpfs(inputs.tmp / "ro", "ro,size=1m")
    else:
        (inputs.tmp / "ro").mkdir()
        (inputs.tmp / "ro").chmod(0o555)


def small_disk(inputs: Inputs) -> None:
    """A 96 KiB disk: the sample's token temp file (73 KB) fits, the train split beside it (66 KB) does not."""
    inputs.copy_sample()
    mount_tmpfs(inputs.tmp / "small", "size=96k")


def not_utf8(inputs: Inputs, name: str = "in/docs.jsonl") -> None:
    path = inputs.tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes('{"text": "café"}\n{"text": "ok"}\n'.encode("latin-1"))  # é is byte 0xe9: not UTF-8


def user_files_in(inputs: Inputs) -> None:
    inputs.copy_sample()
    (inputs.tmp / "out").mkdir()
    (inputs.tmp / "out" / "notes.txt").write_text("my notes\n")


def data_dir_with_user_file(inputs: Inputs) -> None:
    inputs.copy_sample()
    inputs.copy_data_dir("out")
    (inputs.tmp / "out" / "notes.txt").write_text("my notes\n")


def source_inside_output(inputs: Inputs) -> None:
    inputs.copy_data_dir("out")
    inputs.copy_sample("out/corpus/docs.jsonl")


def set_field(path: str, value):
    """An edit of the manifest: the field at "a.b.c" set to `value`."""
    def edit(manifest: dict) -> None:
        *parents, leaf = path.split(".")
        node = manifest
        for key in parents:
            node = node[key]
        node[leaf] = value
    return edit


CASES = [
    Case("prepare: jsonl not UTF-8", [*PREPARE, "--data_files", SAMPLE, "--output_dir", "{tmp}/out"],
         not_utf8, "is not UTF-8 text",
         fix="convert the file to UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"),
    Case("prepare: jsonl not UTF-8, streaming", [*PREPARE, "--streaming", "--data_files", SAMPLE,
                                                  "--output_dir", "{tmp}/out"], not_utf8, "is not UTF-8 text",
         fix="convert the file to UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"),
    Case("prepare: text file not UTF-8", [*PREPARE[:2], "text", *PREPARE[3:], "--data_files", "{tmp}/in/docs.txt",
                                           "--output_dir", "{tmp}/out"],
         lambda i: not_utf8(i, "in/docs.txt"), "is not UTF-8 text",
         fix="convert the file to UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"),
    Case("prepare: output_dir under a regular file", [*PREPARE, "--data_files", SAMPLE,
                                                       "--output_dir", "{tmp}/in/docs.jsonl/out"],
         Inputs.copy_sample, "docs.jsonl is a file, not a folder",
         fix="give an --output_dir whose parents are folders"),
    Case("prepare: output_dir is a regular file", [*PREPARE, "--data_files", SAMPLE, "--output_dir", SAMPLE],
         Inputs.copy_sample, "exists and is not a folder",
         fix="--output_dir is a folder: give a new folder's path"),
    Case("prepare: read-only output location", [*PREPARE, "--data_files", SAMPLE, "--output_dir", "{tmp}/ro/out"],
         read_only_location, "--output_dir {tmp}/ro/out cannot be written: {tmp}/ro is not writable",
         fix="write --output_dir to a folder you can write to"),
    Case("prepare: full disk", [*PREPARE, "--data_files", SAMPLE, "--output_dir", "{tmp}/small/out"],
         small_disk, "no space left on the device of {tmp}/small",
         fix="free space (OpenWebText needs about 18 GB, docs/data.md) or write elsewhere"),
    Case("prepare: folder of user files, no overwrite", [*PREPARE, "--data_files", SAMPLE,
                                                           "--output_dir", "{tmp}/out"],
         user_files_in, "--output_dir {tmp}/out holds files but no manifest.json (1 file, 9 bytes: notes.txt): "
                        "not a data_dir made by prepare_data",
         fix="give a new or empty --output_dir"),
    Case("prepare: --overwrite a folder of user files", [*PREPARE, "--data_files", SAMPLE, "--overwrite",
                                                          "--output_dir", "{tmp}/out"],
         user_files_in, "--overwrite refuses to replace --output_dir {tmp}/out: it holds no manifest.json, so "
                        "prepare_data did not make it, and 1 file, 9 bytes: notes.txt would be lost",
         fix="give a new --output_dir; --overwrite replaces only a data_dir"),
    Case("prepare: --overwrite a data_dir holding a user file", [*PREPARE, "--data_files", SAMPLE, "--seed", "1",
                                                                  "--overwrite", "--output_dir", "{tmp}/out"],
         data_dir_with_user_file, "files prepare_data did not make, and 1 file, 9 bytes: notes.txt would be lost",
         fix="move your file out of the data_dir first"),
    Case("prepare: --overwrite a folder holding the source", [*PREPARE, "--data_files", "{tmp}/out/corpus/docs.jsonl",
                                                               "--seed", "1", "--overwrite",
                                                               "--output_dir", "{tmp}/out"],
         source_inside_output, "contains the source data {tmp}/out/corpus/docs.jsonl: replacing the folder would "
                               "delete it",
         fix="give an --output_dir that does not hold the source data"),
    Case("prepare: output_dir inside the source folder", ["gpt2_owt.training.prepare_data", "--dataset", "{tmp}/in",
                                                           "--output_dir", "{tmp}/in/prepared"],
         Inputs.copy_sample, "lies inside the source data {tmp}/in",
         fix="write --output_dir outside the source folder"),
    Case("prepare: negative seed", [*PREPARE, "--data_files", SAMPLE, "--seed", "-1", "--output_dir", "{tmp}/out"],
         Inputs.copy_sample, "--seed must be >= 0, got -1",
         fix="pass a seed of 0 or more (the split's generator takes no negative seed)"),
    Case("prepare: val_fraction out of range", [*PREPARE, "--data_files", SAMPLE, "--val_fraction", "2",
                                                 "--output_dir", "{tmp}/out"],
         Inputs.copy_sample, "--val_fraction must be in (0, 1), got 2.0",
         fix="pass a fraction between 0 and 1, e.g. --val_fraction 0.0005"),
    Case("verify: manifest is a JSON list", VERIFY, lambda i: i.edit_manifest(lambda m: [m]),
         "holds a JSON list, not a manifest object",
         fix="prepare the data again: manifest.json is written by `gpt2-owt prepare`"),
    Case("verify: manifest not JSON", VERIFY,
         lambda i: (i.copy_data_dir(), (i.tmp / "data" / MANIFEST).write_text("{not json")), "is not valid JSON",
         fix="prepare the data again: manifest.json is written by `gpt2-owt prepare`"),
    Case("verify: manifest without tokenizer record", VERIFY, lambda i: i.edit_manifest(
             lambda m: {k: v for k, v in m.items() if k != "tokenizer"}),
         "is not a data_dir manifest: field 'tokenizer' missing or malformed",
         fix="prepare the data again: manifest.json is written by `gpt2-owt prepare`"),
    Case("verify: edited seed", VERIFY, lambda i: i.edit_manifest(set_field("split.seed", 1)),
         "train.rows.npy does not hold the rows that val_fraction 0.1 and seed 1 give for 37 documents",
         fix="restore the manifest or prepare the data again with the seed you want (--seed)"),
    Case("verify: edited val_fraction", VERIFY, lambda i: i.edit_manifest(set_field("split.test_size", 0.2)),
         "train.rows.npy does not hold the rows that val_fraction 0.2 and seed 2357 give for 37 documents",
         fix="restore the manifest or prepare the data again with --val_fraction"),
    Case("verify: edited vocab_size", VERIFY, lambda i: i.edit_manifest(set_field("tokenizer.vocab_size", 50304)),
         "says tokenizer vocab_size 50304, but the files hold 50257",
         fix="restore the manifest or prepare the data again"),
    Case("verify: edited dtype", VERIFY, lambda i: i.edit_manifest(set_field("tokenizer.dtype", "uint32")),
         "says tokenizer dtype 'uint32', but the files hold 'uint16'",
         fix="restore the manifest or prepare the data again"),
    Case("verify: edited source document count", VERIFY,
         lambda i: i.edit_manifest(set_field("source.documents", 40)),
         "says source documents 40, but the splits hold 37",
         fix="restore the manifest or prepare the data again"),
    Case("verify: edited split method", VERIFY, lambda i: i.edit_manifest(set_field("split.shuffle", False)),
         "not prepare_data's datasets.Dataset.train_test_split(shuffle=True)",
         fix="restore the manifest or prepare the data again"),
]


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under `root` -> sha256 of its bytes ("dir" for folders)."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def unmount_all(root: Path) -> None:
    for mount in (root / "ro", root / "small"):
        if os.path.ismount(mount):
            subprocess.run(["umount", str(mount)], timeout=30, check=True)


def run_cli(argv: list[str], cache: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def inputs(tmp_path, owt_data_dir, original_files) -> Inputs:
    (tmp_path / "case").mkdir()
    yield Inputs(tmp_path / "case", original_files / "openwebtext-sample" / "owt_first37_docs.jsonl", owt_data_dir)
    unmount_all(tmp_path / "case")


def check_prepare_case(case: Case, inputs: Inputs, cache: Path, capfd=None) -> None:
    """The case in this process (`capfd` given) or in a real subprocess: one line, its code, nothing changed."""
    if case.setup is not None:
        case.setup(inputs)
    before = snapshot(inputs.tmp)
    argv = [a.format(tmp=inputs.tmp) for a in case.argv]
    done = (run_cli(argv, cache=cache) if capfd is None
            else run_in_process(argv, capfd, HF_DATASETS_CACHE=str(cache), HF_HUB_OFFLINE="1"))
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == case.code, done.stderr
    if errors:
        record_error_line(case.id, errors[0], inputs.tmp)
    assert len(errors) == 1 and case.message.format(tmp=inputs.tmp) in errors[0], done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip().splitlines()[-1] == errors[0]
    assert snapshot(inputs.tmp) == before  # inputs byte-identical, no partial output, nothing deleted


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, inputs: Inputs, tmp_path, capfd):
    check_prepare_case(case, inputs, tmp_path / "hf_cache", capfd)


@pytest.mark.slow  # one interpreter start and the verb's imports per row: ~8 s each
@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", subprocess_sample(CASES), ids=lambda c: c.id)
def test_bad_input_in_a_real_process(case: Case, inputs: Inputs, tmp_path):
    """One row per command again as `python -m ...` in its own process: the entry point gives the same line."""
    check_prepare_case(case, inputs, tmp_path / "hf_cache")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_full_disk_then_rerun_with_space_completes(inputs: Inputs, tmp_path):
    """ENOSPC on a real small tmpfs: one line, nothing under the final name; the same command completes once the
    device is large enough, and the result verifies."""
    small_disk(inputs)
    argv = [a.format(tmp=inputs.tmp) for a in [*PREPARE, "--data_files", SAMPLE, "--output_dir", "{tmp}/small/out"]]
    full = run_cli(argv, cache=tmp_path / "hf_cache")
    assert full.returncode == 2 and "no space left on the device" in full.stderr
    assert os.listdir(inputs.tmp / "small") == []
    subprocess.run(["mount", "-o", "remount,size=1m", str(inputs.tmp / "small")], timeout=30, check=True)
    done = run_cli(argv, cache=tmp_path / "hf_cache")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {inputs.tmp}/small/out (train: 33 docs / 33,236 tokens, val: 4 docs")
    assert sorted(os.listdir(inputs.tmp / "small")) == ["out"]
    verified = run_cli(["gpt2_owt.training.manifest", "verify", "--data_dir", str(inputs.tmp / "small" / "out")],
                       cache=tmp_path / "hf_cache")
    assert verified.returncode == 0, verified.stderr


@pytest.mark.timeout(120)
def test_simulated_enospc_at_the_write_leaves_nothing(sample_jsonl_copy, tmp_path, monkeypatch, capsys):
    """Where no tmpfs can be mounted: ENOSPC raised by the write itself gives the same line and cleanup."""
    from gpt2_owt.training import prepare_data
    from gpt2_owt.training.prepare import output

    real_gather = output.gather_split

    def disk_fills_up(split, *args, **kwargs):
        if split == "val":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_gather(split, *args, **kwargs)

    monkeypatch.setattr(prepare_data, "gather_split", disk_fills_up)
    argv = ["--dataset", "json", "--data_files", str(sample_jsonl_copy), "--val_fraction", "0.1", "--num_proc", "1",
            "--output_dir", str(tmp_path / "out" / "data"), "--cache_dir", str(tmp_path / "cache")]
    with pytest.raises(SystemExit) as exit_info:
        prepare_data.main(argv)
    assert exit_info.value.code == 2
    assert f"error: no space left on the device of {tmp_path / 'out'}" in capsys.readouterr().err
    assert os.listdir(tmp_path / "out") == []
    monkeypatch.setattr(prepare_data, "gather_split", real_gather)
    assert prepare_data.run(argv) == tmp_path / "out" / "data"


@pytest.fixture
def sample_jsonl_copy(original_files, tmp_path) -> Path:
    path = tmp_path / "docs.jsonl"
    shutil.copy(original_files / "openwebtext-sample" / "owt_first37_docs.jsonl", path)
    return path
