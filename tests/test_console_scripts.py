"""Every verb of the one command line (`gpt2-owt <verb>`, installed in .venv/bin) exits 0 when it succeeds, and
answers --help; a folder of another architecture is refused by model_type before any model is built."""

import errno
import json
import sys
import tomllib
from pathlib import Path

import pytest

from helpers.cli import Workspace, run_command
from helpers.training import REPO_ROOT, TINY_YAML

BIN = Path(sys.executable).parent
SCRIPTS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
GPT2_OWT = str(BIN / "gpt2-owt")

# verb -> argv after `gpt2-owt VERB` (placeholders as in tests/test_bad_inputs.py) and the file it must write
SUCCESS = {
    "prepare": (["--dataset", "json", "--data_files", "{originals}/openwebtext-sample/owt_first37_docs.jsonl",
                          "--val_fraction", "0.1", "--num_proc", "1", "--output_dir", "{ws}/data2",
                          "--cache_dir", "{ws}/cache"], "data2/manifest.json"),
    "verify-data": (["--data_dir", "{data}"], None),
    "train": (["--config", str(TINY_YAML), "--data_dir", "{data}", "--output_dir", "{ws}/run2",
                        "--max_steps", "2", "--warmup_steps", "0", "--export_steps", "1", "--report_to", "none", "--seq_len", "32"],
                       "run2/hf/final/model.safetensors"),
    "data-order": (["--config", str(TINY_YAML), "--data_dir", "{data}", "--update", "0"], None),
    "eval": (["--model", "{model}", "--tasks", "lambada_openai", "--limit", "2", "--max_length", "32",
                       "--output", "{ws}/r.json"], "r.json"),
    "card": (["--run_dir", "{run}", "--eval_results", "{results}", "--output_dir", "{ws}/rel"],
                            "rel/release_manifest.json"),
    "upload": (["{release}", "--repo_id", "alice/tiny", "--dry_run"], None),
    "convert": (["--to", "llmc", "--model", "{model}", "--output", "{ws}/m.bin"], "m.bin"),
    "harness-tasks": (["--output_dir", "{ws}/tasks"], "tasks/wikitext_local.yaml"),
    # a passing verify needs a published series (tests/test_verify.py: main(...) == 0); here the script starts
    "verify": (["--help"], None),
}


def test_one_console_script_and_every_verb_is_covered():
    from gpt2_owt.cli import VERBS

    assert SCRIPTS == {"gpt2-owt": "gpt2_owt.cli:main"}
    # covered by their own tests: trace's verbs (tests/test_trace*.py), attribute (tests/test_attribute.py),
    # replay (tests/test_replay.py) and explore, which serves until stopped (tests/test_explore.py)
    assert set(SUCCESS) == {v for v in VERBS if not v.startswith("trace ")} - {"attribute", "replay", "explore"}


@pytest.mark.slow  # an interpreter per verb: ~20 s
@pytest.mark.timeout(300)
def test_help_of_every_verb():
    """`gpt2-owt --help` lists the verbs; every verb (and every trace verb) answers --help with exit 0."""
    from gpt2_owt.cli import VERBS

    listing = run_command([GPT2_OWT, "--help"])
    assert listing.returncode == 0 and all(f"  {verb} " in listing.stdout for verb in VERBS)
    for argv in [verb.split(" ") for verb in VERBS]:
        done = run_command([GPT2_OWT, *argv, "--help"], timeout=120)
        assert done.returncode == 0 and "usage:" in done.stdout, (argv, done.stderr[-2000:])


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("verb", sorted(SUCCESS))
def test_verb_exits_0_on_success(verb, workspace: Workspace, original_files):
    from helpers.cli import fill

    argv, writes = SUCCESS[verb]
    argv = [fill(a.replace("{originals}", str(original_files)), workspace) for a in argv]
    done = run_command([GPT2_OWT, verb, *argv], timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    if writes:
        assert (workspace.root / writes).is_file()


@pytest.mark.timeout(120)
def test_other_architecture_is_refused_before_building(workspace: Workspace):
    """A llama config.json: every model reader stops at model_type (no 7B model is ever allocated)."""
    from gpt2_owt.core.errors import UserError
    from gpt2_owt.modeling.hf_folder import load_hf_model
    from gpt2_owt.modeling.interp import load_transformer_lens

    model = workspace.get("model")
    (model / "config.json").write_text(json.dumps({**json.loads((model / "config.json").read_text()),
                                                   "model_type": "llama"}))
    for load in (load_hf_model, load_transformer_lens):
        with pytest.raises(UserError, match="has model_type 'llama'; only 'gpt2' is supported"):
            load(model)


@pytest.mark.timeout(300)
def test_full_disk_at_the_results_write_leaves_no_partial_file(workspace: Workspace, monkeypatch, capsys):
    """ENOSPC simulated at the write (works without root): one line, no results.json and no temp file."""
    from gpt2_owt.eval.evaluate import main

    real_write = Path.write_text

    def write_then_fail(self, data, *args, **kwargs):
        real_write(self, data[: len(data) // 2], *args, **kwargs)  # half a file, as a filling disk leaves it
        raise OSError(errno.ENOSPC, "No space left on device")

    out = workspace.root / "out" / "r.json"
    monkeypatch.setattr(Path, "write_text", write_then_fail)
    with pytest.raises(SystemExit) as e:
        main(["--model", str(workspace.get("model")), "--tasks", "lambada_openai", "--limit", "2",
              "--max_length", "32", "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()  # progress bars first, then the one error line
    assert e.value.code == 2 and err[-1] == f"error: cannot write {out}: No space left on device"
    assert "Traceback" not in "\n".join(err)
    assert sorted(p.name for p in out.parent.iterdir()) == []
