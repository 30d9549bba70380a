"""The README's first command (`make demo` = scripts/demo.sh) end to end, with fewer steps, so the README cannot rot.

Runs the real stages: prepare the bundled OWT sample, index it for tracing, `accelerate launch` 2 CPU processes
with DeepSpeed ZeRO-2, evaluate WikiText-2 + LAMBADA (a few documents/examples each), build the release folder,
`upload.py --dry_run`, the final checkpoint's generation and its spans. Then the release card's own trace commands
are run as a reader of the card would, against the release published on the local test Hub.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.training import free_port

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.multiprocess


def run_demo(root: Path, port: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, PY=sys.executable, ACCELERATE=str(Path(sys.executable).parent / "accelerate"),
               DEMO_ROOT=str(root), DEMO_MAX_STEPS="12", DEMO_EXPORT_INTERVAL="5", DEMO_EVAL_LIMIT="3",
               DEMO_PORT=str(port))
    return subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], env=env, capture_output=True, text=True,
                          timeout=1200)


@pytest.mark.timeout(3600)
def test_demo_end_to_end_and_rerun_keeps_the_first_run(tmp_path):
    first = run_demo(tmp_path, free_port())
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    runs = sorted(p for p in tmp_path.iterdir() if p.name != "data")
    assert len(runs) == 1
    out = runs[0]

    # every stage left its artefact where the summary says
    release = out / "release"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "README.md", "training_config.json",
                 "eval_results.json", "manifest.json"):
        assert (release / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert set(results["tasks"]) == {"wikitext", "lambada_openai"}
    config = json.loads((out / "run" / "training_config.json").read_text())
    assert config["max_steps"] == 12 and config["world_size"] == 2
    assert (config["learning_rate"], config["min_lr"], config["warmup_steps"]) == (6e-4, 6e-5, 2)  # the sweep's choice
    metrics = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [m["train_loss"] for m in metrics if "train_loss" in m]
    assert losses[-1] < losses[0] - 0.2  # it learned something in 12 steps

    summary = first.stdout[first.stdout.index("=== summary ==="):]
    assert f"train loss {losses[0]:.3f}" in summary and "word_perplexity" in summary and "model.safetensors" in summary
    assert "dry run: nothing is uploaded" in first.stdout and "branch step8" in first.stdout
    dry_run = first.stdout[first.stdout.index("=== 6/7"):first.stdout.index("=== 7/7")].strip().splitlines()
    assert len(dry_run) <= 30, "\n".join(dry_run)  # a line per branch, not every file of every branch
    assert "None" not in first.stdout
    # progress from the first second of training, exports listed by step (step10 after step8, not after step1)
    training = first.stdout[first.stdout.index("=== 3/7"):first.stdout.index("=== 4/7")]
    assert training.splitlines()[1].startswith("starting 2 training processes")
    assert "exports    hf/step0, hf/step1, hf/step2, hf/step4, hf/step5, hf/step8, hf/step10, hf/final" in summary
    # the trace index, and the summary ends with the final checkpoint's generation and its spans
    assert (tmp_path / "data" / "trace_index" / "trace_index.json").is_file()
    spans = json.loads((out / "spans.json").read_text())
    assert spans["input"] == "generate" and spans["checkpoint"]["step"] == 12 and len(spans["token_ids"]) > 0
    assert summary.rstrip().endswith(("no span of the text occurs in train.bin", "updates after the last one"))
    assert f"repeat: gpt2-owt trace spans --run_dir {out / 'run'} --checkpoint step12" in summary

    # the card says what this run is, and its trace commands work for this release (published on the local Hub)
    card = (release / "README.md").read_text()
    assert "trained from scratch on a 5,038-document local sample" in card
    assert "a sample run of the gpt2-owt pipeline, GPT-2 (6.9M) on 5,038 documents" in card
    run_card_trace_commands(card, release, out / "run" / "hf", tmp_path / "card_reader")

    # a rerun verifies the prepared data, starts a new run folder and leaves the first one untouched
    before = (release / "model.safetensors").read_bytes()
    second = run_demo(tmp_path, free_port())
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert len(sorted(p for p in tmp_path.iterdir() if p.name not in ("data", "card_reader"))) == 2
    assert (release / "model.safetensors").read_bytes() == before


def run_card_trace_commands(card: str, release: Path, hf: Path, workspace: Path) -> None:
    """The card's trace block, as a reader runs it from the code's root: publish the release (main and its stepN
    branches) on the local test Hub as alice's repo, then run every command with only the repo id and the data
    folder moved to where this test may write."""
    import shlex

    from helpers.hub_server import alice_hub, run_with_hub

    block = card[card.index("## Tracing the Training Data"):]
    block = block[block.index("```bash") + len("```bash"):]
    commands = [shlex.split(line) for line in block[:block.index("```")].strip().splitlines()]
    assert [c[1:3] for c in commands] == [["prepare", "--dataset"], ["trace", "index"], ["trace", "spans"],
                                         ["trace", "find"], ["trace", "curve"]]
    workspace.mkdir()
    repo, data = "alice/gpt2-owt-tiny-demo", str(workspace / "card_data")
    moved = {"demo-user/gpt2-owt-tiny-demo": repo, "data/gpt2-owt-tiny-demo": data}
    with alice_hub(workspace / "hf_home") as hub:
        upload = run_with_hub(hub.env, str(REPO / "upload.py"), str(release), "--repo_id", repo, "--checkpoints",
                              str(hf))
        assert upload.returncode == 0, upload.stderr[-3000:]
        for argv in commands:
            argv = [moved.get(a, a) for a in argv]
            proc = run_with_hub(hub.env, "-m", "gpt2_owt.cli", *argv[1:], timeout=900)
            assert proc.returncode == 0, (argv, proc.stderr[-3000:])
            if argv[2] == "spans":
                assert "continued 'The police said'" in proc.stdout and "repeat: " in proc.stdout
            if argv[2] == "find":
                assert "occurrences of ' the United States'" in proc.stdout
