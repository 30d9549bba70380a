"""Pass 1 of prepare_data: tokenize documents in source order in worker processes, to two temp files.

Each document becomes tiktoken GPT-2 `encode_ordinary(text) + [EOT]`; ids go (uint16) to a token file, per-document
lengths (int64) to a length file, both in source row order. The pool is built to never hang:
  * workers are forked with default SIGTERM/SIGINT, race-free (`forked_with_default_signals`), so terminate() works
    whatever handler the parent process has;
  * after the last result the pool is closed and joined (workers exit on their own); terminate() only on an error;
  * no wait is unbounded: a result is awaited in short polls, between which a dead worker (killed by the OOM killer,
    a signal, a crash) turns into an error, and one batch taking longer than TASK_TIMEOUT_S is an error too.
"""

import contextlib
import multiprocessing
import signal
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gpt2_owt.core.errors import UserError
from gpt2_owt.modeling.tokenizer import EOT_TOKEN_ID, tiktoken_encoding
from gpt2_owt.training.data_dir import TOKEN_DTYPE

# One batch (1024 OpenWebText documents, ~1.1M tokens) takes ~1 s on one core of the 2-core test machine; an hour
# is far beyond any real batch, yet bounds a worker that is alive but stuck.
TASK_TIMEOUT_S = 3600.0
POLL_S = 1.0  # how often a waiting parent checks that every worker is still alive

_ENCODING = None


def init_encoder():
    global _ENCODING
    if _ENCODING is None:  # built once in the parent: forked workers inherit it instead of rebuilding it
        _ENCODING = tiktoken_encoding()


def encode_documents(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """ids (uint16, `encode_ordinary(doc) + [EOT]` back to back) and per-document token counts of a batch."""
    init_encoder()
    docs = [_ENCODING.encode_ordinary(text) for text in texts]
    lengths = np.fromiter((len(d) + 1 for d in docs), dtype=np.int64, count=len(docs))
    ids = np.empty(int(lengths.sum()), dtype=TOKEN_DTYPE)
    end = 0
    for d in docs:
        ids[end:end + len(d)] = d
        end += len(d)
        ids[end] = EOT_TOKEN_ID
        end += 1
    return ids, lengths


# ---------------------------------------------------------------------------------------------------------------
# The worker pool
# ---------------------------------------------------------------------------------------------------------------

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _worker_init(initializer):
    # Forked with SIGTERM/SIGINT blocked (see forked_with_default_signals), so nothing can be delivered before the
    # default dispositions are back; a signal that arrived during start-up stays pending and acts (exit) on unblock.
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    initializer()


@contextlib.contextmanager
def forked_with_default_signals():
    """Fork inside this block to give the children default SIGTERM/SIGINT dispositions, race-free.

    Forked children inherit the parent's Python signal handlers. A handler that only sets a flag (a trainer run
    earlier in the same process, a notebook) makes a child ignore SIGTERM, and Pool.terminate() then waits for it
    forever. Resetting the handler in the child's initializer alone leaves a window between fork and reset, so the
    forking thread blocks both signals here: children start with them blocked and reset them in `_worker_init`
    before unblocking. The parent's dispositions are never changed (setting SIG_DFL in the parent, even with the
    signals blocked, would let another thread of it -- tqdm's monitor, say -- take a SIGTERM and die), and a signal
    sent to the parent meanwhile reaches its own handler.
    """
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)


def await_result(result, workers: list, timeout_s: float):
    """`result.get()`, bounded: raise if a worker has died (its task would never complete) or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return result.get(timeout=min(POLL_S, max(deadline - time.monotonic(), 0.0)))
        except multiprocessing.TimeoutError:  # not the builtin TimeoutError
            pass
        dead = [w for w in workers if w.exitcode is not None]
        if dead:
            codes = ", ".join(f"pid {w.pid}: " + (f"killed by {signal.Signals(-w.exitcode).name}"
                                                 if w.exitcode < 0 else f"exit code {w.exitcode}") for w in dead)
            raise UserError(f"a tokenizer worker process died ({codes}); out of memory? retry with a smaller "
                            f"--num_proc or --batch_size")
        if time.monotonic() >= deadline:
            raise UserError(f"a tokenizer batch took longer than {timeout_s:.0f} s (TASK_TIMEOUT_S in "
                            f"training/prepare/tokenize.py): a stuck worker; retry with a smaller --batch_size")


def ordered_parallel_map(fn, items, num_proc: int, initializer, timeout_s: float = TASK_TIMEOUT_S):
    """fn over items in `num_proc` processes, results in input order, at most 2*num_proc items in flight.

    Pool.imap would do the ordering, but its feeder thread drains the input iterator as fast as it can (no
    backpressure): with a 40 GB corpus it would pull the whole corpus into the task queue. After the last result
    the pool is closed and joined (workers exit on their own); it is terminated only on an error or an early exit.
    Every wait for a result is bounded (`await_result`).
    """
    initializer()
    if num_proc <= 1:
        yield from map(fn, items)
        return
    others = set(multiprocessing.active_children())
    with forked_with_default_signals():
        pool = multiprocessing.get_context("fork").Pool(num_proc, initializer=_worker_init, initargs=(initializer,))
    # The pool's own processes (Pool starts them all in its constructor); it would replace a dead one silently,
    # so these objects are what tells us one died.
    workers = [p for p in multiprocessing.active_children() if p not in others]
    finished = False
    try:
        pending = deque()
        for item in items:
            pending.append(pool.apply_async(fn, (item,)))
            if len(pending) >= 2 * num_proc:
                yield await_result(pending.popleft(), workers, timeout_s)
        while pending:
            yield await_result(pending.popleft(), workers, timeout_s)
        finished = True
    finally:
        if finished:
            pool.close()  # idle workers take the stop sentinel and exit
        else:
            pool.terminate()  # SIGTERM at its default disposition: they exit
        pool.join()


# ---------------------------------------------------------------------------------------------------------------
# Tokenizing a source
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class SourceTokens:
    tokens_path: Path  # uint16 ids of all documents in source order
    lengths_path: Path  # int64 tokens per document, source order
    documents: int
    tokens: int


def tokenize_source(batches, out_dir: Path, num_proc: int, total: int | None, progress: bool = True) -> SourceTokens:
    """Tokenize `batches` (lists of document strings, in source order) into temp files in `out_dir`."""
    tokens_path, lengths_path = out_dir / "source.tokens.tmp", out_dir / "source.lengths.tmp"
    documents = tokens = 0
    started = time.perf_counter()
    bar = tqdm(total=total, desc="tokenize", unit="doc", unit_scale=True, dynamic_ncols=True, mininterval=1.0,
               disable=not progress)
    with open(tokens_path, "wb") as f_tokens, open(lengths_path, "wb") as f_lengths, bar:
        for ids, lengths in ordered_parallel_map(encode_documents, batches, num_proc, init_encoder):
            ids.tofile(f_tokens)
            lengths.tofile(f_lengths)
            documents += len(lengths)
            tokens += len(ids)
            bar.update(len(lengths))
            rate = tokens / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix_str(f"{tokens / 1e6:,.1f}M tokens, {rate / 1e6:.2f}M tok/s", refresh=False)
    return SourceTokens(tokens_path, lengths_path, documents, tokens)
