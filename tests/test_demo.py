"""The README's first command (`make demo` = scripts/demo.sh) end to end, with fewer steps, so the README cannot rot.

Runs the real stages: prepare the bundled OWT sample, `accelerate launch` 2 CPU processes with DeepSpeed ZeRO-2,
evaluate WikiText-2 + LAMBADA (a few documents/examples each), build the release folder, `upload.py --dry_run`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def run_demo(root: Path, port: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, PY=sys.executable, ACCELERATE=str(Path(sys.executable).parent / "accelerate"),
               DEMO_ROOT=str(root), DEMO_MAX_STEPS="12", DEMO_EVAL_LIMIT="3", DEMO_PORT=str(port))
    return subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], env=env, capture_output=True, text=True,
                          timeout=1200)


def test_demo_end_to_end_and_rerun_keeps_the_first_run(tmp_path):
    first = run_demo(tmp_path, 29631)
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
    metrics = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [m["train_loss"] for m in metrics if "train_loss" in m]
    assert losses[-1] < losses[0] - 0.5  # it learned something in 12 steps

    summary = first.stdout[first.stdout.index("=== summary ==="):]
    assert f"train loss {losses[0]:.3f}" in summary and "word_perplexity" in summary and "model.safetensors" in summary
    assert "dry run: nothing is uploaded" in first.stdout and "branch step8" in first.stdout

    # a rerun verifies the prepared data, starts a new run folder and leaves the first one untouched
    before = (release / "model.safetensors").read_bytes()
    second = run_demo(tmp_path, 29632)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert len(sorted(p for p in tmp_path.iterdir() if p.name != "data")) == 2
    assert (release / "model.safetensors").read_bytes() == before
