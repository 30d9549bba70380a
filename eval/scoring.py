"""Score windows with a causal LM in batches: summed log-probability of the scored targets and greedy checks.

Batching: windows are sorted longest first (like lm-evaluation-harness, so the first batch is the widest and
padding is small), right-padded, and read with explicit position ids 0..n-1 and no attention mask: with right
padding, causal attention alone keeps every pad token out of every real token's view, so a window's numbers do not
depend on what it is batched with (tests check batch sizes 1, 3, 16 against unbatched full-logits scoring). Only the scored positions go through the output layer: for
LAMBADA that is 1-3 positions of ~80, and a [batch, 1024, 50257] float32 logits tensor is never built.
Log-probabilities are computed in float32 whatever the model dtype; per-window sums are accumulated in float64.
"""

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .windows import Window

HEAD_CHUNK = 2048  # scored positions per output-layer call: bounds the float32 logits block to ~400 MB at 50k vocab


@dataclass(frozen=True)
class WindowScore:
    logprob: float  # sum over the scored positions of log p(target | inputs so far), natural log
    greedy: bool  # every scored target was the argmax
    last_correct: bool  # the last scored target was the argmax


def _as_tensor(ids) -> torch.Tensor:
    return torch.from_numpy(np.asarray(ids, dtype=np.int64))


def _score_positions(head, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) and argmax == target for each row of `hidden` (already selected scored positions)."""
    logprobs, correct = [], []
    for start in range(0, hidden.shape[0], HEAD_CHUNK):
        logits = head(hidden[start:start + HEAD_CHUNK]).float()
        tgt = targets[start:start + HEAD_CHUNK]
        # log_softmax(x)[t] = x[t] - logsumexp(x), without materialising a second vocab-sized tensor
        logprobs.append(logits.gather(-1, tgt[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1))
        correct.append(logits.argmax(dim=-1) == tgt)
    return torch.cat(logprobs).double().cpu(), torch.cat(correct).cpu()


def _score_batch(model, batch: list[Window], pad_token_id: int) -> list[WindowScore]:
    device = model.device
    width = max(len(w.input_ids) for w in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    rows, cols, targets = [], [], []
    for r, w in enumerate(batch):
        n = len(w.input_ids)
        input_ids[r, :n] = _as_tensor(w.input_ids)
        rows.append(torch.full((w.num_scored,), r, dtype=torch.long))
        cols.append(torch.arange(n - w.num_scored, n))
        targets.append(_as_tensor(w.target_ids[n - w.num_scored:]))
    position_ids = torch.arange(width).expand(len(batch), width)
    # No attention mask: with right padding the causal mask already hides every pad from every real token, and
    # without a padding mask attention runs its fused causal kernel.
    hidden = model.base_model(input_ids=input_ids.to(device), position_ids=position_ids.to(device)).last_hidden_state
    selected = hidden[torch.cat(rows).to(device), torch.cat(cols).to(device)]
    logprob, correct = _score_positions(model.get_output_embeddings(), selected, torch.cat(targets).to(device))
    scores, offset = [], 0
    for w in batch:
        lp, ok = logprob[offset:offset + w.num_scored], correct[offset:offset + w.num_scored]
        scores.append(WindowScore(float(lp.sum()), bool(ok.all()), bool(ok[-1])))
        offset += w.num_scored
    return scores


def score_windows(model, windows: list[Window], batch_size: int, pad_token_id: int = 0,
                  desc: str = "scoring") -> list[WindowScore]:
    """Score every window; results come back in the order of `windows`."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].input_ids))
    scores: list[WindowScore | None] = [None] * len(windows)
    with torch.inference_mode(), tqdm(total=len(windows), desc=desc, unit="window") as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            for i, score in zip(idx, _score_batch(model, [windows[i] for i in idx], pad_token_id)):
                scores[i] = score
            bar.update(len(idx))
    return scores
