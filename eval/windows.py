"""Turning token sequences into scoring windows, one function per evaluation protocol.

A `Window` is one model call's worth of work: the model reads `input_ids`, position i predicts `target_ids[i]`
(the token after `input_ids[i]`), and only the last `num_scored` positions count. Every task is "build windows,
score them (eval/scoring.py), aggregate (eval/metrics/)", so the protocols differ only in the functions below.
"""

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Window:
    input_ids: Sequence[int]
    target_ids: Sequence[int]  # same length as input_ids
    num_scored: int  # the last num_scored positions are scored

    def __post_init__(self):
        if len(self.input_ids) != len(self.target_ids) or not 1 <= self.num_scored <= len(self.input_ids):
            raise ValueError(f"bad window: {len(self.input_ids)} inputs, {len(self.target_ids)} targets, "
                             f"{self.num_scored} scored")


def loglikelihood_window(context: list[int], continuation: list[int], max_length: int) -> Window:
    """lm-evaluation-harness `HFLM._loglikelihood_tokens` (causal): score `continuation` after `context`.

    The model reads `(context + continuation)[-(max_length + 1):][:-1]`, i.e. the context is cut from the left so
    that the whole input fits, and the last `len(continuation)` positions are scored.
    """
    if not context or not continuation or len(continuation) > max_length:
        raise ValueError("context must be non-empty and 1 <= len(continuation) <= max_length")
    whole = (list(context) + list(continuation))[-(max_length + 1):]
    return Window(whole[:-1], whole[1:], len(continuation))


def rolling_windows(tokens: list[int], prefix_token: int, max_length: int) -> list[Window]:
    """lm-evaluation-harness `loglikelihood_rolling`: every token of a document scored exactly once.

    `utils.get_rolling_token_windows(context_len=1)` followed by `utils.make_disjoint_window`:
    the first window reads `[prefix] + t[:L-1]` and scores `t[:L]`; each later window scores the next <= L tokens
    `t[end-n:end]` reading `t[end-L-1:end-1]` (full context, right-aligned on the last scored token, so at least
    one earlier token is carried over).
    """
    if not tokens:
        return []
    first = min(max_length, len(tokens))
    pairs = [([prefix_token], tokens[:first])]
    predicted = first
    while predicted < len(tokens):
        n = min(len(tokens) - predicted, max_length)
        end = predicted + n
        pairs.append((tokens[end - max_length - 1:end - n], tokens[end - n:end]))
        predicted = end
    return [loglikelihood_window(context, continuation, max_length) for context, continuation in pairs]


def sliding_windows(tokens: list[int], max_length: int, stride: int) -> tuple[list[Window], list[int]]:
    """The transformers guide "Perplexity of fixed-length models" (strided sliding window over one sequence).

    Window k reads `tokens[k*stride : k*stride + L]`; its labels are -100 except the last `trg_len = end -
    prev_end` tokens (the ones no earlier window scored). Returns the windows and, per window, the guide's token
    count `num_loss_tokens = (labels != -100).sum() - 1`: the guide multiplies each window's mean loss by this
    number, which is one less than the tokens actually scored in every window after the first. We keep that
    accounting so our number is the guide's number. A window with no scored token (only possible as a 1-token
    last window) is skipped: the guide would add NaN.
    """
    if not 1 <= stride <= max_length:
        raise ValueError(f"stride must be in [1, max_length={max_length}], got {stride}")
    windows, loss_tokens = [], []
    prev_end = 0
    for begin in range(0, len(tokens), stride):
        end = min(begin + max_length, len(tokens))
        trg_len = end - prev_end
        ids = tokens[begin:end]
        scored = min(trg_len, len(ids) - 1)  # labels shift by one inside the model: ids[0] is never a target
        if scored > 0:
            windows.append(Window(ids[:-1], ids[1:], scored))
            loss_tokens.append(trg_len - 1)
        prev_end = end
        if end == len(tokens):
            break
    return windows, loss_tokens


def contiguous_windows(tokens: np.ndarray, max_length: int) -> list[Window]:
    """nanoGPT-style blocks over a token file: block k reads `tokens[kL : kL+L]` and predicts `tokens[kL+1 : kL+L+1]`.

    Each block is nanoGPT's `get_batch` pair (x, y) at a fixed offset instead of a random one, so every token
    after the first is a target exactly once and the mean loss is the expectation nanoGPT's `estimate_loss`
    samples. The last, shorter block is kept. Slices of a memmap stay lazy until scored.
    """
    windows = []
    for start in range(0, max(len(tokens) - 1, 0), max_length):
        stop = min(start + max_length, len(tokens) - 1)
        windows.append(Window(tokens[start:stop], tokens[start + 1:stop + 1], stop - start))
    return windows
