"""Evaluation data: the shipped copies in `eval/data/` (default, offline) or the Hugging Face Hub datasets.

Both sources yield the same Python objects, so every task reads its data through the three loaders below:

- `wikitext_pages()`  the WikiText-2 raw test set as the 62 documents of `EleutherAI/wikitext_document_level`
                      (config `wikitext-2-raw-v1`), the dataset lm-evaluation-harness's task `wikitext` reads.
- `wikitext_rows()`   the same file as the 4,358 rows of `Salesforce/wikitext` (`wikitext-2-raw-v1`), the dataset of
                      the transformers guide "Perplexity of fixed-length models".
- `lambada_texts()`   the 5,153 passages of OpenAI's LAMBADA test set (`EleutherAI/lambada_openai`, config `default`).

Shipped files (licences in `eval/data/README.md`): `wiki.test.raw.gz` is the original `wiki.test.raw`
(sha256 173c87a5...), `lambada_test.jsonl.gz` is OpenAI's `lambada_test.jsonl` (sha256 4aa8d02c...).
"""

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from gpt2_owt.core.errors import UserError

DATA_DIR = Path(__file__).parent / "data"
WIKITEXT_FILE = DATA_DIR / "wiki.test.raw.gz"
LAMBADA_FILE = DATA_DIR / "lambada_test.jsonl.gz"
SOURCES = ("shipped", "hub")

HUB_WIKITEXT_DOCUMENTS = ("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1")
HUB_WIKITEXT_ROWS = ("Salesforce/wikitext", "wikitext-2-raw-v1")
HUB_LAMBADA = ("EleutherAI/lambada_openai", "default")


@dataclass
class TextData:
    """The items a task evaluates, where they came from, and one hash naming their content."""

    items: list[str]
    source: str  # "shipped:<file>" or "hub:<dataset id>/<config>"

    @property
    def sha256(self) -> str:
        """sha256 of the items joined by "\\n": the same for the shipped copy and the Hub dataset."""
        return hashlib.sha256("\n".join(self.items).encode("utf-8")).hexdigest()

    def describe(self) -> dict:
        return {"source": self.source, "sha256": self.sha256}


def _read_shipped(path: Path) -> str:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        return f.read()


def _load_hub(dataset_id: str, config: str, column: str) -> list[str]:
    from datasets import load_dataset

    try:
        return list(load_dataset(dataset_id, config, split="test")[column])
    except Exception as e:  # offline, unknown id, gated...: one clear line instead of a long traceback
        raise UserError(f"cannot load {dataset_id} ({config}) from the Hub: {str(e).strip().splitlines()[0]}") from None


def _is_title(line: str) -> bool:
    """An article title line (` = Title = `) as `EleutherAI/wikitext_document_level` detects it."""
    line = line.replace("= = =", "===").replace("= =", "==").strip()
    return line.startswith("= ") and line.endswith(" =")


def split_wikitext_pages(raw: str) -> list[str]:
    """Split a WikiText raw file into articles exactly as `EleutherAI/wikitext_document_level` does.

    A page is every line from one title line up to the next, joined with "\\n" (the last page keeps the file's
    final newline). The file starts with one blank line (" ") before the first title; that whitespace-only
    "page" is dropped, so `" \\n" + "\\n".join(pages)` gives back the file byte for byte.
    """
    pages, lines = [], []
    for line in raw.split("\n"):
        if _is_title(line):
            page = "\n".join(lines)
            if page.strip():
                pages.append(page)
            lines = []
        lines.append(line)
    page = "\n".join(lines)
    if page.strip():
        pages.append(page)
    return pages


def wikitext_rows_from_raw(raw: str) -> list[str]:
    """The rows of the Hub's `wikitext` dataset: one per line, newline kept, whitespace-only lines as ""."""
    return [line if line.strip() else "" for line in raw.splitlines(keepends=True)]


def wikitext_pages(source: str = "shipped") -> TextData:
    if source == "hub":
        return TextData(_load_hub(*HUB_WIKITEXT_DOCUMENTS, column="page"), "hub:" + "/".join(HUB_WIKITEXT_DOCUMENTS))
    return TextData(split_wikitext_pages(_read_shipped(WIKITEXT_FILE)), f"shipped:{WIKITEXT_FILE.name}")


def wikitext_rows(source: str = "shipped") -> TextData:
    if source == "hub":
        return TextData(_load_hub(*HUB_WIKITEXT_ROWS, column="text"), "hub:" + "/".join(HUB_WIKITEXT_ROWS))
    return TextData(wikitext_rows_from_raw(_read_shipped(WIKITEXT_FILE)), f"shipped:{WIKITEXT_FILE.name}")


def lambada_texts(source: str = "shipped") -> TextData:
    if source == "hub":
        return TextData(_load_hub(*HUB_LAMBADA, column="text"), "hub:" + "/".join(HUB_LAMBADA))
    lines = _read_shipped(LAMBADA_FILE).splitlines()
    return TextData([json.loads(line)["text"] for line in lines if line.strip()], f"shipped:{LAMBADA_FILE.name}")
