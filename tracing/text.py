"""Text <-> token ids exactly as the data pipeline encoded the training documents: tiktoken GPT-2
`encode_ordinary` (no EOT added), so what a query encodes is what train.bin holds."""

import functools

import numpy as np

from gpt2_owt.modeling.tokenizer import tiktoken_encoding


@functools.cache
def encoding():
    return tiktoken_encoding()  # built from the shipped vocab once per process


def encode(text: str) -> list[int]:
    return encoding().encode_ordinary(text)


def decode(ids) -> str:
    return encoding().decode(np.asarray(ids, dtype=np.int64).tolist(), errors="replace")  # one conversion, not per token
