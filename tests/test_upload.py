"""upload.py against a local Hub-compatible server (tests/helpers/hub_server.py): publish, resume, load back,
errors.

huggingface_hub reads HF_ENDPOINT at import and this test session already imported it (offline), so every upload
and every Hub download runs in a subprocess with HF_ENDPOINT=<local server>, HF_HUB_DISABLE_XET=1 and its own
HF_HOME cache.
"""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gpt2_owt import upload
from helpers.hub import BOB_TOKEN, TOKEN, run_upload
from gpt2_owt.core.readers import read_json
from gpt2_owt.core.steps import parse_step_name
from gpt2_owt.training.run_dir import TRAINING_CONFIG

REPO_ROOT = Path(__file__).resolve().parents[1]


def local_hashes(folder: Path) -> dict[str, str]:
    return {p.name: upload.sha256_file(p) for p in folder.iterdir() if p.is_file()}


def test_dry_run_needs_no_token_and_lists_every_file_branch_and_tag(published_inputs, monkeypatch, capsys):
    release, hf = published_inputs
    monkeypatch.delenv("HF_TOKEN", raising=False)
    argv = [str(release), "--repo_id", "alice/gpt2-owt-tiny", "--checkpoints", str(hf), "--tag", "v1.0", "--dry_run"]
    upload.main(argv)
    summary = capsys.readouterr().out.splitlines()  # a line per branch and tag (count and size), no file list
    branches = [line for line in summary if line.startswith("branch ")]
    assert [b.split()[1] for b in branches] == ["main", *sorted((p.name for p in hf.iterdir() if p.name != "final"),
                                                                key=lambda n: int(n[4:])), "main"]
    assert not any(line.startswith("  ") for line in summary) and len(summary) == len(branches) + 2
    upload.main([*argv, "--verbose"])
    out = capsys.readouterr().out
    assert "dry run: nothing is uploaded" in out
    for branch, folder in (("main", release), ("step0", hf / "step0"), ("step1", hf / "step1")):
        assert f"branch {branch} (" in out
        for p in folder.iterdir():
            assert f"  {p.name}  {p.stat().st_size:,} bytes" in out
    assert "tag v1.0 -> the release commit on main" in out
    assert "final" not in out.split("branch step0", 1)[1]  # hf/final is the release, never a step branch


