"""Shared test fixtures. Real data lives in ../shared/data (see its README); tests read it in place."""

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GPT2_OWT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared test data not found at {SHARED_DATA} (set GPT2_OWT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def reference_tiktoken(shared_data):
    """tiktoken's GPT-2 (r50k_base) built offline from whisper's gpt2.tiktoken: an independent copy of the vocabulary."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from tiktoken_ext.openai_public import r50k_pat_str

    ranks = load_tiktoken_bpe(str(shared_data / "gpt2-tokenizer" / "gpt2.tiktoken"))
    return tiktoken.Encoding(
        name="reference-gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257,
    )


@pytest.fixture(scope="session")
def owt_documents(shared_data) -> list[str]:
    """The 37 genuine OpenWebText documents with exact boundaries."""
    path = shared_data / "openwebtext-sample" / "owt_first37_docs.jsonl"
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def owt_data_dir(shared_data, tmp_path_factory) -> Path:
    """The 37 genuine OWT documents prepared by `training.prepare_data` (val_fraction 0.1: 33 train / 4 val docs).

    A read-only data_dir (train.bin, val.bin, document index, manifest.json); copy it before modifying it.
    """
    from gpt2_owt.training.prepare_data import run as prepare_main

    root = tmp_path_factory.mktemp("owt_data")
    return prepare_main([
        "--dataset", "json", "--data_files", str(shared_data / "openwebtext-sample" / "owt_first37_docs.jsonl"),
        "--val_fraction", "0.1", "--num_proc", "1", "--output_dir", str(root / "data"),
        "--cache_dir", str(root / "hf_cache"),
    ])


@pytest.fixture(scope="session")
def trained_run(owt_data_dir, tmp_path_factory):
    """The one tiny-trainer fixture: `trained_run(**overrides)` is a real `training.train` run (in process, the tiny
    recipe on `owt_data_dir`, overrides as TrainConfig fields), trained once per session for each set of overrides.
    Treat the folder as read-only: copy it before changing it."""
    from train_support import run_inprocess

    root = tmp_path_factory.mktemp("trained")
    runs: dict[str, Path] = {}

    def get(**overrides) -> Path:
        key = json.dumps(overrides, sort_keys=True, default=str)
        if key not in runs:
            out = root / f"run{len(runs)}"
            assert run_inprocess(owt_data_dir, out, **overrides) == 0
            runs[key] = out
        return runs[key]

    return get


@pytest.fixture(scope="session")
def release_run(trained_run) -> Path:
    """The run the model-card and upload tests publish (tests/release_fixtures.py RELEASE_RUN)."""
    from release_fixtures import RELEASE_RUN

    return trained_run(**RELEASE_RUN)
