"""The four evaluation tasks: data -> windows -> scores -> metrics (local `evaluate` modules in eval/metrics/).

Each `run_<task>(setup)` returns the task's block of results.json:
{"metrics": {...}, "counts": {...}, "settings": {...}, "data": {"source", "sha256"}} (+ "notes" where a number
needs one). Definitions are lm-evaluation-harness 0.4.x (`wikitext`, `lambada_openai`), the transformers guide
(`wikitext_sliding`) and nanoGPT (`owt_val`); see each function.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from gpt2_owt.core.errors import UserError
from gpt2_owt.core.records import sha256_file

from . import data as eval_data
from .windows import Window, contiguous_windows, loglikelihood_window, rolling_windows, sliding_windows

if TYPE_CHECKING:
    from .scoring import WindowScore

METRICS_DIR = Path(__file__).parent / "metrics"


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's full definition (vocabulary, merges, normalisation, special tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = backend.to_str() if backend is not None else repr((type(tokenizer).__name__, tokenizer.get_vocab()))
    return hashlib.sha256(spec.encode("utf-8")).hexdigest()


class TokenCache:
    """Token ids by (tokenizer, texts): a checkpoint series tokenizes each task's texts once, not per checkpoint."""

    def __init__(self):
        self._ids: dict[tuple[str, str], list[list[int]]] = {}

    def encode(self, tokenizer, texts: list[str]) -> list[list[int]]:
        """`tokenizer.encode(text)` with its default special tokens (what HFLM.tok_encode does for GPT-2)."""
        if not texts:
            return []
        digest = hashlib.sha256("\0".join(texts).encode("utf-8"))
        digest.update(str(len(texts)).encode())
        key = (tokenizer_fingerprint(tokenizer), digest.hexdigest())
        if key not in self._ids:
            self._ids[key] = tokenizer(texts)["input_ids"]
        return self._ids[key]


@dataclass
class TaskSetup:
    """Everything a task needs, resolved once by the command."""

    model: object  # a transformers causal LM in eval mode, on its device
    tokenizer: object
    max_length: int
    batch_size: int
    stride: int = 512
    data_source: str = "shipped"
    data_dir: str | None = None
    limit: int | None = None  # at most N windows per task (quick runs, tests): EvalArgs.limit says how
    token_cache: TokenCache = field(default_factory=TokenCache)  # shared across a checkpoint series

    @property
    def prefix_token_id(self) -> int:
        """The harness's `HFLM.prefix_token_id`: BOS if the tokenizer has one, else EOS (GPT-2: 50256)."""
        tok = self.tokenizer
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.token_cache.encode(self.tokenizer, texts)

    def score(self, windows: list[Window], desc: str, greedy: bool = False) -> list[WindowScore]:
        """Scores of `windows`; `greedy=True` also checks argmax == target (only LAMBADA reports it)."""
        from .scoring import score_windows  # torch: with the first model scored, not with the task table

        return score_windows(self.model, windows, self.batch_size, desc=desc, greedy=greedy)


@cache
def load_metric(name: str):
    """One of our `evaluate` modules, loaded by path (works offline; never the Hub's metric scripts)."""
    import evaluate

    return evaluate.load(str(METRICS_DIR / name))


def _first(items: list, setup: TaskSetup, what: str) -> list:
    items = items[:setup.limit] if setup.limit is not None else items
    if not items:
        raise UserError(f"no {what} to evaluate (empty dataset{' or --limit 0' if setup.limit == 0 else ''})")
    return items


# ---------------------------------------------------------------------------------------------------- wikitext

def wikitext_detokenizer(page: str) -> str:
    """lm-evaluation-harness `tasks/wikitext/preprocess_wikitext.py::wikitext_detokenizer`, verbatim in effect."""
    string = page
    # contractions
    string = string.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    # number separators
    string = string.replace(" @-@ ", "-")
    string = string.replace(" @,@ ", ",")
    string = string.replace(" @.@ ", ".")
    # punctuation
    string = string.replace(" : ", ": ")
    string = string.replace(" ; ", "; ")
    string = string.replace(" . ", ". ")
    string = string.replace(" ! ", "! ")
    string = string.replace(" ? ", "? ")
    string = string.replace(" , ", ", ")
    # double brackets
    string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
    string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
    string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
    string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
    string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
    # miscellaneous
    string = string.replace("= = = =", "====")
    string = string.replace("= = =", "===")
    string = string.replace("= =", "==")
    string = string.replace(" " + chr(176) + " ", chr(176))
    string = string.replace(" \n", "\n")
    string = string.replace("\n ", "\n")
    string = string.replace(" N ", " 1 ")
    string = string.replace(" 's", "'s")
    return string