@pytest.mark.slow
def test_publish_fails_midway_then_resumes_and_loads_back(hub, published_inputs, tmp_path):
    release, hf = published_inputs
    repo = "alice/gpt2-owt-tiny"
    argv = [release, "--repo_id", repo, "--checkpoints", hf, "--tag", "v1.0"]
    weights = upload.sha256_file(release / "model.safetensors")

    hub.state.fail("POST", r"/commit/main$", status=500)  # the release commit dies after its LFS uploads
    hub.state.fail("POST", r"/commit/step1$", status=500)  # then, on the rerun, step1's commit dies once
    first = run_upload(hub, *argv)
    assert first.returncode == 2 and "Rerun the same command to resume" in first.stderr
    assert set(hub.state.snapshot(repo, "main")) == {".gitattributes"}
    again = run_upload(hub, *argv)
    assert again.returncode == 2 and "Rerun the same command to resume" in again.stderr
    assert set(hub.state.snapshot(repo, "step1")) == {".gitattributes"}  # branch made, weights not committed

    second = run_upload(hub, *argv)
    assert second.returncode == 0, second.stderr
    assert "step0: up to date" in second.stdout and "step1: uploaded" in second.stdout
    main = hub.state.snapshot(repo, "main")
    assert {k: v for k, v in main.items() if k not in (".gitattributes", "checkpoints.json")} == local_hashes(release)
    assert "checkpoints.json" in main  # tests/test_verify.py checks its content
    for step in (0, 1):  # each branch holds exactly its own export, not the final weights
        assert hub.state.snapshot(repo, f"step{step}") == {".gitattributes": hub.state.snapshot(repo)[".gitattributes"],
                                                           **local_hashes(hf / f"step{step}")}
        assert hub.state.snapshot(repo, f"step{step}")["model.safetensors"] != weights
    refs = hub.state.repos[repo]
    assert refs.tags["v1.0"] == refs.branches["main"]
    puts = [path for method, path, _ in hub.state.log if method == "PUT" and path.endswith(weights)]
    assert len(puts) == 1  # the rerun found the release weights already stored and did not send them again

    commits = hub.state.num_commits(repo)
    third = run_upload(hub, *argv)
    assert third.returncode == 0 and hub.state.num_commits(repo) == commits  # nothing left to do
    assert "step0: up to date" in third.stdout and "tag v1.0: already on the release commit" in third.stdout

    loader = textwrap.dedent(f"""
        import json, torch
        from huggingface_hub import list_repo_refs
        from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
        ids = torch.tensor([[15496, 995, 11, 428, 318, 257, 1332, 13]])
        out = {{"branches": sorted(b.name for b in list_repo_refs("{repo}").branches)}}
        for rev, local in (("step0", "{hf}/step0"), ("step1", "{hf}/step1"), ("v1.0", "{release}"), (None, "{release}")):
            remote = AutoModelForCausalLM.from_pretrained("{repo}", revision=rev)
            mine = AutoModelForCausalLM.from_pretrained(local)
            with torch.no_grad():
                out[str(rev)] = bool(torch.equal(remote(ids).logits, mine(ids).logits))
        tok = AutoTokenizer.from_pretrained("{repo}")
        out["tokens"] = tok("Hello world")["input_ids"]
        gen = pipeline("text-generation", model="{repo}", revision="step1")
        out["pipeline"] = gen("Hello world", max_new_tokens=4, do_sample=False)[0]["generated_text"]
        ref = pipeline("text-generation", model="{hf}/step1")
        out["pipeline_local"] = ref("Hello world", max_new_tokens=4, do_sample=False)[0]["generated_text"]
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", loader], env=hub.env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["branches"] == ["main", "step0", "step1"]
    assert out["step0"] and out["step1"] and out["v1.0"] and out["None"]
    assert out["tokens"] == [15496, 995]
    assert out["pipeline"] == out["pipeline_local"] and out["pipeline"].startswith("Hello world")


def test_the_last_step_may_carry_the_release_weights(published_inputs, tmp_path, capsys):
    """hf/stepN of the final step legitimately equals hf/final: allowed, unlike any other step."""
    release, hf = published_inputs
    final_step = read_json(hf / "final" / "export_info.json")["step"]
    ckpt = _copy_hf(hf, tmp_path / "hf", {"step1": hf / "step1", f"step{final_step}": hf / "final"})
    upload.main([str(release), "--repo_id", "alice/x", "--checkpoints", str(ckpt), "--dry_run"])
    assert f"branch step{final_step} (" in capsys.readouterr().out


def _copy_hf(hf: Path, dest: Path, names: dict[str, Path]) -> Path:
    """A checkpoints folder whose `name` entries are copies of the given export folders, in a copy of the run's
    folder (its training_config.json and hf/final: the run the release was built from)."""
    dest.mkdir()
    shutil.copyfile(hf.parent / TRAINING_CONFIG, dest.parent / TRAINING_CONFIG)
    shutil.copytree(hf / "final", dest / "final")
    for name, src in names.items():
        shutil.copytree(src, dest / name)
        info = read_json(src / "export_info.json")
        step = parse_step_name(name)
        (dest / name / "export_info.json").write_text(json.dumps({**info, "step": step}))
    return dest


@pytest.mark.parametrize("case, message", [
    ("missing_weights", "incomplete: missing weights (model.safetensors)"),
    ("missing_tokenizer", "missing tokenizer (merges.txt)"),
    ("missing_card", "missing model card (README.md)"),
    ("missing_eval", "missing eval results (eval_results.json)"),
    ("final_as_step", "has the same weights as the release"),
    ("same_branch_name", "several exports map to the same branch name: step1"),
    ("tag_is_branch", "--tag step1 has the same name as a branch"),
    ("duplicate_steps", "have identical weights"),
    ("bad_repo_id", "--repo_id must look like user/name"),
])
def test_bad_local_inputs_fail_before_any_network(published_inputs, tmp_path, capsys, case, message):
    release, hf = published_inputs
    rel, ckpt, tag = release, hf, "v1.0"
    repo = "alice/x"
    if case.startswith("missing_"):
        rel = tmp_path / "rel"
        shutil.copytree(release, rel)
        name = {"weights": "model.safetensors", "tokenizer": "merges.txt", "card": "README.md",
                "eval": "eval_results.json"}[case.split("_", 1)[1]]
        (rel / name).unlink()
    elif case == "final_as_step":  # the bug this guards against: the final weights exported as a step
        ckpt = _copy_hf(hf, tmp_path / "hf", {"step0": hf / "step0", "step7": hf / "final"})
    elif case == "same_branch_name":
        ckpt = _copy_hf(hf, tmp_path / "hf", {"step1": hf / "step1", "step01": hf / "step0"})
    elif case == "tag_is_branch":
        tag = "step1"
    elif case == "duplicate_steps":
        ckpt = _copy_hf(hf, tmp_path / "hf", {"step0": hf / "step0", "step5": hf / "step0"})
    elif case == "bad_repo_id":
        repo = "just-a-name"
    with pytest.raises(SystemExit) as e:
        upload.main([str(rel), "--repo_id", repo, "--checkpoints", str(ckpt), "--tag", tag, "--dry_run"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: ") and message in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_hub_side_errors_are_clear_and_never_show_the_token(hub, published_inputs, tmp_path):
    release, hf = published_inputs
    no_token = run_upload(hub, release, "--repo_id", "alice/r", token=None)
    assert no_token.returncode == 2 and "no Hugging Face token: set HF_TOKEN" in no_token.stderr
    token_file = Path(hub.env["HF_HOME"]) / "token"  # the login store (`hf auth login` writes it)
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(TOKEN)
    logged_in = run_upload(hub, release, "--repo_id", "alice/login", "--revision", "release", token=None)
    assert logged_in.returncode == 0, logged_in.stderr
    assert set(hub.state.snapshot("alice/login", "main")) == {".gitattributes"}  # --revision: only that branch
    assert hub.state.snapshot("alice/login", "release")["README.md"] == upload.sha256_file(release / "README.md")
    token_file.unlink()

    bad_token = run_upload(hub, release, "--repo_id", "alice/r", token="hf_not_a_valid_token")
    assert bad_token.returncode == 2 and "rejected the token (401)" in bad_token.stderr
    assert "hf_not_a_valid_token" not in bad_token.stderr

    hub.state.echo_token_in_errors = True  # even a server that echoes the Authorization header cannot leak it
    no_write = run_upload(hub, release, "--repo_id", "alice/r", token=BOB_TOKEN)
    assert no_write.returncode == 2 and "no write access to alice/r (403)" in no_write.stderr
    hub.state.fail("POST", r"/preupload/", status=400)
    leaky = run_upload(hub, release, "--repo_id", "bob/r", token=BOB_TOKEN)
    assert leaky.returncode == 2 and "***" in leaky.stderr  # the echoed token was scrubbed
    hub.state.echo_token_in_errors = False

    # Remote collisions: a step branch that already holds other weights; a tag already on another commit.
    assert run_upload(hub, release, "--repo_id", "alice/c", "--checkpoints", hf, "--tag", "v1").returncode == 0
    other = _copy_hf(hf, tmp_path / "hf", {"step1": hf / "step0"})
    clash = run_upload(hub, release, "--repo_id", "alice/c", "--checkpoints", other)
    assert clash.returncode == 2 and "branch step1 already exists on alice/c with other weights" in clash.stderr
    changed = tmp_path / "release2"
    shutil.copytree(release, changed)
    with open(changed / "README.md", "a") as f:
        f.write("\nErratum.\n")
    manifest = json.loads((changed / "release_manifest.json").read_text())  # a rebuilt release: manifest matches
    manifest["files"]["README.md"] = {"bytes": (changed / "README.md").stat().st_size,
                                      "sha256": upload.sha256_file(changed / "README.md")}
    (changed / "release_manifest.json").write_text(json.dumps(manifest))
    moved = run_upload(hub, changed, "--repo_id", "alice/c", "--tag", "v1")
    assert moved.returncode == 2 and "tag v1 already exists on alice/c at another commit" in moved.stderr


@pytest.mark.slow
def test_private_repo_and_pull_request(hub, published_inputs):
    release, _ = published_inputs
    proc = run_upload(hub, release, "--repo_id", "alice/p", "--private", "--create_pr", "--tag", "v1.0")
    assert proc.returncode == 0, proc.stderr
    repo = hub.state.repos["alice/p"]
    assert repo.private and list(repo.prs) == ["refs/pr/1"] and not repo.tags
    assert set(hub.state.snapshot("alice/p", "main")) == {".gitattributes"}  # the release waits in the PR
    assert hub.state.snapshot("alice/p", "refs/pr/1")["model.safetensors"] == upload.sha256_file(
        release / "model.safetensors")
    assert "/discussions/1" in proc.stdout and "tag v1.0: skipped for a pull request" in proc.stdout

    anonymous = {k: v for k, v in hub.env.items() if k != "HF_TOKEN"}
    code = "from huggingface_hub import hf_hub_download; hf_hub_download('alice/p', 'config.json')"
    proc = subprocess.run([sys.executable, "-c", code], env=anonymous, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "RepositoryNotFoundError" in proc.stderr  # private: invisible without a token


@pytest.mark.slow
def test_card_validate_runs_when_the_hub_answers(hub, published_inputs):
    """`ModelCard.validate()` is called (against the local Hub here) when the endpoint is reachable."""
    release, _ = published_inputs
    code = f"from pathlib import Path; from model_card.card import validate_online; print(validate_online(Path('{release}/README.md')))"
    proc = subprocess.run([sys.executable, "-c", code], env=hub.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith(f"passed ({hub.url}/api/validate-yaml)")
    assert ("POST", "/api/validate-yaml", 200) in hub.state.log


@pytest.mark.slow
def test_with_training_logs_publishes_metrics_and_sequence_losses(hub, published_inputs, capsys):
    """`--with_training_logs RUN` commits metrics.jsonl and sequence_losses/ under training_logs/ of main, and the
    tag points at that commit; the dry run lists them."""
    release, hf = published_inputs
    run = hf.parent
    logs = upload.training_log_files(run)
    names = [name for name, _ in logs]
    assert "metrics.jsonl" in names and "sequence_losses/info.json" in names
    assert any(n.startswith("sequence_losses/steps_") for n in names) and not any("checkpoints" in n for n in names)
    upload.main([str(release), "--repo_id", "alice/x", "--with_training_logs", str(run), "--dry_run", "--verbose"])
    out = capsys.readouterr().out
    assert "branch main training_logs/ <- " in out and "  training_logs/metrics.jsonl  " in out
    repo = "alice/gpt2-owt-logs"
    proc = run_upload(hub, release, "--repo_id", repo, "--with_training_logs", run, "--tag", "v1.0")
    assert proc.returncode == 0, proc.stderr
    snapshot = hub.state.snapshot(repo, "main")
    for name in names:
        assert snapshot[f"training_logs/{name}"] == upload.sha256_file(run / name)
    tagged = hub.state.snapshot(repo, "v1.0")
    assert "training_logs/metrics.jsonl" in tagged and "model.safetensors" in tagged
    bad = run_upload(hub, release, "--repo_id", repo, "--with_training_logs", hf)
    assert bad.returncode == 2 and "not a run folder (no metrics.jsonl or training_config.json)" in bad.stderr
