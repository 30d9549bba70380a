"""model_card/verify.py against a release published to the local Hub (tests/helpers/hub_server.py) by upload.py: it
passes, then each way a series is known to go wrong (Pythia #205/#206/#83) is forged on the server and verify names it.

The uploads and verify runs are subprocesses with HF_ENDPOINT=<local server> (see tests/test_upload.py); the
tampering edits the server's in-memory repo directly, as a careless or malicious re-upload would.
"""

import hashlib
import json
import shutil
import subprocess
import sys

import pytest

from helpers.hub_server import Entry
from gpt2_owt.model_card import checkpoint_manifest as cm
from helpers.hub import blob, run_upload
from helpers.training import REPO_ROOT
from gpt2_owt.core.readers import read_json
from gpt2_owt.training.run_dir import RUN_INFO

pytestmark = pytest.mark.slow

REPO = "alice/gpt2-owt-verify"


def run_verify(hub, *argv):
    proc = subprocess.run([sys.executable, "-m", "gpt2_owt.model_card.verify", *map(str, argv)], env=hub.env,
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    lines = {line.split(":", 1)[0].split()[-1]: line for line in proc.stdout.splitlines() if line[:4] in
             ("PASS", "FAIL", "SKIP")}
    return proc, lines


def commit_files(hub, branch: str, changes: dict[str, bytes]) -> None:
    """A new commit on `branch` replacing the given files (LFS for .safetensors, like the Hub)."""
    state = hub.state
    repo = state.repos[REPO]
    head = state.resolve(repo, branch)
    files = dict(head.files)
    for path, data in changes.items():
        if path.endswith(".safetensors"):
            sha = hashlib.sha256(data).hexdigest()
            state.blobs[sha] = data
            files[path] = Entry(len(data), sha, True)
        else:
            files[path] = state.store_regular(data)
    repo.branches[branch] = state.new_commit(repo, head.oid, files, "tampered", "", "mallory").oid


@pytest.fixture
def published(hub, published_inputs):
    release, hf = published_inputs
    proc = run_upload(hub, release, "--repo_id", REPO, "--checkpoints", hf, "--tag", "v1.0")
    assert proc.returncode == 0, proc.stderr
    return hub, release, hf


@pytest.mark.timeout(900)
def test_checkpoints_json_records_every_published_step(published):
    hub, release, hf = published
    manifest = json.loads(blob(hub, REPO, "main", cm.CHECKPOINTS_JSON))
    assert [(e["branch"], e["step"]) for e in manifest["checkpoints"]] == [("step0", 0), ("step1", 1), ("main", 2)]
    repo = hub.state.repos[REPO]
    assert repo.tags["v1.0"] == repo.branches["main"]  # the tag covers checkpoints.json
    for entry, folder in zip(manifest["checkpoints"], (hf / "step0", hf / "step1", release)):
        assert entry["weights_sha256"] == hashlib.sha256((folder / cm.WEIGHTS).read_bytes()).hexdigest()
        assert entry["tensors"] == cm.tensor_digests(folder / cm.WEIGHTS) and len(entry["tensors"]) > 10
        assert entry["tokens"] == entry["step"] * 4 * 32
        assert repo.commits[entry["commit"]].files[cm.WEIGHTS].sha256 == entry["weights_sha256"]
        assert entry["optimizer_state"] is None
    assert len({e["tensors_sha256"] for e in manifest["checkpoints"]}) == 3
    run_info = read_json(hf.parent / RUN_INFO)
    assert manifest["data_order"] == {"data_seed": 1337, "init_seed": 1337, "seq_len": 32, "global_batch_size": 4,
                                      "data_manifest_sha256": run_info["data_manifest_sha256"]}
    commits = hub.state.num_commits(REPO)
    again = run_upload(hub, release, "--repo_id", REPO, "--checkpoints", hf, "--tag", "v1.0")
    assert again.returncode == 0 and hub.state.num_commits(REPO) == commits  # same manifest: no new commit


@pytest.mark.timeout(900)
def test_verify_passes_then_names_each_tampering(published):
    hub, release, hf = published
    proc, lines = run_verify(hub, "--repo_id", REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [k for k, v in lines.items() if v.startswith("PASS")] == ["manifest", "weights", "distinct", "step0",
                                                                      "files", "card", "data"]
    assert "byte-identical to a fresh init with init_seed 1337" in lines["step0"]
    assert lines["data_order"].startswith("SKIP")
    downloaded = next(line for line in proc.stdout.splitlines() if line.startswith("downloaded:"))
    assert cm.WEIGHTS not in downloaded and "main:checkpoints.json" in downloaded  # hashes from metadata only
    pristine = dict(hub.state.repos[REPO].branches)

    def restore() -> None:
        hub.state.repos[REPO].branches.clear()
        hub.state.repos[REPO].branches.update(pristine)

    def tampered(expect: dict[str, str]) -> None:
        proc, lines = run_verify(hub, "--repo_id", REPO)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        for check, text in expect.items():
            assert lines[check].startswith("FAIL") and text in lines[check], proc.stdout
        assert "verify: FAILED" in proc.stderr
        restore()

    # Pythia #205/#206: a step branch serving the final model's weights.
    commit_files(hub, "step1", {cm.WEIGHTS: blob(hub, REPO, "main", cm.WEIGHTS)})
    tampered({"weights": "step1 holds weights sha256", "distinct": "step1 (step 1) and main (step 2) served"})
    # One file changed on one branch.
    config = json.loads(blob(hub, REPO, "step1", "config.json"))
    commit_files(hub, "step1", {"config.json": json.dumps(config | {"n_ctx": 7}).encode()})
    tampered({"files": "step1/config.json differs from main's"})
    # The card edited (a hyperparameter "corrected" by hand).
    card = blob(hub, REPO, "main", "README.md").decode()
    assert "| `learning_rate` | 0.003 |" in card
    commit_files(hub, "main", {"README.md": card.replace("| `learning_rate` | 0.003 |", "| `learning_rate` | 0.0006 |")
                 .encode()})
    tampered({"card": "learning_rate: card '0.0006', training_config.json '0.003'"})
    # Step 0 replaced by another init, with checkpoints.json forged to match (so only the init check can see it).
    other = _fresh_init_bytes(seed=1338, config=blob(hub, REPO, "step0", "config.json"))
    manifest = json.loads(blob(hub, REPO, "main", cm.CHECKPOINTS_JSON))
    manifest["checkpoints"][0]["weights_sha256"] = hashlib.sha256(other).hexdigest()
    commit_files(hub, "step0", {cm.WEIGHTS: other})
    commit_files(hub, "main", {cm.CHECKPOINTS_JSON: json.dumps(manifest).encode()})
    proc, lines = run_verify(hub, "--repo_id", REPO)
    assert proc.returncode == 1 and lines["weights"].startswith("PASS")
    assert lines["step0"].startswith("FAIL") and "step0 is not the init of init_seed 1337" in lines["step0"]
    restore()
    # A step branch published outside the manifest; a re-committed identical branch still passes.
    hub.state.repos[REPO].branches["step5"] = pristine["step1"]
    tampered({"weights": "branch step5 is not listed"})
    commit_files(hub, "step1", {cm.WEIGHTS: blob(hub, REPO, "step1", cm.WEIGHTS)})
    assert run_verify(hub, "--repo_id", REPO)[0].returncode == 0


def _fresh_init_bytes(seed: int, config: bytes) -> bytes:
    import tempfile
    from pathlib import Path

    from transformers import GPT2Config

    from gpt2_owt.modeling.model import build_model

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_bytes(config)
        model = build_model(GPT2Config.from_pretrained(tmp), seed=seed)
        model.save_pretrained(Path(tmp) / "out")
        return (Path(tmp) / "out" / cm.WEIGHTS).read_bytes()


@pytest.mark.timeout(900)
def test_local_copy_and_bad_input(published, tmp_path, owt_data_dir, capsys):
    from gpt2_owt.model_card.verify import main as verify_main

    hub, release, hf = published
    local = tmp_path / "main"
    shutil.copytree(release, local)
    (local / cm.CHECKPOINTS_JSON).write_bytes(blob(hub, REPO, "main", cm.CHECKPOINTS_JSON))
    assert verify_main([str(local), "--branches_dir", str(hf), "--data_dir", str(owt_data_dir)]) == 0
    out = capsys.readouterr().out
    assert "PASS  weights: 3 branches" in out and "no fed_batches.jsonl published" in out
    with pytest.raises(SystemExit) as e:  # without the step folders the branches are missing
        verify_main([str(local)])
    assert e.value.code == 1 and "branch step0 is missing" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        verify_main([str(tmp_path / "nope")])
    assert e.value.code == 2 and capsys.readouterr().err.startswith("error: release folder not found")
    proc, _ = run_verify(hub, "--repo_id", "alice/missing")
    assert proc.returncode == 2 and proc.stderr.startswith("error: Hub repo alice/missing not found")
