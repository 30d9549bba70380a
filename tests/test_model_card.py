"""model_card.build: the release folder, the card's numbers (all traceable to the run's files), atomicity, errors."""

import json
import shutil

import pytest
import torch
import yaml
from huggingface_hub import ModelCard

from gpt2_owt.core.records import sha256_file
from gpt2_owt.model_card import facts
from gpt2_owt.model_card.build import main as build_main
from gpt2_owt.modeling.flops import flops_per_token
from gpt2_owt.modeling.tokenizer import tokenizer_fingerprint, TOKENIZER_SHA256
from helpers.release import RESULTS_TASKS, copy_run, make_results
from gpt2_owt.core.readers import read_json
from gpt2_owt.training.run_dir import DATA_MANIFEST, METRICS, RUN_INFO, TRAINING_CONFIG, read_metrics

RELEASE_FILES = {
    "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
    "vocab.json", "merges.txt", "README.md", "training_config.json", "eval_results.json", "manifest.json",
    "release_manifest.json", "loss.png", "lr.png", "LICENSE-NOTICE-tokenizer.md", "LICENSE-NOTICE-data.md",
}


@pytest.fixture(scope="module")
def gpu_run(release_run, tmp_path_factory):
    """The real tiny run with run_info saying 8 x A100 for 1 hour (wall_time_seconds 3600), plus its eval results."""
    root = tmp_path_factory.mktemp("card")
    run = copy_run(release_run, root / "run", with_cuda_hardware=True)
    sha = read_json(run / "hf" / "final" / "export_info.json")["weights_sha256"]
    return run, make_results(root / "results.json", sha)


@pytest.fixture(scope="module")
def release(gpu_run, tmp_path_factory):
    run, results = gpu_run
    out = tmp_path_factory.mktemp("rel") / "release"
    build_main(["--run_dir", str(run), "--eval_results", str(results), "--output_dir", str(out),
                "--repo_id", "alice/gpt2-owt-tiny", "--gpu_hour_usd", "2.5", "--grid_kgco2_per_kwh", "0.4"])
    return out


def table(card: str, header: str) -> dict[str, str]:
    """The two-column markdown table whose header row starts with `header`, as {first cell: second cell}."""
    block = card.split(f"| {header} |", 1)[1].split("\n\n", 1)[0]
    rows = [line.strip("|").split(" | ") for line in block.splitlines()[2:]]
    return {r[0].strip().strip("`"): r[1].strip() for r in rows}


def test_release_folder_is_complete_hashed_and_loads(release, gpu_run):
    run, _ = gpu_run
    assert {p.name for p in release.iterdir()} == RELEASE_FILES
    assert not list(release.parent.glob(".release.partial-*"))
    manifest = read_json(release / "release_manifest.json")
    assert set(manifest["files"]) == RELEASE_FILES - {"release_manifest.json"}
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256_file(release / name), name
    weights = sha256_file(release / "model.safetensors")
    assert manifest["weights_sha256"] == weights == read_json(run / "hf/final/export_info.json")["weights_sha256"]
    assert manifest["step"] == 2
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"):
        assert sha256_file(release / name) == TOKENIZER_SHA256[name]
    assert (release / "training_config.json").read_bytes() == (run / TRAINING_CONFIG).read_bytes()
    assert (release / "manifest.json").read_bytes() == (run / DATA_MANIFEST).read_bytes()
    assert (release / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(release))("Hello world", return_tensors="pt")["input_ids"]
    assert ids.tolist() == [[15496, 995]]
    with torch.no_grad():
        got = AutoModelForCausalLM.from_pretrained(str(release))(ids).logits
        want = AutoModelForCausalLM.from_pretrained(str(run / "hf" / "final"))(ids).logits
    assert torch.equal(got, want)


