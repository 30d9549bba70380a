"""The README and docs/ stay true to the code: the README stays short, every docs page is reachable from it, every
relative link resolves, every documented `gpt2-owt` command names a verb and flags its parser accepts, every
`python -m gpt2_owt.<module>` a module and every repository path a file that exists, and the troubleshooting page
is the one generated from the bad-input case tables."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
TROUBLESHOOTING = DOCS / "troubleshooting.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES, README_MAX_BYTES = 250, 15 * 1024

FENCE = re.compile(r"^ *```[^\n]*\n(.*?)^ *```", re.M | re.S)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.M)
# Verbs whose extra `--field value` arguments are training-config overrides (parsed by training/config.py).
TAKES_TRAIN_CONFIG_OVERRIDES = {"data-order", "trace find"}
SHELL_SEPARATORS = {"|", "||", "&&", ";", ">", ">>", "2>", "2>&1"}

# Runs in a fresh interpreter: every verb's own `main(["--help"])`, recording each argparse parser it builds, so the
# accepted flags are exactly what the command line accepts (HfArgumentParser dataclasses, aliases, `--no_x` forms).
COLLECT_FLAGS = r"""
import argparse, contextlib, importlib, io, json
from gpt2_owt.cli import VERBS

parsers = []
parse_known_args = argparse.ArgumentParser.parse_known_args

def recording(self, *args, **kwargs):
    parsers.append(self)
    return parse_known_args(self, *args, **kwargs)

argparse.ArgumentParser.parse_known_args = recording

def flags(module):
    parsers.clear()
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            importlib.import_module(module).main(["--help"])
        except SystemExit:
            pass
    return sorted({option for parser in parsers for action in parser._actions for option in action.option_strings})

