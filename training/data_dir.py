"""The prepared-data folder (`data_dir/`): its layout, written down once, and the reader every stage uses.

    data_dir/
      manifest.json     what made this folder and hashes of every file below (training/manifest.py writes/checks it)
      train.bin         uint16 GPT-2 token ids, documents back to back, each followed by EOT 50256 (nanoGPT format)
      val.bin
      train.docs.npy    int64 [n_docs + 1]: token offset where each document starts; the last entry = len(train.bin)
      val.docs.npy
      train.rows.npy    int64 [n_docs]: the row of each document in the source dataset (before the split)
      val.rows.npy

Token files are read by memmap: nothing is loaded whole, so a 9B-token train.bin opens instantly.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modeling import UserError

SPLITS = ("train", "val")
TOKEN_DTYPE = np.uint16
MANIFEST = "manifest.json"


def tokens_file(split: str) -> str:
    return f"{split}.bin"


def doc_offsets_file(split: str) -> str:
    return f"{split}.docs.npy"


def doc_rows_file(split: str) -> str:
    return f"{split}.rows.npy"


def split_files(split: str) -> list[str]:
    return [tokens_file(split), doc_offsets_file(split), doc_rows_file(split)]


def all_files() -> list[str]:
    """Every file a complete data_dir holds besides the manifest."""
    return [name for split in SPLITS for name in split_files(split)]


@dataclass
class TokenSplit:
    """One split of a data_dir: the token memmap and its document index."""

    tokens: np.ndarray  # uint16 memmap
    doc_offsets: np.ndarray  # int64 [n_docs + 1]
    doc_rows: np.ndarray  # int64 [n_docs]

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def num_documents(self) -> int:
        return int(self.doc_rows.shape[0])

    def document_index(self, positions) -> np.ndarray:
        """Index (within this split) of the document holding each token position."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= self.num_tokens):
            raise IndexError(f"token position out of range [0, {self.num_tokens})")
        return np.searchsorted(self.doc_offsets, positions, side="right") - 1

    def source_row(self, positions) -> np.ndarray:
        """Source-dataset row of the document holding each token position."""
        return self.doc_rows[self.document_index(positions)]


def open_split(data_dir: str | Path, split: str) -> TokenSplit:
    """Open `split` of a prepared data_dir read-only; a missing file is a UserError."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {SPLITS}")
    data_dir = Path(data_dir)
    paths = [data_dir / name for name in split_files(split)]
    for path in paths:
        if not path.is_file():
            raise UserError(f"{path} not found: is {data_dir} a data_dir made by `python -m training.prepare_data`?")
    tokens_path, offsets_path, rows_path = paths
    tokens = np.memmap(tokens_path, dtype=TOKEN_DTYPE, mode="r") if tokens_path.stat().st_size else np.zeros(0, TOKEN_DTYPE)
    offsets = np.load(offsets_path, mmap_mode="r")
    rows = np.load(rows_path, mmap_mode="r")
    if offsets.shape[0] != rows.shape[0] + 1 or int(offsets[-1]) != tokens.shape[0]:
        raise UserError(f"{data_dir}: document index of split {split!r} does not match {tokens_path.name}")
    return TokenSplit(tokens=tokens, doc_offsets=offsets, doc_rows=rows)