def test_card_metadata_and_model_index_round_trip(release):
    text = (release / "README.md").read_text()
    meta = yaml.safe_load(text.split("---\n", 2)[1])
    assert meta["language"] == "en" and meta["license"] == "mit"
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert "gpt2" in meta["tags"] and meta["widget"][0]["text"]
    assert "datasets" not in meta  # the fixture's data came from local json files, not a Hub dataset id
    card = ModelCard.load(release / "README.md")
    got = {(r.dataset_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert got == {
        ("wikitext", "wikitext word_perplexity"): 41234.5, ("wikitext", "wikitext bits_per_byte"): 2.858,
        ("EleutherAI/lambada_openai", "lambada_openai acc"): 0.0123,
        ("EleutherAI/lambada_openai", "lambada_openai acc_last_token"): 0.02,
        ("EleutherAI/lambada_openai", "lambada_openai perplexity"): 98765.4,
        ("Skylion007/openwebtext", "owt_val loss"): 9.876, ("Skylion007/openwebtext", "owt_val perplexity"): 19467.1,
    }
    assert card.data.model_name == "gpt2-owt-tiny"


def test_card_tables_come_from_the_run_files(release, gpu_run):
    run, _ = gpu_run
    card = (release / "README.md").read_text()
    hparams = table(card, "Hyperparameter")
    assert list(hparams) == list(read_json(run / TRAINING_CONFIG))  # every field the trainer wrote, in order
    assert hparams["learning_rate"] == "0.003" and hparams["adam_beta2"] == "0.95" and hparams["adam_eps"] == "1e-08"
    assert hparams["export_steps"] == "[0, 1]" and hparams["resume_from_checkpoint"] == "null"
    arch = table(card, "Architecture (from `config.json`)")
    assert (arch["Transformer layers"], arch["Attention heads"], arch["Hidden size"]) == ("2", "4", "128")
    assert arch["Context length (tokens)"] == "256" and arch["Vocabulary size"] == "50257"
    assert arch["Parameters (unique, tied embeddings counted once)"] == "6,862,464"
    assert "6.9M-parameter GPT-2" in card

    data = table(card, "Data manifest field")
    manifest = read_json(run / DATA_MANIFEST)
    assert data["splits.train.tokens"] == str(manifest["splits"]["train"]["tokens"])
    assert data["splits.val.documents"] == str(manifest["splits"]["val"]["documents"])
    assert data["tokenizer.fingerprint"] == tokenizer_fingerprint()

    run_info = read_json(run / RUN_INFO)
    speeds = table(card, "Quantity")
    assert speeds["Tokens seen"] == "256" and speeds["Optimizer steps"] == "2"
    assert speeds["GPU-hours"] == "8.000"  # 3600 s wall time x 8 processes
    assert speeds["Training compute"] == f"{run_info['flops_per_token'] * 256:.4g} FLOPs"
    val_losses = [m["val_loss"] for m in read_metrics(run) if "val_loss" in m]
    assert speeds["Final validation loss"] == f"{val_losses[-1]:.4f}"
    assert "**Energy (upper bound):** 3.200 kWh at 400 W per device (published TDP of the GPU)" in card
    assert "**Estimated cost:** $20.00 at $2.5 per device-hour" in card
    assert "**Estimated emissions:** 1.280 kg CO2eq at 0.4 kg CO2eq/kWh" in card

    # references as results.json carries them (eval/references.py): the card has no copy of its own
    assert "| LAMBADA (OpenAI) | perplexity | 98765.4000 | 35.13 (GPT-2 117M paper Table 3" in card
    assert "40.0554 (gpt2 with lm-evaluation-harness, EleutherAI/lm-evaluation-harness#2159)" in card
    assert "| LAMBADA (OpenAI) | acc_last_token | 0.0200 | 0.4667 (gpt2 last-token accuracy" in card
    assert "| WikiText-2 (raw, test) | word_perplexity | 41234.5000 | 29.41 (GPT-2 117M paper Table 3" in card
    assert "6·N + 12·n_layer·n_embd·seq_len" in card  # the card names its FLOPs formula
    assert "![loss.png](loss.png)" in card and "![lr.png](lr.png)" in card
    assert "Subset evaluation" not in card and "Note on" not in card

    assert f"`{run_info['git_commit']}`" in card and "**Seeds:** init_seed 1337 (initial weights = `hf/step0`), data_seed 1337" in card
    assert facts.command_line(run_info["command"]) in card and "training/configs/tiny.yaml" in card
    assert " ".join(manifest["command"][1:]) in card  # the prepare command line from the data manifest
    assert "gpt2-owt card --run_dir" in card
    for step in (0, 1):
        sha = read_json(run / "hf" / f"step{step}" / "export_info.json")["weights_sha256"]
        assert f"| `step{step}` | {step} |" in card and sha in card
    assert 'revision="step1"' in card and "list_repo_refs" in card
    assert "@article{radford2019language" in card and "Gokaslan2019OpenWeb" in card


def test_absent_inputs_are_omitted_never_invented(gpu_run, tmp_path, capsys):
    """A CPU run without wall time / FLOPs / metrics and an eval without LAMBADA: those lines disappear."""
    src, _ = gpu_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    (run / METRICS).unlink()
    info = read_json(run / RUN_INFO)
    for key in ("wall_time_seconds", "flops_per_token"):
        del info[key]
    info["hardware"] = {**info["hardware"], "device_type": "cpu", "device_name": "x86_64", "num_processes": 1}
    (run / RUN_INFO).write_text(json.dumps(info))
    manifest = read_json(run / DATA_MANIFEST)
    manifest["source"]["dataset"] = "Skylion007/openwebtext"  # as the default Hub source records it
    (run / DATA_MANIFEST).write_text(json.dumps(manifest))
    sha = read_json(run / "hf/final/export_info.json")["weights_sha256"]
    results = make_results(tmp_path / "r.json", sha, {k: v for k, v in RESULTS_TASKS.items() if k != "lambada_openai"})
    subset = read_json(results)
    subset["settings"]["limit"] = 20
    subset["tasks"]["wikitext"]["notes"] = "WikiText-103's test text is WikiText-2's."
    results.write_text(json.dumps(subset))
    out = tmp_path / "release"
    build_main(["--run_dir", str(run), "--eval_results", str(results), "--output_dir", str(out)])
    assert "skipped" in capsys.readouterr().out  # card.validate() needs the Hub: skipped offline, and says so

    card = (out / "README.md").read_text()
    for absent in ("LAMBADA", "35.13", "40.06", "Wall-clock", "GPU-hours", "CPU process-hours", "Energy",
                   "Estimated cost", "kg CO2eq", "Final train loss", "Throughput", ".png"):
        assert absent not in card, absent
    # FLOPs/token are not in run_info any more: derived from config.json with the trainer's formula (modeling/
    # flops.py), and the card says which.
    expected = flops_per_token(read_json(out / "config.json"), read_json(run / TRAINING_CONFIG)["seq_len"])
    assert f"| Training FLOPs per token | {expected:.4g} (6·N + 12·n_layer·n_embd·seq_len" in card
    assert "rebuild the card with `--gpu_hour_usd`" in card
    assert "**Subset evaluation:** each task was limited to its first 20 documents/examples" in card
    assert "Note on `wikitext`: WikiText-103's test text is WikiText-2's." in card
    assert not (out / "loss.png").exists() and not (out / "lr.png").exists()
    meta = yaml.safe_load(card.split("---\n", 2)[1])
    assert meta["datasets"] == ["Skylion007/openwebtext"]
    types = {r.dataset_type for r in ModelCard.load(out / "README.md").data.eval_results}
    assert types == {"wikitext", "Skylion007/openwebtext"}
    assert "Skylion007/openwebtext" in card and "huggingface.co/datasets/Skylion007/openwebtext" in card


def test_rebuild_is_a_noop_and_a_different_release_needs_overwrite(gpu_run, tmp_path, capsys):
    run, results = gpu_run
    out = tmp_path / "release"
    base = ["--run_dir", str(run), "--eval_results", str(results), "--output_dir", str(out)]
    build_main(base)
    first = read_json(out / "release_manifest.json")
    build_main(base)
    assert "release unchanged" in capsys.readouterr().out
    other = ["--run_dir", str(run), "--checkpoint", "step1", "--output_dir", str(out)]
    with pytest.raises(SystemExit) as e:
        build_main(other)
    assert e.value.code == 2 and "already holds a different release" in capsys.readouterr().err
    assert read_json(out / "release_manifest.json") == first  # untouched
    build_main(other + ["--overwrite"])
    assert read_json(out / "release_manifest.json")["step"] == 1
    assert "## Evaluation\n\nNo evaluation results were supplied" in (out / "README.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release"]  # no temp or old folders left behind


def _tamper(run, tmp_path, what):
    bad = tmp_path / f"run-{what}"
    shutil.copytree(run, bad)
    if what == "export_hash":
        info = read_json(bad / "hf/final/export_info.json")
        (bad / "hf/final/export_info.json").write_text(json.dumps({**info, "weights_sha256": "0" * 64}))
    elif what == "tokenizer":
        m = read_json(bad / DATA_MANIFEST)
        m["tokenizer"]["fingerprint"] = "f" * 64
        (bad / DATA_MANIFEST).write_text(json.dumps(m))
    elif what == "no_export":
        shutil.rmtree(bad / "hf/final")
    elif what == "no_run_info":
        (bad / RUN_INFO).unlink()
    return bad


@pytest.mark.parametrize("case, message", [
    ("missing_run_dir", "run_dir not found"),
    ("bad_checkpoint", "--checkpoint must be 'final' or 'stepN'"),
    ("no_export", "is incomplete or missing"),
    ("no_run_info", "run info not found"),
    ("export_hash", "export_info.json records"),
    ("tokenizer", "not this package's tokenizer"),
    ("other_weights", "evaluated weights"),
])
def test_bad_inputs_fail_with_one_clear_line(gpu_run, tmp_path, capsys, case, message):
    run, results = gpu_run
    argv = ["--run_dir", str(run), "--output_dir", str(tmp_path / "release")]
    if case == "missing_run_dir":
        argv[1] = str(tmp_path / "nope")
    elif case == "bad_checkpoint":
        argv += ["--checkpoint", "latest"]
    elif case == "other_weights":
        argv += ["--eval_results", str(make_results(tmp_path / "r.json", "e" * 64))]
    elif case in ("no_export", "no_run_info", "export_hash", "tokenizer"):
        argv[1] = str(_tamper(run, tmp_path, case))
    with pytest.raises(SystemExit) as e:
        build_main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "release").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".release")]
