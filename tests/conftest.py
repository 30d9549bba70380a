"""Shared test fixtures. Every file the tests read ships in the repository: the package's own data (tokenizer,
eval sets, the OpenWebText sample) and tests/data/ (see its README), checked against the original files' sha256.

Session inputs, each built once and read-only (a test that changes one copies it first): the original files, the
prepared 37-document data_dir and its trace index, `trained_run(**SHAPE)` (one real tiny run per shape; the
shapes several modules share are in helpers/training.py), the release run and what the bad-input tables and the
Hub tests read (`cli_sources`, `published_inputs`). Code the tests share lives in tests/helpers/."""

import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from helpers.cli import Workspace
from helpers.hub import BOB_TOKEN, TOKEN
from helpers.hub_server import HubServer
from helpers.release import RELEASE_RUN, copy_run, make_results
from helpers.training import run_inprocess

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed on this CPU, in this process as in the launched ones

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """The tests test the tree they live in: `gpt2_owt` must import from this repository root (an editable install
    of another clone, or a stale wheel, would otherwise be what runs)."""
    import gpt2_owt.cli

    imported = Path(gpt2_owt.cli.__file__).resolve().parent
    if imported != REPO_ROOT:
        raise pytest.UsageError(f"gpt2_owt imports from {imported}, not from this tree {REPO_ROOT}: run "
                                f"`pip install -e {REPO_ROOT}` or put a folder linking gpt2_owt -> {REPO_ROOT} first "
                                "on PYTHONPATH")
TEST_DATA = REPO_ROOT / "tests" / "data"
# path in the test-data layout -> the shipped copy (".gz": gzip of the original)
TEST_FILES = {
    "gpt2-tokenizer/gpt2.tiktoken": TEST_DATA / "gpt2.tiktoken",
    "openwebtext-sample/owt_first37_docs.jsonl": REPO_ROOT / "training" / "sample_data" / "owt_first37_docs.jsonl",
    "openwebtext-sample/owt20p_lines_sample5001.jsonl":
        REPO_ROOT / "training" / "sample_data" / "owt20p_lines_sample5001.jsonl",
    "openwebtext-sample/owt_first100_docs_concat.txt": TEST_DATA / "owt_first100_docs_concat.txt.gz",
    "wikitext-2-raw-v1/wiki.test.raw": REPO_ROOT / "eval" / "data" / "wiki.test.raw.gz",
    "lambada_openai/lambada_test.jsonl": REPO_ROOT / "eval" / "data" / "lambada_test.jsonl.gz",
    "lambada_openai/lambada_test_plain_text.txt": TEST_DATA / "lambada_test_plain_text.txt.gz",
}


def original_sha256() -> dict[str, str]:
    """The originals' sha256 as their provenance record lists them (tests/data/SHA256SUMS)."""
    lines = (TEST_DATA / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split() for line in lines if line.strip())}


def pytest_collection_modifyitems(items):
    """A test that launches several processes or drives a browser is also slow: `-m "not slow"` (the unit tier,
    `make test-fast`) leaves it out."""
    for item in items:
        if item.get_closest_marker("multiprocess") or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def original_files(tmp_path_factory) -> Path:
    """A read-only folder of the original test files (decompressed), each checked against its recorded sha256."""
    root = tmp_path_factory.mktemp("test_data")
    expected = original_sha256()
    for name, shipped in TEST_FILES.items():
        content = gzip.decompress(shipped.read_bytes()) if shipped.suffix == ".gz" else shipped.read_bytes()
        assert hashlib.sha256(content).hexdigest() == expected[name], f"{shipped} is not the original {name}"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


