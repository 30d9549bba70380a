"""The GPT-2 byte-level BPE tokenizer shipped inside the package (`modeling/tokenizer/`).

Files are OpenAI's original GPT-2 vocabulary and merges (see `modeling/tokenizer/LICENSE-NOTICE.md`). Every load
checks their SHA-256 against the values recorded here, so a damaged or edited copy fails loudly instead of
silently producing different token ids. `tokenizer_fingerprint()` is the one hash other stages record (data
manifests, checkpoints) to prove they used this tokenizer. `encode`/`decode`: text <-> ids exactly as the data
pipeline encoded the training documents.
"""

import functools
import hashlib
import shutil
from pathlib import Path

import numpy as np

from gpt2_owt.core.errors import UserError
from gpt2_owt.core.records import sha256_file

TOKENIZER_DIR = Path(__file__).parent / "tokenizer"
EOT_TOKEN_ID = 50256
VOCAB_SIZE = 50257

TOKENIZER_SHA256 = {
    "merges.txt": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "tokenizer.json": "311f7262f89ffe8757683fda3c081a5cac5a885dc311264791a17d2a18499a4f",
    "tokenizer_config.json": "31dd8c6bf9a01e8a74d22734e3512ca8e7d43fbdcc934e80405505fd0f0e4e5d",
    "vocab.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
TOKENIZER_FILES = tuple(TOKENIZER_SHA256)  # what a from_pretrained folder needs besides the model files


def verify_tokenizer_files(directory: str | Path = TOKENIZER_DIR) -> None:
    """Raise UserError unless every tokenizer file in `directory` has its recorded SHA-256."""
    directory = Path(directory)
    for name, expected in TOKENIZER_SHA256.items():
        path = directory / name
        if not path.is_file():
            raise UserError(f"tokenizer file missing: {path}")
        actual = sha256_file(path)
        if actual != expected:
            raise UserError(f"tokenizer file {path} has sha256 {actual}, expected {expected} (damaged or edited copy)")


def copy_tokenizer_files(destination: str | Path) -> None:
    """Copy the shipped tokenizer files into a `from_pretrained` folder (byte-identical, so hashes still match)."""
    for name in TOKENIZER_FILES:
        shutil.copyfile(TOKENIZER_DIR / name, Path(destination) / name)


def tokenizer_fingerprint() -> str:
    """One SHA-256 naming this exact tokenizer: the hash of its sorted `name sha256` lines."""
    lines = "".join(f"{name} {digest}\n" for name, digest in sorted(TOKENIZER_SHA256.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def load_tokenizer(directory: str | Path = TOKENIZER_DIR):
    """The shipped GPT-2 tokenizer as a `GPT2TokenizerFast`, after checking file hashes.

    Loaded with `from_pretrained(dir)`: in transformers 5.x `GPT2TokenizerFast(vocab_file=..., merges_file=...)`
    silently builds an empty tokenizer.
    """
    from transformers import AutoTokenizer

    verify_tokenizer_files(directory)
    return AutoTokenizer.from_pretrained(str(directory))


def tiktoken_encoding():
    """The same tokenizer as a tiktoken `Encoding`, built offline from the shipped vocab.json/merges.txt.

    tiktoken encodes ~6x faster than `tokenizers` on one core; the data pipeline uses it for bulk preparation and
    its ids are tested identical to `load_tokenizer()`'s. Same construction as tiktoken's own `gpt2` encoding.
    """
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(TOKENIZER_DIR / "merges.txt"),
        encoder_json_file=str(TOKENIZER_DIR / "vocab.json"),
        vocab_bpe_hash=TOKENIZER_SHA256["merges.txt"],
        encoder_json_hash=TOKENIZER_SHA256["vocab.json"],
    )
    return tiktoken.Encoding(
        name="gpt2-owt", pat_str=r50k_pat_str, mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": EOT_TOKEN_ID}, explicit_n_vocab=VOCAB_SIZE,
    )


# Text <-> token ids exactly as the data pipeline encoded the training documents: tiktoken GPT-2 `encode_ordinary`
# (no EOT added), so what a query encodes is what train.bin holds.
@functools.cache
def encoding():
    return tiktoken_encoding()  # built from the shipped vocab once per process


def encode(text: str) -> list[int]:
    return encoding().encode_ordinary(text)


def decode(ids) -> str:
    # one conversion of the whole array, not one per token
    return encoding().decode(np.asarray(ids, dtype=np.int64).tolist(), errors="replace")