verbs = {verb: flags(module) for verb, (module, _) in VERBS.items()}
print(json.dumps(verbs))
"""


def page_text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code, where links live."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def code_snippets(text: str) -> list[str]:
    """Fenced code blocks and inline code spans."""
    return FENCE.findall(text) + INLINE_CODE.findall(FENCE.sub("", text))


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page_text(page))) if not re.match(r"^[a-z]+:", t) and not t.startswith("#")]


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# -- documented commands ----------------------------------------------------------------------------------------


def command_lines(snippet: str) -> list[list[str]]:
    """Shell words of each line, continuations joined, comments dropped, variables set in the snippet expanded."""
    snippet = re.sub(r"\\\n\s*", " ", snippet)
    for name, value in re.findall(r'^\s*(\w+)="([^"]*)"', snippet, re.M):
        snippet = re.sub(rf"\$\{{?{name}\}}?", value, snippet)
    lines = []
    for line in snippet.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:  # an unbalanced quote in prose-like code: plain words are enough to find flags
            words = line.split("#")[0].split()
        lines.append(words)
    return lines


def documented_commands(snippet: str) -> list[tuple[str, list[str]]]:
    """(verb, flags) of every `gpt2-owt VERB ...` / `... -m gpt2_owt.cli VERB ...` in a snippet (`trace VERB` for
    the trace verbs); placeholders such as `<verb>` are skipped."""
    found = []
    for words in command_lines(snippet):
        for i, word in enumerate(words):
            if Path(word).name == "gpt2-owt":
                rest = words[i + 1:]
            elif word == "-m" and words[i + 1:i + 2] == ["gpt2_owt.cli"]:
                rest = words[i + 2:]
            else:
                continue
            if not rest or rest[0].startswith(("-", "<")):
                continue
            verb, rest = rest[0], rest[1:]
            if verb == "trace" and rest and not rest[0].startswith(("-", "<")):
                verb, rest = f"trace {rest[0]}", rest[1:]
            args = []
            for arg in rest:
                if arg in SHELL_SEPARATORS:
                    break
                flag = arg.strip("[]),").split("=")[0]
                if re.fullmatch(r"--[A-Za-z][\w-]*", flag):
                    args.append(flag)
            found.append((verb, args))
    return found


@pytest.fixture(scope="module")
def accepted_flags() -> dict[str, set[str]]:
    done = subprocess.run([sys.executable, "-c", COLLECT_FLAGS], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    flags = {verb: set(options) for verb, options in json.loads(done.stdout.splitlines()[-1]).items()}
    for verb in TAKES_TRAIN_CONFIG_OVERRIDES & set(flags):
        flags[verb] |= flags["train"]
    flags["trace"] = {"-h", "--help"}  # `gpt2-owt trace` alone lists the trace verbs
    return flags


# -- tests ------------------------------------------------------------------------------------------------------


def test_readme_is_short():
    text = page_text(README)
    assert len(text.splitlines()) <= README_MAX_LINES, f"README.md has {len(text.splitlines())} lines"
    assert len(text.encode()) <= README_MAX_BYTES, f"README.md has {len(text.encode())} bytes"


def test_troubleshooting_page_is_generated_from_the_case_tables():
    """docs/troubleshooting.md is exactly what scripts/troubleshooting.py makes of tests/test_bad_inputs*.py, whose
    every row runs the real command: a message changed in the code fails its case there, a page not regenerated
    fails here."""
    done = subprocess.run([sys.executable, "scripts/troubleshooting.py", "--check"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_every_docs_page_is_reachable_from_the_readme():
    reached, todo = {README.resolve()}, [README]
    while todo:
        page = todo.pop()
        for link in relative_links(page):
            target = (page.parent / link.split("#")[0]).resolve()
            if target.suffix == ".md" and target.is_file() and target not in reached:
                reached.add(target)
                todo.append(target)
    unlinked = [p.name for p in PAGES if p.resolve() not in reached]
    assert not unlinked, f"docs pages linked from nowhere (add them to docs/README.md): {unlinked}"


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for link in relative_links(page):
            path, _, fragment = link.partition("#")
            target = (page.parent / path).resolve()
            if not target.exists():
                broken.append(f"{page.relative_to(REPO_ROOT)}: {link}")
            elif fragment and target.suffix == ".md" and fragment not in map(anchor, HEADING.findall(
                    FENCE.sub("", page_text(target)))):
                broken.append(f"{page.relative_to(REPO_ROOT)}: {link} (no such heading)")
    assert not broken, broken


def test_documented_repository_paths_exist():
    """Code spans and blocks naming a file or folder of the repository (`training/run_dir.py`,
    `accelerate_configs/zero2.yaml`, `python -m gpt2_owt.eval.evaluate`) name one that exists."""
    top_level = {name.split("/")[0] for name in subprocess.run(  # the repository's, not runs/ or data/ made here
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT, capture_output=True,
        text=True, check=True).stdout.splitlines()}
    missing = []
    for page in PAGES:
        for snippet in code_snippets(page_text(page)):
            for words in command_lines(snippet):
                for i, word in enumerate(words):
                    if word == "-m" and words[i + 1:i + 2] and words[i + 1].startswith("gpt2_owt."):
                        module = REPO_ROOT.joinpath(*words[i + 1].split(".")[1:])
                        if not (module.with_suffix(".py").is_file() or (module / "__init__.py").is_file()):
                            missing.append(f"{page.relative_to(REPO_ROOT)}: -m {words[i + 1]}")
                    path = word.strip("[](),:;")
                    if (re.fullmatch(r"[\w.-]+(/[\w.-]+)+/?", path) and path.split("/")[0] in top_level
                            and not (REPO_ROOT / path).exists()):
                        missing.append(f"{page.relative_to(REPO_ROOT)}: {path}")
    assert not missing, missing


def test_documented_commands_and_flags_exist(accepted_flags):
    """Every `gpt2-owt <verb> --flag` written in README.md and docs/*.md is a verb of cli.py
    whose parser accepts that flag (troubleshooting.md: the verb only)."""
    wrong, seen = [], 0
    for page in PAGES:
        for snippet in code_snippets(page_text(page)):
            for verb, flags in documented_commands(snippet):
                seen += 1
                if verb not in accepted_flags:
                    wrong.append(f"{page.relative_to(REPO_ROOT)}: unknown verb `gpt2-owt {verb}`")
                    continue
                if page == TROUBLESHOOTING:  # its commands are the bad inputs of the tests: wrong flags on purpose
                    continue
                wrong += [f"{page.relative_to(REPO_ROOT)}: `gpt2-owt {verb}` has no flag {f}" for f in flags
                          if f not in accepted_flags[verb]]
    assert seen > 20, f"only {seen} documented commands found: is the parser broken?"
    assert not wrong, wrong


def test_the_command_parser_finds_verbs_and_flags():
    """The parser above on the shapes the docs use: continuations, variables, optional [--flags], comments,
    `accelerate launch -m gpt2_owt.cli`, trace verbs and placeholders."""
    snippet = ('RECIPE="--config c.yaml --data_dir d"\n'
               "accelerate launch --config_file a.yaml -m gpt2_owt.cli train $RECIPE --max_steps 2  # --not_a_flag\n"
               'gpt2-owt trace find --text " a b" [--limit 10] \\\n    --json | head\n'
               "gpt2-owt <verb> --help\n.venv/bin/gpt2-owt eval --model=m\n")
    assert documented_commands(snippet) == [("train", ["--config", "--data_dir", "--max_steps"]),
                                            ("trace find", ["--text", "--limit", "--json"]),
                                            ("eval", ["--model"])]
