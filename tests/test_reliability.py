"""The shared reliability mechanisms of issue 23, each against an independent oracle: the output guard and atomic
writes (core/output_paths.py), the one reader (core/readers.py), numbers validated where parsed
(core/hf_argparser.py, training/config.py), signals (core/interrupts.py through cli_main, in real processes)
and Hub failures (core/hub.py). The commands' own cases are the tables in tests/test_bad_inputs*.py."""

import json
import math
import os
import re
import signal
import struct
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gpt2_owt.core.errors import UserError
from gpt2_owt.core.output_paths import PARTIAL, atomic_output, guard_output, sweep_stale_partials
from gpt2_owt.core.readers import (DamagedFile, check_config_matches_weights, read_json, read_jsonl,
                                   safetensors_header)

REPO_ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------- output guard
def test_guard_refuses_overlap_foreign_content_links_and_files(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "mine")
    (tmp_path / "file.txt").write_text("x")
    inputs = {"data_dir": data}
    refusals = {
        data: "is the data_dir", data / "sub": "is inside the data_dir", tmp_path: "contains the data_dir",
        tmp_path / "mine": "was not made by idx (no idx.json); writing there would replace what it holds (notes.txt)",
        tmp_path / "link": "is a symbolic link", tmp_path / "file.txt": "is an existing file, not a folder",
        tmp_path / "file.txt" / "out": "is a file, not a folder",
    }
    for path, message in refusals.items():
        with pytest.raises(UserError, match="^--out ") as e:
            guard_output(path, "--out", folder=True, inputs=inputs, made_by="idx", ours="idx.json")
        assert message in str(e.value), (path, str(e.value))
    (tmp_path / "mine" / "idx.json").write_text("{}")
    assert guard_output(tmp_path / "mine", "--out", folder=True, inputs=inputs, ours="idx.json") == tmp_path / "mine"
    with pytest.raises(UserError, match="pass --overwrite"):
        guard_output(tmp_path / "mine", "--out", folder=True, ours="idx.json", replace=False)
    assert guard_output(tmp_path / "new" / "deeper", "--out", folder=True) == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_guard_of_a_file_output(tmp_path):
    (tmp_path / "photo.png").write_bytes(b"\x89PNG mine")
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="exists and is not a file written by curve"):
        guard_output(tmp_path / "photo.png", "--output", folder=False, made_by="curve")
    with pytest.raises(UserError, match="is an existing folder; give a file path"):
        guard_output(tmp_path / "folder", "--output", folder=False)
    ours = lambda p: p.read_bytes().startswith(b"\x89PNG")  # noqa: E731
    assert guard_output(tmp_path / "photo.png", "--output", folder=False, ours=ours) == tmp_path / "photo.png"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_guard_finds_an_unwritable_location_first(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(UserError, match="cannot be written: .* is not writable"):
        guard_output(tmp_path / "ro" / "out", "--out", folder=True)


def test_atomic_output_installs_whole_or_nothing(tmp_path):
    out = tmp_path / "out"
    with atomic_output(out, folder=True) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(f".out{PARTIAL}")
        (tmp / "a").write_text("1")
    assert sorted(os.listdir(tmp_path)) == ["out"] and (out / "a").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_output(out, folder=True) as tmp:
        (tmp / "b").write_text("2")
        raise RuntimeError("mid-way")
    assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(out) == ["a"]  # the old output untouched
    with atomic_output(out, folder=True) as tmp:
        (tmp / "c").write_text("3")
    assert os.listdir(out) == ["c"] and sorted(os.listdir(tmp_path)) == ["out"]  # replaced, no .old- left
    with pytest.raises(KeyboardInterrupt), atomic_output(tmp_path / "f.txt") as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_full_disk_names_the_destination(tmp_path):
    import errno

    with pytest.raises(UserError, match=f"^cannot write {tmp_path / 'r.json'}: No space left on device$"):
        with atomic_output(tmp_path / "r.json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "input.bin"))
    assert os.listdir(tmp_path) == []


def test_stale_partials_are_swept_but_a_living_writers_is_not(tmp_path):
    """A partial left by a SIGKILLed writer goes; one held by a running writer stays (a real second process)."""
    out = tmp_path / "out"
    code = textwrap.dedent(f"""
        import sys, time
        from gpt2_owt.core.output_paths import atomic_output
        with atomic_output({str(out)!r}, folder=True) as tmp:
            print(tmp, flush=True)
            time.sleep(float(sys.argv[1]))
    """)
    killed = subprocess.Popen([sys.executable, "-c", code, "60"], stdout=subprocess.PIPE, text=True)
    stale = Path(killed.stdout.readline().strip())
    killed.kill()
    killed.wait(timeout=30)
    assert stale.is_dir()
    living = subprocess.Popen([sys.executable, "-c", code, "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        held = Path(living.stdout.readline().strip())
        assert not stale.exists() and held.is_dir()  # the next writer of the same output removed the stale one
        assert sweep_stale_partials(out) == [] and held.is_dir()  # and nobody removes a living writer's
    finally:
        living.kill()
        _, err = living.communicate(timeout=30)
    assert f"note: removed {stale}, left by an interrupted run" in err


# ------------------------------------------------------------------------------------------------- readers
def test_read_json_one_line_per_damage(tmp_path):
    p = tmp_path / "info.json"
    with pytest.raises(UserError, match=f"^run info {p} not found$"):
        read_json(p, "run info")
    p.write_text('{"a": ')
    with pytest.raises(DamagedFile, match=r"^run info .* is damaged \(not valid JSON: "):
        read_json(p, "run info")
    p.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"is damaged \(a list, expected an object\)"):  # DamagedFile is a ValueError
        read_json(p, "run info")
    assert read_json(p, "list", expect=list) == [1, 2]


def test_read_jsonl_drops_only_a_torn_last_line(tmp_path, capsys):
    p = tmp_path / "metrics.jsonl"
    rows = [{"step": i} for i in range(3)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "tr')
    assert read_jsonl(p, "metrics") == rows
    assert "dropped its torn last line 4" in capsys.readouterr().err
    p.write_text('{"step": 0}\n{"ste\n{"step": 2}\n')
    with pytest.raises(DamagedFile, match="is damaged at line 2"):
        read_jsonl(p, "metrics")
    assert read_jsonl(tmp_path / "absent.jsonl") == []


def _safetensors(path: Path, tensors: dict[str, list[int]], cut: int = 0) -> Path:
    """A float32 safetensors file with zero tensors of the given shapes (written by hand: the format's spec)."""
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 4 * math.prod(shape)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    data = struct.pack("<Q", len(text)) + text + bytes(offset)
    path.write_bytes(data[: len(data) - cut])
    return path


def test_safetensors_header_and_config_against_weights(tmp_path):
    shapes = {"transformer.wte.weight": [10, 4], "transformer.wpe.weight": [8, 4], "transformer.h.0.ln_1.weight": [4],
              "transformer.h.1.ln_1.weight": [4]}
    weights = _safetensors(tmp_path / "model.safetensors", shapes)
    header, start = safetensors_header(weights)
    assert set(header) == set(shapes) and start == 8 + len(json.dumps(header))
    config = {"vocab_size": 10, "n_embd": 4, "n_positions": 8, "n_layer": 2}
    check_config_matches_weights(config, tmp_path / "config.json", weights)
    for key, wrong, shown in (("n_positions", 16, "wpe.weight [8, 4]"), ("n_embd", 8, "wte.weight [10, 4]"),
                              ("n_layer", 3, "2 blocks h.0..h.1")):
        with pytest.raises(UserError, match=re.escape(f"does not match the weights {weights}: {key} is {wrong} in "
                                                      "the config, ") + r"\d+ in the weights " + re.escape(f"({shown})")):
            check_config_matches_weights({**config, key: wrong}, tmp_path / "config.json", weights)
    _safetensors(weights, shapes, cut=4)
    with pytest.raises(DamagedFile, match="are damaged or truncated .*ends at byte"):
        safetensors_header(weights)
    weights.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(DamagedFile, match="header of 1,099,511,627,776 bytes announced"):
        safetensors_header(weights)


# ------------------------------------------------------------------------------------------------- numbers
@dataclass
class _Args:
    name: str = field(metadata={"help": "required text"})
    rate: float = field(default=0.1, metadata={"help": "a rate", "gt": 0})
    cost: float | None = field(default=None, metadata={"help": "a cost", "ge": 0})


@pytest.mark.parametrize("argv, message", [
    (["--rate", "nan"], "--rate must be a finite number, got nan"),
    (["--rate", "inf"], "--rate must be a finite number, got inf"),
    (["--rate", "0"], "--rate must be > 0, got 0.0"),
    (["--cost", "-5"], "--cost must be >= 0, got -5.0"),
    (["--cost=-inf"], "--cost must be a finite number, got -inf"),
    (["--rat", "1"], "unrecognized arguments: --rat 1"),
])
def test_shared_parser_validates_numbers_where_parsed(argv, message):
    from gpt2_owt.core.hf_argparser import HfArgumentParser

    with pytest.raises(UserError) as e:
        HfArgumentParser(_Args).parse_args_into_dataclasses(args=["--name", "x", *argv])
    assert str(e.value) == message


def test_no_command_parses_with_another_parser():
    """Every command module parses through core/hf_argparser.py (the one place numbers are validated)."""
    packages = ["core", "modeling", "training", "eval", "model_card", "tracing"]
    modules = [p for d in packages for p in (REPO_ROOT / d).rglob("*.py")] + list(REPO_ROOT.glob("*.py"))
    offenders = [str(p.relative_to(REPO_ROOT)) for p in modules
                 if p.name != "hf_argparser.py" and "from transformers import HfArgumentParser" in p.read_text()]
    assert offenders == []


@pytest.mark.parametrize("flag, value, message", [
    ("learning_rate", "nan", "learning_rate must be a finite number, got nan"),
    ("grad_clip", "nan", "grad_clip must be a finite number, got nan"),
    ("min_lr", "inf", "min_lr must be a finite number, got inf"),
    ("grad_clip", "-1", "grad_clip must be >= 0, got -1.0"),
    ("min_lr", "1", "min_lr 1.0 is above learning_rate"),
    ("learning_rate", "0", "learning_rate must be > 0, got 0.0"),
    ("adam_beta2", "1", "adam_beta2 must be in [0, 1), got 1.0"),
])
def test_train_config_numbers(flag, value, message, tmp_path):
    from gpt2_owt.training.config import parse_config

    with pytest.raises(UserError, match=re.escape(message)):
        parse_config(["--config", str(REPO_ROOT / "training/configs/tiny.yaml"), "--data_dir", str(tmp_path),
                      "--output_dir", str(tmp_path / "run"), f"--{flag}", value])


def test_yaml_numbers_are_validated_too(tmp_path):
    from gpt2_owt.training.config import parse_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text((REPO_ROOT / "training/configs/tiny.yaml").read_text() + "\ngrad_clip: .nan\n")
    with pytest.raises(UserError, match="grad_clip must be a finite number"):
        parse_config(["--config", str(recipe)])


# ------------------------------------------------------------------------------------------------- signals
SIGNAL_SCRIPT = textwrap.dedent("""
    import sys, time
    from gpt2_owt.core.errors import cli_main
    from gpt2_owt.core.interrupts import child_process, set_interrupt_note
    from gpt2_owt.core.output_paths import atomic_output

    @cli_main
    def main():
        if sys.argv[2] == "note":
            set_interrupt_note("2 shards kept: rerun the same command to continue")
        with atomic_output(sys.argv[1], folder=True) as tmp, \\
                child_process([sys.executable, "-c", "import time; time.sleep(120)"]) as child:
            (tmp / "part").write_bytes(b"x" * 1000)
            print(tmp, child.pid, flush=True)
            time.sleep(120)

    main()
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped by init) counts as ended
        return f.read().split(") ")[1][0] != "Z"


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig, note", [(signal.SIGTERM, "plain"), (signal.SIGINT, "note")])
def test_signal_is_one_line_partials_removed_child_ended(sig, note, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SIGNAL_SCRIPT, str(tmp_path / "out"), note], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tmp, child = proc.stdout.readline().split()
    assert Path(tmp).is_dir() and _alive(int(child))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    name = signal.Signals(sig).name
    expected = ("2 shards kept: rerun the same command to continue" if note == "note" else "nothing kept")
    assert proc.returncode == 128 + sig and err.strip() == f"error: interrupted by {name}; {expected}", err
    assert os.listdir(tmp_path) == []
    deadline = time.monotonic() + 10
    while _alive(int(child)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(int(child))


SWALLOWED_SIGNAL_SCRIPT = textwrap.dedent("""
    import gc, os, signal, sys, time, weakref
    from gpt2_owt.core.errors import cli_main

    class Held:
        pass

    @cli_main
    def main():
        held = Held()
        # the signal's handler runs inside this weakref callback, where Python prints and drops what it raises
        ref = weakref.ref(held, lambda r: (os.kill(os.getpid(), signal.SIGINT), sum(range(10000))))
        del held
        gc.collect()
        time.sleep(30)
        print("ran on after the signal", flush=True)

    main()
""")


@pytest.mark.timeout(120)
def test_a_signal_landing_in_a_weakref_callback_still_stops_the_command():
    proc = subprocess.run([sys.executable, "-c", SWALLOWED_SIGNAL_SCRIPT], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 130 and proc.stdout == "", proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: interrupted by SIGINT; nothing kept", proc.stderr


# ------------------------------------------------------------------------------------------------- the Hub
@pytest.mark.timeout(120)
@pytest.mark.parametrize("env, message", [
    ({"HF_HUB_OFFLINE": "1"}, "error: cannot reach the Hub for alice/tiny: HF_HUB_OFFLINE is set and it is not in "
                              "the local cache (unset HF_HUB_OFFLINE to download it, or give a local folder)"),
    ({"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"},
     "error: cannot reach the Hub for alice/tiny ([Errno 111] Connection refused): check the network and HF_ENDPOINT, "
     "or set HF_HUB_OFFLINE=1 to use only the local cache"),
])
def test_offline_and_unreachable_hub_are_one_line(env, message):
    code = ("from gpt2_owt.core.errors import cli_main\nfrom gpt2_owt.core.hub import repo_refs\n"
            "cli_main(lambda: repo_refs('alice/tiny'))()")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=100,
                          env={**os.environ, **env})
    assert done.returncode == 2 and done.stderr.strip() == message, done.stderr


def test_the_error_line_is_a_line_of_its_own_after_a_progress_bar(capfd):
    """A command stopped mid-loop leaves its tqdm bar drawn with a carriage return and no newline; the `error:` line
    must still start a line of its own (issue 33 sweep: `trace memorization` interrupted while decoding printed
    `...hf/step0]error: interrupted by SIGTERM`, a line no reader finds)."""
    from tqdm import tqdm

    from gpt2_owt.core.errors import UserError, cli_main

    @cli_main
    def command():
        bar = tqdm(total=10, desc="decoding", file=sys.stderr, mininterval=0)
        bar.update(3)
        raise UserError("stopped mid-loop")

    with pytest.raises(SystemExit) as e:
        command()
    err = capfd.readouterr().err
    assert e.value.code == 2
    assert err.splitlines()[-1] == "error: stopped mid-loop" and err.endswith("\nerror: stopped mid-loop\n"), err
