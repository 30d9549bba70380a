"""Score windows with a causal LM in batches: summed log-probability of the scored targets and greedy checks.

Batching: windows are sorted longest first (like lm-evaluation-harness, so the first batch is the widest and
padding is small), right-padded, and read with explicit position ids 0..n-1 and no attention mask: with right
padding, causal attention alone keeps every pad token out of every real token's view, so a window's numbers do not
depend on what it is batched with (tests check batch sizes 1, 3, 16 against unbatched full-logits scoring). Only the scored positions go through the output layer: for
LAMBADA that is 1-3 positions of ~80, and a [batch, 1024, 50257] float32 logits tensor is never built.
Log-probabilities are computed in float32 whatever the model dtype (the harness's log_softmax, see
_head_logprobs); per-window sums are accumulated in float64.
"""

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .windows import Window

# Scored positions per output-layer call. Measured on this 2-core CPU (float32, 50,257 rows, d = 64..768): 256-1024
# rows are within ~15% of the best for every width; 2048 loses up to 25% at d=64 (the logits block leaves the
# cache), 32 loses 2x at d=768 (the weight matrix is re-read for every few rows). 512 rows = a 103 MB block.
HEAD_CHUNK = 512


@dataclass(frozen=True)
class WindowScore:
    logprob: float  # sum over the scored positions of log p(target | inputs so far), natural log
    greedy: bool | None  # every scored target was the argmax (None: not computed, score_windows(greedy=False))
    last_correct: bool | None  # the last scored target was the argmax (None: not computed)


def _as_tensor(ids) -> torch.Tensor:
    return torch.from_numpy(np.asarray(ids, dtype=np.int64))


def head_logits(head, hidden: torch.Tensor, block: list) -> torch.Tensor:
    """float32 logits of the output layer `head` at `hidden` (rows: at most HEAD_CHUNK positions), written into one
    block reused across calls (`block`: a list the caller keeps, empty at first).

    A fresh 100 MB logits tensor per call costs more page faults than arithmetic on CPU (measured: log_softmax into
    an existing block 38 us/row vs 90 us/row allocating; same bits). A float32 bias-free Linear head (GPT-2's)
    writes its matmul straight into the block; any other head is called."""
    weight = getattr(head, "weight", None)
    rows = hidden.shape[0]
    if isinstance(head, torch.nn.Linear) and head.bias is None and weight.dtype == hidden.dtype == torch.float32:
        if not block or block[0].shape[0] < rows or block[0].device != hidden.device:
            block[:] = [torch.empty(max(rows, HEAD_CHUNK), weight.shape[0], device=hidden.device)]
        return torch.mm(hidden, weight.t(), out=block[0][:rows])
    return head(hidden).float()


def _head_logprobs(head, hidden: torch.Tensor, block: list) -> torch.Tensor:
    """float32 log_softmax of the output layer at `hidden` (rows = scored positions), in place in `head_logits`'
    block: lm-evaluation-harness's own computation (F.log_softmax of the logits, argmax and the pick done on its
    output)."""
    logits = head_logits(head, hidden, block)
    return torch.log_softmax(logits, dim=-1, out=logits)


def _score_positions(head, hidden: torch.Tensor, targets: torch.Tensor,
                     greedy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(target) and (if `greedy`) argmax == target for each row of `hidden` (already selected scored positions).
    The argmax pass runs only for tasks that report greedy accuracy (LAMBADA), not for perplexities."""
    logprobs, correct, block = [], [], []
    for start in range(0, hidden.shape[0], HEAD_CHUNK):
        logp = _head_logprobs(head, hidden[start:start + HEAD_CHUNK], block)
        tgt = targets[start:start + HEAD_CHUNK]
        logprobs.append(logp.gather(-1, tgt[:, None]).squeeze(-1))
        if greedy:
            correct.append(logp.argmax(dim=-1) == tgt)
    return torch.cat(logprobs).double().cpu(), torch.cat(correct).cpu() if greedy else None


def _score_batch(model, batch: list[Window], pad_token_id: int, greedy: bool) -> list[WindowScore]:
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
    logprob, correct = _score_positions(model.get_output_embeddings(), selected, torch.cat(targets).to(device), greedy)
    scores, offset = [], 0
    for w in batch:
        lp = logprob[offset:offset + w.num_scored]
        ok = correct[offset:offset + w.num_scored] if greedy else None
        every, last = (bool(ok.all()), bool(ok[-1])) if greedy else (None, None)
        scores.append(WindowScore(float(lp.sum()), greedy=every, last_correct=last))
        offset += w.num_scored
    return scores


def score_windows(model, windows: list[Window], batch_size: int, pad_token_id: int = 0,
                  desc: str = "scoring", greedy: bool = True, progress: bool = True) -> list[WindowScore]:
    """Score every window; results come back in the order of `windows`. `greedy=False` skips the argmax checks;
    `progress=False` hides the bar (a caller scoring a few windows per checkpoint shows its own)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].input_ids))
    scores: list[WindowScore | None] = [None] * len(windows)
    with torch.inference_mode(), tqdm(total=len(windows), desc=desc, unit="window", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            for i, score in zip(idx, _score_batch(model, [windows[i] for i in idx], pad_token_id, greedy)):
                scores[i] = score
            bar.update(len(idx))
    return scores