@pytest.fixture(scope="session")
def reference_tiktoken(original_files):
    """tiktoken's GPT-2 (r50k_base) built offline from whisper's gpt2.tiktoken: an independent copy of the vocabulary."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from tiktoken_ext.openai_public import r50k_pat_str

    ranks = load_tiktoken_bpe(str(original_files / "gpt2-tokenizer" / "gpt2.tiktoken"))
    return tiktoken.Encoding(
        name="reference-gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257,
    )


@pytest.fixture(scope="session")
def owt_documents(original_files) -> list[str]:
    """The 37 genuine OpenWebText documents with exact boundaries."""
    path = original_files / "openwebtext-sample" / "owt_first37_docs.jsonl"
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def owt_data_dir(original_files, tmp_path_factory) -> Path:
    """The 37 genuine OWT documents prepared by `training.prepare_data` (val_fraction 0.1: 33 train / 4 val docs).

    A read-only data_dir (train.bin, val.bin, document index, manifest.json); copy it before modifying it.
    """
    from gpt2_owt.training.prepare_data import run as prepare_main

    root = tmp_path_factory.mktemp("owt_data")
    return prepare_main([
        "--dataset", "json", "--data_files", str(original_files / "openwebtext-sample" / "owt_first37_docs.jsonl"),
        "--val_fraction", "0.1", "--num_proc", "1", "--output_dir", str(root / "data"),
        "--cache_dir", str(root / "hf_cache"),
    ])


@pytest.fixture(scope="session")
def indexed_data_dir(owt_data_dir, tmp_path_factory) -> Path:
    """A copy of `owt_data_dir` with its trace index built by `gpt2-owt trace index` (read-only: copy to change)."""
    from gpt2_owt import cli

    copy = tmp_path_factory.mktemp("indexed") / "data"
    shutil.copytree(owt_data_dir, copy)
    cli.main(["trace", "index", "--data_dir", str(copy), "--num_proc", "1", "--mem_gb", "1"])
    return copy


@pytest.fixture(scope="session")
def trained_run(owt_data_dir, tmp_path_factory):
    """The one tiny-trainer fixture: `trained_run(**overrides)` is a real `training.train` run (in process, the tiny
    recipe on `owt_data_dir`, overrides as TrainConfig fields), trained once per session for each set of overrides.
    Treat the folder as read-only: copy it before changing it."""
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
    """The run the model-card and upload tests publish (helpers/release.py RELEASE_RUN)."""
    return trained_run(**RELEASE_RUN)


@pytest.fixture(scope="session")
def cli_sources(owt_data_dir, indexed_data_dir, release_run, tmp_path_factory) -> dict[str, Path]:
    """What the bad-input tables damage copies of (helpers/cli.py Workspace), name -> a read-only original: data,
    indexed (the same with its trace index), run (the release run), model (= run/hf/final), results, release, llmc."""
    from gpt2_owt.model_card.build import run as build_release
    from gpt2_owt.core.records import sha256_file
    from gpt2_owt.modeling.convert import export_checkpoint

    root = tmp_path_factory.mktemp("cli_sources")
    run = copy_run(release_run, root / "run")
    model = run / "hf" / "final"
    results = make_results(root / "results.json", sha256_file(model / "model.safetensors"))
    release = build_release(["--run_dir", str(run), "--eval_results", str(results), "--output_dir",
                             str(root / "release")])
    llmc = export_checkpoint("llmc", model, root / "model.bin")
    return {"data": owt_data_dir, "indexed": indexed_data_dir, "run": run, "model": model, "results": results,
            "release": release, "llmc": llmc}


@pytest.fixture
def workspace(tmp_path, cli_sources, request):
    """A bad-input case's folder (helpers/cli.py Workspace): fresh copies of `cli_sources` on demand."""
    ws = Workspace(tmp_path, cli_sources, request)
    yield ws
    ws.unmount()


@pytest.fixture
def hub(tmp_path):
    """A local Hub server (helpers/hub_server.py) for users alice and bob; `hub.env` runs a subprocess against it
    (huggingface_hub reads HF_ENDPOINT at import, and this process imported it offline)."""
    with HubServer({TOKEN: "alice", BOB_TOKEN: "bob"}) as server:
        server.env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
        server.env.update(HF_ENDPOINT=server.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path / "hf_home"),
                          HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_TELEMETRY="1", HF_TOKEN=TOKEN)
        yield server


@pytest.fixture(scope="session")
def published_inputs(release_run, owt_data_dir, tmp_path_factory):
    """(release folder, run_dir/hf) made by the real pipeline, end to end on genuine OWT text: the trainer (the
    shared release run: single process, 2 steps, exports step0, step1 and final: three different weights), the
    eval (owt_val), the card."""
    from gpt2_owt.eval.evaluate import main as eval_main
    from gpt2_owt.model_card.build import main as build_main
    from gpt2_owt.core.readers import read_json
    from gpt2_owt.training.run_dir import HF_EXPORTS

    root = tmp_path_factory.mktemp("upload")
    run = release_run
    results = root / "results.json"
    eval_main(["--model", str(run / "hf" / "final"), "--tasks", "owt_val", "--data_dir", str(owt_data_dir),
               "--output", str(results), "--device", "cpu"])
    release = root / "release"
    build_main(["--run_dir", str(run), "--eval_results", str(results), "--output_dir", str(release),
                "--repo_id", "alice/gpt2-owt-tiny"])
    shas = {read_json(p / "export_info.json")["weights_sha256"] for p in (run / "hf").iterdir()}
    assert len(shas) == 3
    return release, run / HF_EXPORTS
