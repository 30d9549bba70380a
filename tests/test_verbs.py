"""The one dispatcher (cli.py) and the one argument parser (core/args.py): every verb and trace verb answers `--help`
and a mistyped flag before importing torch, transformers, deepspeed, bergson or gradio, and a mistyped flag is
named with its closest match before any other check."""

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from gpt2_owt import cli
from gpt2_owt.core.args import unknown_flag

HEAVY = ("torch", "transformers", "deepspeed", "bergson", "gradio")
UNKNOWN = re.compile(r"^error: unknown flag (--\w+): did you mean (--\w+)\? \(--help lists the flags\)$")


def run_verb(*argv: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`gpt2-owt ARGV` under `-X importtime`: the process and the top-level packages it imported."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "gpt2_owt.cli", *argv], capture_output=True,
                          text=True, timeout=120)
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in done.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    return done, imported


def check_verb(verb: str) -> list[str]:
    """What is wrong with `gpt2-owt VERB --help` and `gpt2-owt VERB --<typo of its first flag> 1` ([]: nothing)."""
    words, wrong = verb.split(" "), []
    helped, imported = run_verb(*words, "--help")
    if helped.returncode != 0 or not helped.stdout.startswith(f"usage: gpt2-owt {verb} "):
        wrong.append(f"{verb} --help: exit {helped.returncode}, {helped.stdout[:80]!r} {helped.stderr[-300:]!r}")
    if "(default: None)" in helped.stdout or re.search(r"\(default: [^)]*\)\s*\(default:", helped.stdout):
        wrong.append(f"{verb} --help repeats a default")
    wrong += [f"{verb} --help imports {name}" for name in HEAVY if name in imported]
    flag = next(f for f in re.findall(r"\s(--\w+)", helped.stdout) if f != "--help")
    typo = flag + flag[-1]
    refused, imported = run_verb(*words, typo, "1")
    last = (refused.stderr.strip().splitlines() or [""])[-1]
    if refused.returncode != 2 or UNKNOWN.match(last) is None or UNKNOWN.match(last).groups() != (typo, flag):
        wrong.append(f"{verb} {typo}: exit {refused.returncode}, last line {last!r}")
    wrong += [f"{verb} {typo} imports {name}" for name in HEAVY if name in imported]
    return wrong


@pytest.mark.slow  # an interpreter per verb under -X importtime: ~6 s
@pytest.mark.timeout(900)
def test_every_verb_parses_before_heavy_imports():
    with ThreadPoolExecutor(2) as pool:
        wrong = [line for lines in pool.map(check_verb, cli.VERBS) for line in lines]
    assert not wrong, "\n".join(wrong)


def test_top_level_help_lists_every_verb_and_trace_verb(capsys):
    cli.main(["--help"])
    out = capsys.readouterr().out
    assert all(f"  {verb} " in out for verb in cli.VERBS)
    assert {"trace index", "trace find", "trace curve", "trace spans", "trace memorization", "trace losses"} <= set(
        cli.VERBS)


@pytest.mark.parametrize("argv, line", [
    (["trace", "find", "--txt", "x"], "error: unknown flag --txt: did you mean --text? (--help lists the flags)"),
    (["prepare", "--no_such_flagg", "1"], "error: unknown flag --no_such_flagg (--help lists the flags)"),
    (["trace", "fnd"], "error: unknown trace verb 'fnd': did you mean find?"),
    (["evl"], "error: unknown verb 'evl': did you mean eval?"),
])
def test_a_typo_is_named_before_any_other_check(argv, line, capsys):
    """`trace find --txt x` would otherwise ask for --config, `prepare --no_such_flagg 1` for --output_dir."""
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2 and capsys.readouterr().err.strip().splitlines() == [line]


def test_unknown_flag_rules():
    known = {"--text", "--data_dir", "--data-dir", "-h", "--help"}
    assert unknown_flag(["--text", "-5", "--data-dir=x", "--", "--anything"], known) is None
    assert unknown_flag(["--data_dirr=x"], known) == ("unknown flag --data_dirr: did you mean --data_dir? "
                                                      "(--help lists the flags)")