def count_words(page: str) -> int:
    """The harness's word count, on the original (not detokenised) page."""
    return len(re.split(r"\s+", page))


def run_wikitext(setup: TaskSetup) -> dict:
    """Harness task `wikitext` (v2.0): per-document `loglikelihood_rolling` of the detokenised page."""
    data = eval_data.wikitext_pages(setup.data_source)
    if not data.items or setup.limit == 0:
        raise UserError(f"no WikiText documents to evaluate (empty dataset{' or --limit 0' if setup.limit == 0 else ''})")
    token_lists = setup.encode([wikitext_detokenizer(page) for page in data.items])
    doc_windows = [rolling_windows(tokens, setup.prefix_token_id, setup.max_length) for tokens in token_lists]
    kept = len(doc_windows)
    if setup.limit is not None:  # --limit counts windows in every task: whole documents while they fit, at least one
        total = np.cumsum([len(w) for w in doc_windows])
        kept = max(1, int(np.searchsorted(total, setup.limit, side="right")))
    pages, token_lists = data.items[:kept], token_lists[:kept]
    windows, owner = [], []
    for doc, one_doc in enumerate(doc_windows[:kept]):
        windows += one_doc
        owner += [doc] * len(one_doc)
    scores = setup.score(windows, "wikitext")
    loglikelihoods = [0.0] * len(pages)
    for doc, score in zip(owner, scores):
        loglikelihoods[doc] += score.logprob
    words = [count_words(page) for page in pages]
    num_bytes = [len(page.encode("utf-8")) for page in pages]
    metrics = load_metric("document_perplexity").compute(loglikelihoods=loglikelihoods, words=words, bytes=num_bytes)
    return {
        "metrics": metrics,
        "counts": {"documents": len(pages), "words": sum(words), "bytes": sum(num_bytes),
                   "tokens": sum(map(len, token_lists)), "windows": len(windows)},
        "settings": {"max_length": setup.max_length, "prefix_token_id": setup.prefix_token_id,
                     "definition": "lm-evaluation-harness 0.4.x task wikitext (version 2.0)", "limit": setup.limit},
        "data": data.describe(),
        "notes": "WikiText-103 (raw) has the same test articles and text as WikiText-2 (raw), so these numbers are "
                 "also the harness's wikitext numbers for WikiText-103.",
    }


# ---------------------------------------------------------------------------------------------------- wikitext_sliding

def guide_nll_sums(scores: list[WindowScore], windows: list[Window], loss_tokens: list[int]) -> list[float]:
    """The guide's accumulation `nll_sum += outputs.loss * num_loss_tokens`, with loss = the window's mean NLL."""
    return [-s.logprob / w.num_scored * n for s, w, n in zip(scores, windows, loss_tokens)]


def sliding_perplexity(setup: TaskSetup, tokens: list[int]) -> tuple[dict, dict]:
    """Metrics and counts of the guide's strided evaluation of one token sequence."""
    try:
        windows, loss_tokens = sliding_windows(tokens, setup.max_length, setup.stride)
    except ValueError as e:
        raise UserError(str(e)) from None
    windows = _first(windows, setup, "sliding windows")
    loss_tokens = loss_tokens[:len(windows)]
    scores = setup.score(windows, "wikitext_sliding")
    metrics = load_metric("token_perplexity").compute(
        nll_sums=guide_nll_sums(scores, windows, loss_tokens), token_counts=loss_tokens
    )
    counts = {"tokens": len(tokens), "windows": len(windows), "scored_tokens": sum(w.num_scored for w in windows),
              "loss_tokens": sum(loss_tokens)}
    return {"perplexity": metrics["perplexity"]}, counts


def run_wikitext_sliding(setup: TaskSetup) -> dict:
    """transformers guide "Perplexity of fixed-length models": "\\n\\n".join(test rows), strided windows."""
    data = eval_data.wikitext_rows(setup.data_source)
    if not data.items:
        raise UserError("no WikiText rows to evaluate (empty dataset)")
    (tokens,) = setup.encode(["\n\n".join(data.items)])
    metrics, counts = sliding_perplexity(setup, tokens)
    return {
        "metrics": metrics,
        "counts": counts,
        "settings": {"max_length": setup.max_length, "stride": setup.stride,
                     "definition": "transformers guide 'Perplexity of fixed-length models'", "limit": setup.limit},
        "data": data.describe(),
    }


