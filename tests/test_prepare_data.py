"""training.prepare_data / training.manifest on the genuine OpenWebText sample (37 documents)."""

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from gpt2_owt.core.errors import UserError, cli_main
from gpt2_owt.modeling.tokenizer import EOT_TOKEN_ID
from gpt2_owt.training import prepare_data
from gpt2_owt.training.data_dir import MANIFEST, SPLITS, all_files, open_split, tokens_file
from gpt2_owt.training.manifest import main as verify_main
from gpt2_owt.training.manifest import verify_data_dir
from gpt2_owt.training.prepare import source as prepare_source
from gpt2_owt.training.prepare import tokenize as prepare_tokenize
from gpt2_owt.training.prepare.split import split_rows


def reference_ids(encoding, text: str) -> list[int]:
    return encoding.encode_ordinary(text) + [EOT_TOKEN_ID]


def run(argv: list[str]) -> Path:
    return cli_main(prepare_data.run)(argv)


def manifest_of(data_dir) -> dict:
    return json.loads((Path(data_dir) / MANIFEST).read_text())


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


@pytest.fixture
def sample_jsonl(original_files) -> Path:
    return original_files / "openwebtext-sample" / "owt_first37_docs.jsonl"


@pytest.fixture
def parquet_source(owt_documents, tmp_path) -> Path:
    """The 37 documents as a local parquet folder in Hub layout (data/train-0000N-of-00002.parquet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "owt_parquet"
    (folder / "data").mkdir(parents=True)
    for i, part in enumerate((owt_documents[:20], owt_documents[20:])):
        pq.write_table(pa.table({"text": part, "id": list(range(len(part)))}),
                       folder / "data" / f"train-{i:05d}-of-00002.parquet")
    return folder


# ---------------------------------------------------------------------------------------------------------------
# Content: token ids, split, document index, nanoGPT compatibility
# ---------------------------------------------------------------------------------------------------------------


def test_token_ids_are_encode_ordinary_plus_eot_in_split_order(owt_data_dir, owt_documents, reference_tiktoken):
    manifest = manifest_of(owt_data_dir)
    seen_rows = []
    for split in SPLITS:
        data = open_split(owt_data_dir, split)
        expected = [t for row in data.doc_rows for t in reference_ids(reference_tiktoken, owt_documents[row])]
        assert data.tokens.dtype == np.uint16
        assert np.array_equal(np.asarray(data.tokens), np.array(expected, dtype=np.uint16))
        for i, row in enumerate(data.doc_rows):  # the index brackets each document exactly
            doc = np.asarray(data.tokens[data.doc_offsets[i]:data.doc_offsets[i + 1]])
            assert doc.tolist() == reference_ids(reference_tiktoken, owt_documents[row])
        assert manifest["splits"][split] == {"documents": data.num_documents, "tokens": data.num_tokens}
        seen_rows += data.doc_rows.tolist()
    assert sorted(seen_rows) == list(range(37))  # every document exactly once
    assert manifest["splits"]["val"]["documents"] == 4  # ceil(0.1 * 37)


def test_ids_equal_shipped_hf_tokenizer(owt_data_dir, owt_documents):
    from gpt2_owt.modeling.tokenizer import load_tokenizer

    tokenizer = load_tokenizer()
    val = open_split(owt_data_dir, "val")
    for i, row in enumerate(val.doc_rows):
        ids = tokenizer(owt_documents[row])["input_ids"] + [tokenizer.eos_token_id]
        assert np.asarray(val.tokens[val.doc_offsets[i]:val.doc_offsets[i + 1]]).tolist() == ids


def test_special_token_text_is_encoded_as_plain_text(tmp_path, reference_tiktoken):
    text = "before <|endoftext|> after"
    (tmp_path / "special.jsonl").write_text(json.dumps({"text": text}) + "\n" + json.dumps({"text": "x"}) + "\n")
    out = run(["--dataset", "json", "--data_files", str(tmp_path / "special.jsonl"), "--val_fraction", "0.5",
               "--num_proc", "1", "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache")])
    tokens = np.concatenate([np.asarray(open_split(out, s).tokens) for s in SPLITS]).tolist()
    assert sorted(tokens) == sorted(reference_ids(reference_tiktoken, text) + reference_ids(reference_tiktoken, "x"))
    assert tokens.count(EOT_TOKEN_ID) == 2  # the literal "<|endoftext|>" is not a special token


def test_split_is_datasets_train_test_split(owt_data_dir, sample_jsonl):
    from datasets import Dataset, load_dataset

    ds = load_dataset("json", data_files=str(sample_jsonl), split="train", cache_dir=str(owt_data_dir.parent / "c2"))
    ds = ds.add_column("row", list(range(len(ds))))
    reference = ds.train_test_split(test_size=0.1, seed=2357, shuffle=True)
    assert open_split(owt_data_dir, "val").doc_rows.tolist() == reference["test"]["row"]
    assert open_split(owt_data_dir, "train").doc_rows.tolist() == reference["train"]["row"]
    # the rule itself, over sizes and fractions where ceil() rounding matters (in-memory datasets: no cache)
    for n in (2, 3, 10, 37, 1000, 8013):
        for fraction in (0.0005, 0.1, 1 / 3, 0.5, 0.9):
            if n - int(np.ceil(fraction * n)) < 1:
                continue
            ref = Dataset.from_dict({"row": list(range(n))}).train_test_split(test_size=fraction, seed=7, shuffle=True)
            ours = split_rows(n, fraction, 7)
            assert ours["val"].tolist() == ref["test"]["row"] and ours["train"].tolist() == ref["train"]["row"]
    a, b = split_rows(1000, 0.1, 2357), split_rows(1000, 0.1, 2357)
    assert np.array_equal(a["val"], b["val"])  # deterministic for a seed ...
    assert not np.array_equal(a["val"], split_rows(1000, 0.1, 2358)["val"])  # ... and seed-dependent


def test_document_index_maps_positions_back_to_documents(owt_data_dir, owt_documents, reference_tiktoken):
    rng = np.random.default_rng(0)
    for split in SPLITS:
        data = open_split(owt_data_dir, split)
        positions = np.concatenate([rng.integers(0, data.num_tokens, 200), data.doc_offsets[:-1],
                                    data.doc_offsets[1:] - 1])  # random, every first and every last (EOT) token
        docs, rows = data.document_index(positions), data.source_row(positions)
        for pos, doc, row in zip(positions, docs, rows):
            start, end = data.doc_offsets[doc], data.doc_offsets[doc + 1]
            assert start <= pos < end
            ids = np.asarray(data.tokens[start:end - 1]).tolist()
            assert reference_tiktoken.decode(ids) == owt_documents[row]
            assert data.tokens[pos] == reference_ids(reference_tiktoken, owt_documents[row])[pos - start]


def test_nanogpt_get_batch_reads_train_bin(owt_data_dir, owt_documents, reference_tiktoken):
    import torch

    block_size, batch_size = 64, 8
    for split in SPLITS:
        # nanoGPT train.py get_batch, verbatim apart from the path
        data = np.memmap(owt_data_dir / tokens_file(split), dtype=np.uint16, mode="r")
        ix = torch.randint(len(data) - block_size, (batch_size,), generator=torch.Generator().manual_seed(1))
        x = torch.stack([torch.from_numpy((data[i:i + block_size]).astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy((data[i + 1:i + 1 + block_size]).astype(np.int64)) for i in ix])
        rows = open_split(owt_data_dir, split).doc_rows
        stream = np.array([t for r in rows for t in reference_ids(reference_tiktoken, owt_documents[r])])
        for b, i in enumerate(ix.tolist()):
            assert x[b].tolist() == stream[i:i + block_size].tolist()
            assert y[b].tolist() == stream[i + 1:i + 1 + block_size].tolist()
        assert len(data) == manifest_of(owt_data_dir)["splits"][split]["tokens"]


@pytest.mark.parametrize("streaming", [True, False])
def test_streaming_and_parallel_runs_write_identical_bytes(streaming, owt_data_dir, parquet_source, tmp_path):
    """2 parquet shards, 2 workers, 10 batches in flight: same bytes as the single-process json fixture."""
    source = ["--dataset", str(parquet_source), "--data_files", "data/*.parquet"] + (["--streaming"] * streaming)
    out = run([*source, "--val_fraction", "0.1", "--num_proc", "2", "--batch_size", "4",
               "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache")])
    assert manifest_of(out)["files"] == manifest_of(owt_data_dir)["files"]
    verify_data_dir(out)


def test_sliced_source_split(sample_jsonl, owt_documents, reference_tiktoken, tmp_path):
    """`--split train[:20]` goes through datasets' slicing (not the whole-cache-file reader)."""
    out = run(["--dataset", "json", "--data_files", str(sample_jsonl), "--split", "train[:20]", "--val_fraction", "0.1",
               "--num_proc", "1", "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache")])
    rows = {s: open_split(out, s).doc_rows.tolist() for s in SPLITS}
    assert rows["val"] == split_rows(20, 0.1, 2357)["val"].tolist() and len(rows["train"]) == 18
    train = open_split(out, "train")
    assert np.asarray(train.tokens).tolist() == [
        t for r in rows["train"] for t in reference_ids(reference_tiktoken, owt_documents[r])]


