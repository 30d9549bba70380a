import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from gpt2_owt.core.errors import UserError
from gpt2_owt.modeling.tokenizer import (TOKENIZER_DIR, load_tokenizer, tiktoken_encoding, tokenizer_fingerprint,
                                         verify_tokenizer_files)

KNOWN_IDS = {"Hello world": [15496, 995], "<|endoftext|>": [50256], " the": [262]}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.mark.parametrize("text,ids", KNOWN_IDS.items())
def test_known_ids(tokenizer, text, ids):
    assert tokenizer(text)["input_ids"] == ids
    assert tokenizer.decode(ids) == text


def test_auto_tokenizer_from_repo_folder():
    tok = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))
    assert len(tok) == 50257 and tok.eos_token_id == 50256
    assert tok("Hello world")["input_ids"] == [15496, 995]


def _assert_same_ids(tokenizer, encoding, text):
    hf = tokenizer(text, add_special_tokens=False)["input_ids"]
    tk = encoding.encode_ordinary(text)
    assert len(hf) == len(tk)
    assert hf == tk


def test_identical_to_reference_tiktoken_on_wikitext2_test(tokenizer, reference_tiktoken, original_files):
    text = (original_files / "wikitext-2-raw-v1" / "wiki.test.raw").read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    # line by line (as documents are tokenised) and as one string
    hf = tokenizer(lines, add_special_tokens=False)["input_ids"]
    assert hf == reference_tiktoken.encode_ordinary_batch(lines)
    _assert_same_ids(tokenizer, reference_tiktoken, text)


def test_identical_to_reference_tiktoken_on_owt_sample(tokenizer, reference_tiktoken, original_files, owt_documents):
    for doc in owt_documents:
        _assert_same_ids(tokenizer, reference_tiktoken, doc)
    concat = (original_files / "openwebtext-sample" / "owt_first100_docs_concat.txt").read_text(encoding="utf-8")
    _assert_same_ids(tokenizer, reference_tiktoken, concat)
    import json
    lines = (original_files / "openwebtext-sample" / "owt20p_lines_sample5001.jsonl").read_text(encoding="utf-8")
    texts = [json.loads(line)["text"] for line in lines.splitlines() if line.strip()]
    assert tokenizer(texts, add_special_tokens=False)["input_ids"] == reference_tiktoken.encode_ordinary_batch(texts)


def test_shipped_tiktoken_encoding_matches_reference(reference_tiktoken, owt_documents):
    enc = tiktoken_encoding()
    assert enc.n_vocab == 50257 and enc.eot_token == 50256
    for doc in owt_documents:
        assert enc.encode_ordinary(doc) == reference_tiktoken.encode_ordinary(doc)
    # special-token text inside a document is ordinary text, not EOT
    assert 50256 not in enc.encode_ordinary("a <|endoftext|> b")


def test_fingerprint_is_stable():
    assert len(tokenizer_fingerprint()) == 64
    assert tokenizer_fingerprint() == tokenizer_fingerprint()


def test_hash_mismatch_is_a_clear_error(tmp_path):
    copy = tmp_path / "tok"
    shutil.copytree(TOKENIZER_DIR, copy)
    verify_tokenizer_files(copy)
    merges = copy / "merges.txt"
    data = bytearray(merges.read_bytes())
    data[-2] ^= 1
    merges.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"merges.txt has sha256 .* expected"):
        load_tokenizer(copy)
    shutil.copy(TOKENIZER_DIR / "merges.txt", merges)
    (copy / "vocab.json").unlink()
    with pytest.raises(UserError, match="tokenizer file missing"):
        verify_tokenizer_files(copy)


@pytest.mark.slow
def test_loads_from_installed_non_editable_package(tmp_path):
    """Build a wheel-style install into a temp dir and load the tokenizer from there (package data shipped). Every
    module of the repository's package folders is installed under the one `gpt2_owt` namespace, nothing at the top."""
    repo = TOKENIZER_DIR.parents[1]
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(repo)],
        check=True,
    )
    modules = [p.relative_to(repo) for folder in ("core", "modeling", "training", "eval", "model_card", "tracing")
               for p in (repo / folder).rglob("*.py")] + [Path("cli.py"), Path("upload.py")]
    assert [m for m in modules if not (target / "gpt2_owt" / m).is_file()] == []
    assert sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info")) == ["bin", "gpt2_owt"]
    code = (
        "from gpt2_owt.modeling import tokenizer; import pathlib; "
        f"assert pathlib.Path(tokenizer.__file__).is_relative_to({str(target)!r}), tokenizer.__file__; "
        "t = tokenizer.load_tokenizer(); print(t('Hello world')['input_ids'])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[15496, 995]"