# ---------------------------------------------------------------------------------------------------- lambada_openai

def lambada_request(text: str) -> tuple[str, str]:
    """Harness `lambada_openai`: doc_to_text `text.split(' ')[:-1]|join(' ')`, doc_to_target `' ' + last word`,
    then `_encode_pair` moves the context's trailing whitespace to the front of the target."""
    words = text.split(" ")
    context, target = " ".join(words[:-1]), " " + words[-1]
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, target = context[:-n_spaces], context[-n_spaces:] + target
    return context, target


def run_lambada(setup: TaskSetup) -> dict:
    """Harness task `lambada_openai` (version 1.0): acc (target greedy), perplexity; plus last-token accuracy."""
    data = eval_data.lambada_texts(setup.data_source)
    texts = _first(data.items, setup, "LAMBADA examples")
    contexts, targets = zip(*map(lambada_request, texts))
    context_tokens = setup.encode(list(contexts))
    whole_tokens = setup.encode([c + t for c, t in zip(contexts, targets)])
    windows = []
    for ctx, whole in zip(context_tokens, whole_tokens):
        ctx = ctx or [setup.prefix_token_id]  # the harness conditions an empty context on the prefix token
        windows.append(loglikelihood_window(ctx, whole[len(ctx):], setup.max_length))
    scores = setup.score(windows, "lambada_openai", greedy=True)
    metrics = load_metric("target_loglikelihood").compute(
        loglikelihoods=[s.logprob for s in scores], is_greedy=[s.greedy for s in scores],
        last_token_correct=[s.last_correct for s in scores],
    )
    return {
        "metrics": metrics,
        "counts": {"examples": len(texts), "target_tokens": sum(w.num_scored for w in windows)},
        "settings": {"max_length": setup.max_length,
                     "definition": "lm-evaluation-harness 0.4.x task lambada_openai (version 1.0)", "limit": setup.limit},
        "data": data.describe(),
        "notes": "acc and perplexity are the harness metrics. acc_last_token (not a harness metric) counts an example "
                 "correct when the target's last BPE token is the argmax given the passage and the target's earlier "
                 "tokens (the last-token check used for GPT-2-paper-style LAMBADA numbers).",
    }


# ---------------------------------------------------------------------------------------------------- owt_val

def run_owt_val(setup: TaskSetup) -> dict:
    """Loss/perplexity on a prepared data_dir's val.bin in fixed nanoGPT blocks (see windows.contiguous_windows)."""
    from gpt2_owt.training.data_dir import open_split  # the data_dir layout module: the one reader of prepared folders

    if not setup.data_dir:
        raise UserError("task owt_val needs --data_dir (a folder made by `gpt2-owt prepare`)")
    split = open_split(setup.data_dir, "val")
    if split.num_tokens < 2:
        raise UserError(f"{setup.data_dir}/val.bin has {split.num_tokens} tokens; owt_val needs at least 2")
    vocab = setup.model.config.vocab_size
    if int(np.max(split.tokens)) >= vocab:
        raise UserError(f"{setup.data_dir}/val.bin holds token ids >= the model's vocab_size {vocab}")
    val_path = Path(setup.data_dir).resolve() / "val.bin"
    windows = _first(contiguous_windows(split.tokens, setup.max_length), setup, "val.bin windows")
    scores = setup.score(windows, "owt_val")
    metrics = load_metric("token_perplexity").compute(
        nll_sums=[-s.logprob for s in scores], token_counts=[w.num_scored for w in windows]
    )
    return {
        "metrics": metrics,
        "counts": {"tokens": sum(w.num_scored for w in windows), "windows": len(windows),
                   "documents": split.num_documents},
        "settings": {"max_length": setup.max_length,
                     "definition": "mean next-token cross-entropy over val.bin in consecutive nanoGPT blocks "
                                   "(inputs t[kL:kL+L], targets t[kL+1:kL+L+1]); every token after the first is a "
                                   "target once", "limit": setup.limit},
        "data": {"source": f"data_dir:{val_path}", "sha256": sha256_file(val_path)},
    }


TASKS: dict[str, Callable[[TaskSetup], dict]] = {
    "wikitext": run_wikitext,
    "lambada_openai": run_lambada,
    "wikitext_sliding": run_wikitext_sliding,
    "owt_val": run_owt_val,
}