# ---------------------------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------------------------


def test_manifest_records_source_split_tokenizer_and_hashes(owt_data_dir, sample_jsonl):
    from gpt2_owt.core.records import sha256_file
    from gpt2_owt.modeling.tokenizer import tokenizer_fingerprint

    m = manifest_of(owt_data_dir)
    assert m["source"]["dataset"] == "json" and m["source"]["data_files"] == [str(sample_jsonl)]
    assert m["source"]["documents"] == 37 and m["source"]["allow_partial"] is False
    assert m["split"] == {"method": "datasets.Dataset.train_test_split", "test_size": 0.1, "seed": 2357,
                          "shuffle": True, "val_is": "test"}
    assert m["tokenizer"]["fingerprint"] == tokenizer_fingerprint() and m["tokenizer"]["dtype"] == "uint16"
    assert set(m["files"]) == set(all_files())
    for name, entry in m["files"].items():
        assert entry == {"bytes": (owt_data_dir / name).stat().st_size, "sha256": sha256_file(owt_data_dir / name)}
    assert "datasets" in m["versions"] and "tiktoken" in m["versions"] and m["command"][:2] == ["gpt2-owt", "prepare"]
    assert verify_data_dir(owt_data_dir) == m


@pytest.mark.parametrize("name", ["train.bin", "val.docs.npy"])
def test_verification_catches_a_flipped_byte(name, owt_data_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(owt_data_dir, copy)
    path = copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"{name} has sha256"):
        verify_data_dir(copy)
    with pytest.raises(SystemExit) as exit_info:
        verify_main(["verify", "--data_dir", str(copy)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and name in err[0]


def test_verification_catches_size_and_count_mismatch(owt_data_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(owt_data_dir, copy)
    with open(copy / "val.bin", "ab") as f:
        f.write(b"\x00\x00")
    with pytest.raises(UserError, match="val.bin has 7318 bytes"):
        verify_data_dir(copy)
    shutil.copy(owt_data_dir / "val.bin", copy / "val.bin")
    manifest = manifest_of(copy)
    manifest["splits"]["train"]["tokens"] += 1
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="train.bin holds 33236 tokens, manifest says 33237"):
        verify_data_dir(copy, check_hashes=False)


@pytest.mark.parametrize("field, value, message", [
    ("split.seed", 2358, "train.rows.npy does not hold the rows that val_fraction 0.1 and seed 2358 give"),
    ("split.test_size", 0.05, "train.rows.npy does not hold the rows that val_fraction 0.05 and seed 2357 give"),
    ("tokenizer.vocab_size", 50304, "says tokenizer vocab_size 50304, but the files hold 50257"),
    ("tokenizer.dtype", "int32", "says tokenizer dtype 'int32', but the files hold 'uint16'"),
    ("tokenizer.eot_token_id", 0, "says tokenizer eot_token_id 0, but the files hold 50256"),
    ("source.documents", 36, "says source documents 36, but the splits hold 37"),
])
def test_verification_recomputes_edited_manifest_fields(field, value, message, owt_data_dir, tmp_path):
    """Sizes and hashes stay right after such an edit: only recomputing the field from the files catches it."""
    copy = tmp_path / "copy"
    shutil.copytree(owt_data_dir, copy)
    manifest = manifest_of(copy)
    section, key = field.split(".")
    manifest[section][key] = value
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=re.escape(message)):
        verify_data_dir(copy, check_hashes=False)


def test_verification_checks_document_ends(owt_data_dir, tmp_path):
    """A train.bin rewritten consistently (sizes and sha256 updated) is still caught if a document lost its EOT."""
    from gpt2_owt.core.records import sha256_file

    copy = tmp_path / "copy"
    shutil.copytree(owt_data_dir, copy)
    for position, value, message in [(int(open_split(copy, "train").doc_offsets[1]) - 1, 11, "ends with EOT")]:
        tokens = np.fromfile(owt_data_dir / "train.bin", dtype=np.uint16)
        tokens[position] = value
        tokens.tofile(copy / "train.bin")
        manifest = manifest_of(copy)
        manifest["files"]["train.bin"]["sha256"] = sha256_file(copy / "train.bin")
        (copy / MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(UserError, match=message):
            verify_data_dir(copy)


def test_manifest_that_is_a_json_list_is_one_error_line(owt_data_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(owt_data_dir, copy)
    (copy / MANIFEST).write_text(json.dumps([manifest_of(copy)]))
    with pytest.raises(SystemExit) as exit_info:
        verify_main(["verify", "--data_dir", str(copy)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {copy / MANIFEST} holds a JSON list, not a manifest object: {copy} is not a data_dir made by "
        f"`gpt2-owt prepare`"]


# ---------------------------------------------------------------------------------------------------------------
# The OpenWebText source: pinned spec, completeness guard, script repos
# ---------------------------------------------------------------------------------------------------------------


def test_default_source_is_pinned_openwebtext_parquet():
    src = prepare_data.resolve_source(prepare_data.PrepareArgs(output_dir="x"))
    assert src.dataset == "Skylion007/openwebtext" and src.revision == "963532436460638ab26b7633e23776e6c7e37d59"
    assert src.load_path == "parquet"
    assert src.load_data_files == ["hf://datasets/Skylion007/openwebtext@963532436460638ab26b7633e23776e6c7e37d59"
                                   "/data/train-*-of-00093.parquet"]
    assert src.expected_documents == 8_013_769
    pr = prepare_data.resolve_source(prepare_data.PrepareArgs(output_dir="x", revision="refs/pr/20",
                                                              data_files=["data/*.parquet"]))
    assert pr.load_data_files == ["hf://datasets/Skylion007/openwebtext@refs%2Fpr%2F20/data/*.parquet"]


@pytest.mark.parametrize("streaming", [False, True])
def test_completeness_guard(streaming, parquet_source, tmp_path, monkeypatch, capsys):
    """A local parquet copy stands in for the Hub corpus; the guard is keyed by source id like OpenWebText's."""
    flags = ["--dataset", str(parquet_source), "--data_files", "data/*.parquet", "--val_fraction", "0.1",
             "--num_proc", "1", "--cache_dir", str(tmp_path / "cache")] + (["--streaming"] if streaming else [])
    monkeypatch.setattr(prepare_source, "EXPECTED_DOCUMENTS", {str(parquet_source): 40})
    with pytest.raises(SystemExit) as exit_info:
        run([*flags, "--output_dir", str(tmp_path / "refused")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "yielded 37 documents" in err[-1] and "40" in err[-1]
    assert "--allow_partial" in err[-1]
    assert not (tmp_path / "refused").exists() and leftovers(tmp_path) == []

    out = run([*flags, "--allow_partial", "--output_dir", str(tmp_path / "partial")])
    source = manifest_of(out)["source"]
    assert (source["allow_partial"], source["complete"], source["expected_documents"], source["documents"]) == (
        True, False, 40, 37)

    monkeypatch.setattr(prepare_source, "EXPECTED_DOCUMENTS", {str(parquet_source): 37})
    out = run([*flags, "--output_dir", str(tmp_path / "complete")])
    assert manifest_of(out)["source"]["complete"] is True


def test_script_based_repo_gives_clear_error(tmp_path, capsys):
    repo = tmp_path / "openwebtext"
    repo.mkdir()
    (repo / "openwebtext.py").write_text("import datasets\n")
    with pytest.raises(SystemExit) as exit_info:
        run(["--dataset", str(repo), "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "c")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()  # status lines ("loading ..."), then the one error line
    assert [line for line in err if line.startswith("error:")] == err[-1:] and "Traceback" not in "".join(err)
    assert "script-based" in err[-1] and "--data_files" in err[-1] and "parquet" in err[-1]
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------------
# Bad inputs: one error line, exit 2, nothing in --output_dir
# ---------------------------------------------------------------------------------------------------------------


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


BAD_INPUTS = {
    "missing path": (lambda d: ["--dataset", "json", "--data_files", str(d / "nope" / "*.jsonl")], "no file matches"),
    "missing dataset folder": (lambda d: ["--dataset", str(d / "nope")], "not found"),
    "no such column": (lambda d: ["--dataset", "json", "--data_files",
                                  str(write_jsonl(d / "a.jsonl", [{"body": "x"}, {"body": "y"}]))], "no column 'text'"),
    "non-string values": (lambda d: ["--dataset", "json", "--data_files",
                                     str(write_jsonl(d / "a.jsonl", [{"text": 1}, {"text": 2}]))], "not strings"),
    "null value": (lambda d: ["--dataset", "json", "--data_files",
                              str(write_jsonl(d / "a.jsonl", [{"text": "a"}, {"text": None}]))], "row 1"),
    "empty dataset": (lambda d: ["--dataset", "json", "--data_files", str(write_jsonl(d / "a.jsonl", []))],
                      "no documents"),
    "empty dataset, streaming": (lambda d: ["--dataset", "json", "--data_files", str(write_jsonl(d / "a.jsonl", [])),
                                            "--streaming"], "no documents"),
    "revision without Hub id": (lambda d: ["--dataset", "json", "--data_files", str(d), "--revision", "main"],
                                "Hub datasets only"),
    "unknown Hub file format": (lambda d: ["--dataset", "someone/corpus", "--data_files", "data/*.bin"],
                                "file format"),
    "Hub unreachable (tests run offline)": (lambda d: [], "cannot reach the Hugging Face Hub for Skylion007/openwebtext"),
    "val fraction 0": (lambda d: ["--dataset", "json", "--data_files", str(d), "--val_fraction", "0"], "(0, 1)"),
    "val fraction 1.5": (lambda d: ["--dataset", "json", "--data_files", str(d), "--val_fraction", "1.5"], "(0, 1)"),
    "no train document": (lambda d: ["--dataset", "json", "--data_files",
                                     str(write_jsonl(d / "a.jsonl", [{"text": "only one"}])), "--val_fraction", "0.5"],
                          "no training document"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_error_line_and_leaves_nothing(case, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    make_flags, message = BAD_INPUTS[case]
    out = tmp_path / "out" / "data"
    with pytest.raises(SystemExit) as exit_info:
        run([*make_flags(inputs), "--num_proc", "1", "--output_dir", str(out), "--cache_dir", str(tmp_path / "c")])
    assert exit_info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()
    assert not out.parent.exists() or leftovers(out.parent) == []


def test_output_dir_with_another_dataset_is_refused_unless_overwrite(owt_data_dir, sample_jsonl, tmp_path, capsys):
    out = tmp_path / "data"
    shutil.copytree(owt_data_dir, out)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    flags = ["--dataset", "json", "--data_files", str(sample_jsonl), "--val_fraction", "0.1", "--num_proc", "1",
             "--output_dir", str(out), "--cache_dir", str(tmp_path / "cache")]
    with pytest.raises(SystemExit) as exit_info:
        run([*flags, "--seed", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different dataset" in err[0] and "--overwrite" in err[0]
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()} == before

    run(flags)  # the same dataset again: verified, nothing rewritten
    assert "already holds this dataset" in capsys.readouterr().out
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()} == before

    run([*flags, "--seed", "1", "--overwrite"])
    assert manifest_of(out)["split"]["seed"] == 1 and verify_data_dir(out)["splits"]["val"]["documents"] == 4
    assert leftovers(tmp_path) == []

    (out / MANIFEST).unlink()  # a folder without manifest is not a finished data_dir
    with pytest.raises(SystemExit):
        run(flags)
    assert "no manifest.json" in capsys.readouterr().err


def test_interrupted_run_leaves_nothing_that_looks_complete(sample_jsonl, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_data, "gather_split", interrupted)
    with pytest.raises(SystemExit) as e:  # cli_main: Ctrl-C is one line and exit 130 (tests/test_signals.py: real ones)
        run(["--dataset", "json", "--data_files", str(sample_jsonl), "--num_proc", "1",
             "--output_dir", str(tmp_path / "data"), "--cache_dir", str(tmp_path / "cache")])
    assert e.value.code == 130
    assert not (tmp_path / "data").exists() and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------------------------
# The real entry points (subprocesses)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # two interpreter start-ups (`modeling` imports torch): ~10 s each here
def test_command_line_entry_points(owt_data_dir, tmp_path):
    import subprocess
    import sys

    bad = subprocess.run([sys.executable, "-m", "gpt2_owt.training.prepare_data", "--output-dir", str(tmp_path / "out"),
                          "--dataset", "json", "--data-files", "x.jsonl", "--val-fraction", "2"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --val_fraction must be in (0, 1), got 2.0"
    assert not (tmp_path / "out").exists()
    ok = subprocess.run([sys.executable, "-m", "gpt2_owt.training.manifest", "verify", "--data-dir", str(owt_data_dir)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith(f"ok: {owt_data_dir} matches its manifest"), ok.stderr



def _worker_stop_signals_are_default(_):
    import signal

    return all(signal.getsignal(sig) is signal.SIG_DFL for sig in (signal.SIGTERM, signal.SIGINT))


def _fail_on_three(x):
    if x == 3:
        raise ValueError("three")
    return x


@pytest.mark.slow
@pytest.mark.timeout(300)  # 200 pool cycles: 67 s alone on the loaded 2-core machine (load 17), >120 s in the suite
def test_tokenizer_workers_die_on_sigterm_whatever_the_parent_handler():
    """A SIGTERM handler that only sets a flag (as a trainer run earlier in the same process installs) must not reach
    the forked tokenizer workers, or Pool.terminate() waits for them forever (a CI hang, seen twice). Stress: 200 pool
    start/stop cycles under a flag-only parent handler, with a SIGTERM sent to every worker right after the start of
    some of them, and the error path (terminate) in others; the parent's own handler and mask come back unchanged."""
    import os
    import signal
    import threading

    caught = []
    flag_only = lambda signum, frame: caught.append(signum)  # noqa: E731
    previous = {sig: signal.signal(sig, flag_only) for sig in (signal.SIGTERM, signal.SIGINT)}
    mask_before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    try:
        for i in range(200):
            if i % 10 == 0:
                with pytest.raises(ValueError, match="three"):
                    list(prepare_tokenize.ordered_parallel_map(_fail_on_three, range(6), 2, lambda: None))
            else:
                got = list(prepare_tokenize.ordered_parallel_map(_worker_stop_signals_are_default, range(4), 2,
                                                             lambda: None))
                assert got == [True] * 4
        # A SIGTERM sent to the parent while it forks reaches its own handler: not lost, not fatal -- also when
        # another thread of the parent (tqdm's monitor, say) is the one the kernel delivers it to.
        with prepare_tokenize.forked_with_default_signals():
            os.kill(os.getpid(), signal.SIGTERM)
        other_thread_done = threading.Event()
        other_thread = threading.Thread(target=other_thread_done.wait, daemon=True)
        other_thread.start()
        with prepare_tokenize.forked_with_default_signals():
            os.kill(os.getpid(), signal.SIGTERM)
        other_thread_done.set()
        other_thread.join(timeout=10)
        assert caught == [signal.SIGTERM] * 2
        assert signal.getsignal(signal.SIGTERM) is flag_only
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask_before
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@pytest.mark.timeout(60)
def test_tokenizer_pool_terminates_when_the_consumer_stops_early():
    """A consumer that stops reading (an error downstream) closes the generator: the pool is terminated, no hang."""
    gen = prepare_tokenize.ordered_parallel_map(_worker_stop_signals_are_default, range(100), 2, lambda: None)
    assert next(gen) is True
    gen.close()


def _die(_):
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def _sleep(seconds):
    import time

    time.sleep(seconds)
    return seconds


@pytest.mark.timeout(60)
def test_a_dead_tokenizer_worker_is_an_error_not_a_hang():
    """A worker killed mid-task (the OOM killer) never returns its result: the bounded wait notices the death."""
    with pytest.raises(UserError, match=r"a tokenizer worker process died \(pid \d+: killed by SIGKILL"):
        list(prepare_tokenize.ordered_parallel_map(_die, range(4), 2, lambda: None))


@pytest.mark.timeout(60)
def test_a_stuck_tokenizer_batch_is_an_error_after_the_bound():
    with pytest.raises(UserError, match="a tokenizer batch took longer than 2 s"):
        list(prepare_tokenize.ordered_parallel_map(_sleep, [0, 30], 2, lambda: None, timeout_s=2))


def test_status_is_logged_and_quiet_leaves_only_the_result(sample_jsonl, tmp_path, capsys):
    flags = ["--dataset", "json", "--data_files", str(sample_jsonl), "--val_fraction", "0.1", "--num_proc", "1",
             "--cache_dir", str(tmp_path / "cache")]
    run([*flags, "--output_dir", str(tmp_path / "a")])
    out, err = capsys.readouterr()
    assert out == f"wrote {tmp_path / 'a'} (train: 33 docs / 33,236 tokens, val: 4 docs / 3,658 tokens)\n"
    assert "loading json (Arrow cache)" in err and "tokenized 37 documents into 36,894 tokens" in err
    run([*flags, "--output_dir", str(tmp_path / "b"), "--quiet"])
    out, err = capsys.readouterr()
    assert out == f"wrote {tmp_path / 'b'} (train: 33 docs / 33,236 tokens, val: 4 docs / 3,658 tokens)\n"
    assert err == ""  # no status, no progress bars (ours or datasets')
    run([*flags, "--output_dir", str(tmp_path / "c"), "--verbose"])
    assert "load_dataset('json'" in capsys.readouterr().err
