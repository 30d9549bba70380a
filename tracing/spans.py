"""The spans of a text, or of what a checkpoint generates, that occur verbatim in the training data, each with the
documents that hold it and when the trainer fed it: OLMoTrace's span finder joined to the run's steps.

    gpt2-owt trace spans --run_dir R --prompt "..." --generate [--checkpoint stepN|final] [--max_new_tokens 64]
                         [--do_sample --seed S [--temperature 1 --top_k 50 --top_p 1]] [--json]
    gpt2-owt trace spans --run_dir R (--text "..." | --token_ids 1 2 3) [--checkpoint stepN|final] [--json]
    gpt2-owt trace spans --repo_id ID [--revision stepN|main] --data_dir D ...   (a published release)
    gpt2-owt trace spans --config RECIPE.yaml --data_dir D --text "..."          (a recipe, no run)

With `--generate` the checkpoint continues the prompt (greedy unless --do_sample; every decoding setting is in the
report, and so is a command that repeats it) and the spans are searched in the GENERATED token ids, never in a
re-encoding of their text (which need not give the same ids). The rules are OLMoTrace's production settings
(allenai/olmo-api: infini-gram `attribute` with delimiters "\\n" and ".", no partial words, span density 0.05,
ranking by unigram log-prob sum, 10 documents per span):

1. for every start l that begins a word, the longest ids[l:r] found in train.bin (the index's `match_ends`:
   infini-gram's longest match at every position across every shard, continued across a document boundary as
   `trace find` finds such a text);
2. cut after the first delimiter inside it (a span may end on "\\n" or ".", never run through one), then shorten
   it until it ends before a word start (or at the end of the text);
3. keep maximal spans only (in start order, a span whose end is not past the previous kept end is dropped);
4. keep the ceil(0.05 x tokens) spans with the lowest unigram log-prob sum (sum over its tokens of
   ln(count in train.bin / train.bin tokens); -10000 for a token train.bin lacks: the rarest, longest first);
   they are shown in text order.
A token begins a word when its text starts with a space or a newline (GPT-2's "Ġ"/"Ċ" tokens: OLMoTrace's rule for
byte-level BPE vocabularies); and, beyond OLMoTrace (which sees one response, no document boundaries): an EOT, the
token after an EOT (a document starts) and the text's first token unless it continues a prompt (`--generate`:
the first generated token begins a word only if it is a word start itself).
For each kept span: its occurrences in train.bin (count), up to --documents of them (the first in train.bin
order) with their document, source row and context, and its exposures (tracing/exposures.py: the same rule as
`find`) in the updates before the checkpoint (updates < N for checkpoint step N; without a checkpoint, every update
the run did), the first and last of them, and the steps since the last (N - (last update + 1): the updates that
followed it). With a checkpoint loaded, also the span's log-prob under that checkpoint given everything before it
(the evaluation's scorer, eval/scoring.py).

`--json` schema:
    {"text": str, "token_ids": [int],                       # what was searched (a generation: its ids as made)
     "input": "text"|"token_ids"|"generate",
     "prompt": str|null, "prompt_ids": [int]|null,
     "generation": {"do_sample", "seed", "temperature", "top_k", "top_p", "max_new_tokens", "stopped_at_eot",
                    "torch", "transformers"}|null,
     "checkpoint": {"name", "label", "model", "revision", "step", "weights_sha256"}|null,
     "until_step": int,                                     # exposures counted in updates < N
     "rules": {"delimiters": [str], "delimiter_ids": [int], "whole_words": bool, "span_density": float,
               "documents_per_span": int, "first_token_begins_word": bool},
     "num_tokens": int, "num_maximal_spans": int,
     "spans": [{"start": int, "end": int,                   # token range [start, end) of token_ids
                "text": str, "token_ids": [int], "count": int, "unigram_logprob_sum": float,
                "model_logprob": float|null,                # ln p(span | what precedes it, up to n_positions)
                "exposures": int, "first_update": int|null, "last_update": int|null,
                "steps_since_last_exposure": int|null,
                "documents": [{"token_position": int, "document": int, "source_row": int, "context": str,
                               "exposures": int}]}]}
"""

import json
import math
import shlex
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from gpt2_owt.core.args import parse
from gpt2_owt.core.errors import UserError, cli_main
from gpt2_owt.core.readers import read_json
from gpt2_owt.core.steps import step_name
from gpt2_owt.modeling.checkpoint_series import (Checkpoint, checkpoint_folder, hub_checkpoints, load_checkpoint,
                                                 run_checkpoints, select_checkpoint)
from gpt2_owt.modeling.hf_folder import EXPORT_INFO, MODEL_CONFIG
from gpt2_owt.modeling.tokenizer import EOT_TOKEN_ID, decode, encode, encoding
from gpt2_owt.training.config import FIELD_NAMES, TrainConfig
from gpt2_owt.training.data_dir import WindowSampler
from gpt2_owt.training.runs import check_run_matches, release_config, resolve_config, steps_done

from .exposures import exposures_of
from .find import query_ids, trained_steps
from .index import INDEX_DIR, TraceIndex

# OLMoTrace's production settings (allenai/olmo-api attribution_service.py)
DELIMITERS = ("\n", ".")
SPAN_DENSITY = 0.05
DOCUMENTS_PER_SPAN = 10
UNSEEN_LOGPROB = -10000.0  # infini-gram's unigram log-prob of a token the index lacks


@dataclass
class SpansArgs:
    run_dir: str | None = field(default=None, metadata={"help": "run folder: its recipe, data and checkpoints"})
    checkpoint: str | None = field(default=None, metadata={
        "help": "stepN or final (a run's hf/ exports): the model that generates, and exposures before its step "
                "(default with --generate: final; with --text: none, exposures over the whole run)"})
    repo_id: str | None = field(default=None, metadata={"help": "a published release on the Hub (instead of a run)"})
    revision: str | None = field(default=None, metadata={"help": "stepN or main of --repo_id (default: main)"})
    config: str | None = field(default=None, metadata={"help": "training YAML (default: the run's own; a release's "
                                                                "is read from its repo)"})
    data_dir: str | None = field(default=None, metadata={"help": "prepared data folder (default: the run's)"})
    index_dir: str | None = field(default=None, metadata={"help": f"index folder (default: DATA_DIR/{INDEX_DIR})"})
    text: str | None = field(default=None, metadata={"help": "text whose spans to find (encoded like the documents)"})
    token_ids: list[int] | None = field(default=None, metadata={"help": "token ids whose spans to find"})
    prompt: str | None = field(default=None, metadata={"help": "prompt the checkpoint continues (with --generate)"})
    generate: bool = field(default=False, metadata={"help": "search the spans of the checkpoint's continuation"})
    max_new_tokens: int = field(default=64, metadata={"help": "tokens to generate (stops early at an EOT)"})
    do_sample: bool = field(default=False, metadata={"help": "sample instead of greedy decoding"})
    seed: int = field(default=0, metadata={"help": "torch seed of the sampling (with --do_sample)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (with --do_sample)"})
    top_k: int = field(default=50, metadata={"help": "sample from the k likeliest tokens, 0 = all (--do_sample)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass (with --do_sample)"})
    documents: int = field(default=DOCUMENTS_PER_SPAN, metadata={"help": "documents listed per span"})
    span_density: float = field(default=SPAN_DENSITY, metadata={"help": "spans kept per token of the text"})
    context: int = field(default=20, metadata={"help": "tokens of context decoded on each side of a document's span"})
    json: bool = field(default=False, metadata={"help": "print JSON (schema in the module docstring)"})


# ---------------------------------------------------------------------------------------------------- the rules

@cache
def word_start_ids() -> np.ndarray:
    """bool [vocab]: the token's text starts with a space or a newline (a byte-level BPE "Ġ"/"Ċ" token)."""
    enc = encoding()
    return np.array([enc.decode_single_token_bytes(t)[:1] in (b" ", b"\n") for t in range(enc.n_vocab)])


def word_starts(ids: list[int], first_begins_word: bool) -> np.ndarray:
    """bool [len(ids) + 1]: position i begins a word (the end of the text counts as one)."""
    ids = np.asarray(ids, dtype=np.int64)
    starts = np.append(word_start_ids()[ids] | (ids == EOT_TOKEN_ID), True)
    starts[1:-1] |= ids[:-1] == EOT_TOKEN_ID  # a document starts after an EOT
    if len(ids):
        starts[0] |= first_begins_word
    return starts


def delimiter_ids(delimiters=DELIMITERS) -> list[int]:
    """The single token of each delimiter ("\\n" = 198, "." = 13 in GPT-2's vocabulary)."""
    ids = [encode(d) for d in delimiters]
    if any(len(i) != 1 for i in ids):
        raise UserError(f"each delimiter must be one token, got {dict(zip(delimiters, ids))}")
    return [i[0] for i in ids]


def maximal_spans(ends: np.ndarray, ids: list[int], first_begins_word: bool = True,
                  delimiters: list[int] | None = None) -> list[tuple[int, int]]:
    """OLMoTrace's spans (rules 1-3 of the module docstring) from `ends[l]`, the end of the longest match from l."""
    delimiters = set(delimiter_ids() if delimiters is None else delimiters)
    begins = word_starts(ids, first_begins_word)
    spans, last_end = [], 0
    for start in map(int, np.flatnonzero(begins[:-1])):
        end = int(ends[start])
        cut = next((p for p in range(start, end - 1) if ids[p] in delimiters), None)
        end = end if cut is None else cut + 1
        while end > start and not begins[end]:
            end -= 1
        if end > start and end > last_end:
            spans.append((start, end))
            last_end = end
    return spans


def unigram_logprobs(index: TraceIndex, ids: list[int]) -> np.ndarray:
    """ln(count / train.bin tokens) of each token (UNSEEN_LOGPROB for a token train.bin lacks)."""
    counts = {t: index.count([t]) for t in set(ids)}
    total = index.split.num_tokens
    return np.array([math.log(counts[t] / total) if counts[t] else UNSEEN_LOGPROB for t in ids])


def top_spans(spans: list[tuple[int, int]], logprobs: np.ndarray, num_tokens: int,
              density: float = SPAN_DENSITY) -> list[tuple[int, int]]:
    """Rule 4: the ceil(density x tokens) spans of lowest unigram log-prob sum, back in text order."""
    # ceil of the exact product: OLMoTrace's np.ceil(n * 0.05) keeps one span too many where the float product
    # lands just above an integer (60 * 0.05 = 3.0000000000000004)
    keep = math.ceil(round(num_tokens * density, 9))
    ranked = sorted(spans, key=lambda s: logprobs[s[0]:s[1]].sum())  # stable: ties keep text order
    return sorted(ranked[:keep])


# ---------------------------------------------------------------------------------------------------- the report

def spans(index: TraceIndex, cfg: TrainConfig, ids: list[int], until_step: int, *, first_begins_word: bool = True,
          documents: int = DOCUMENTS_PER_SPAN, density: float = SPAN_DENSITY, context: int = 20,
          checkpoint_step: int | None = None, model=None, context_ids: list[int] | None = None) -> dict:
    """The spans of `ids` (the report's "spans", "num_maximal_spans", "until_step", "rules" keys; module docstring).

    Exposures count updates < until_step; `checkpoint_step` (the step of the model that produced the text) gives the
    steps since each span's last exposure. With `model`, each span's log-prob given `context_ids` + everything
    before it in `ids` (context_ids default: an EOT, a document start)."""
    split = index.split
    sampler = WindowSampler.for_run(cfg, split)
    delimiters = delimiter_ids()
    found = maximal_spans(index.match_ends(ids), ids, first_begins_word, delimiters)
    logprobs = unigram_logprobs(index, ids)
    kept = top_spans(found, logprobs, len(ids), density)
    scores = span_logprobs(model, list(context_ids or [EOT_TOKEN_ID]), ids, kept) if model is not None else None
    rows = []
    for k, (start, end) in enumerate(kept):
        span_ids = ids[start:end]
        positions = index.positions(span_ids)
        exp = exposures_of(positions, len(span_ids), sampler, until_step, listed=documents)
        last = int(exp.counted_sequence[-1]) // sampler.global_batch_size if exp.counted_sequence.size else None
        shown = positions[:documents]
        docs = split.document_index(shown)
        listed = np.bincount(exp.occurrence, minlength=len(shown))
        rows.append({
            "start": start, "end": end, "text": decode(span_ids), "token_ids": span_ids, "count": int(positions.size),
            "unigram_logprob_sum": float(logprobs[start:end].sum()),
            "model_logprob": None if scores is None else scores[k],
            "exposures": exp.total(), "first_update": exp.first_update(), "last_update": last,
            "steps_since_last_exposure": None if last is None or checkpoint_step is None else
            checkpoint_step - (last + 1),
            "documents": [{"token_position": p, "document": d, "source_row": r,
                           "context": decode(split.tokens[max(0, p - context) : p + len(span_ids) + context]),
                           "exposures": int(n)}
                          for p, d, r, n in zip(shown.tolist(), docs.tolist(), split.doc_rows[docs].tolist(),
                                                listed.tolist())]})
    return {"until_step": until_step,
            "rules": {"delimiters": list(DELIMITERS), "delimiter_ids": delimiters, "whole_words": True,
                      "span_density": density, "documents_per_span": documents,
                      "first_token_begins_word": first_begins_word},
            "num_tokens": len(ids), "num_maximal_spans": len(found), "spans": rows}


def span_logprobs(model, context_ids: list[int], ids: list[int], kept: list[tuple[int, int]]) -> list[float]:
    """ln p(ids[start:end] | context_ids + ids[:start]) under `model`, by the evaluation's scorer. Each span is one
    window of at most the model's n_positions tokens (the harness's loglikelihood window: what precedes the span is
    cut from the left to fit), so a span far into a long text is scored as the model can read it; a span longer
    than the context itself is refused with the limit named."""
    from gpt2_owt.eval.scoring import score_windows
    from gpt2_owt.eval.windows import loglikelihood_window

    n_positions = model.config.n_positions
    whole = list(context_ids) + list(ids)
    too_long = [(start, end) for start, end in kept if end - start > n_positions]
    if too_long:
        start, end = too_long[0]
        raise UserError(f"a span of {end - start} tokens (tokens {start}..{end - 1} of the text) is longer than the "
                        f"model's context of {n_positions} tokens: its log-prob cannot be scored in one window; "
                        "pass a shorter --text")
    windows = [loglikelihood_window(whole[: len(context_ids) + start], ids[start:end], n_positions)
               for start, end in kept]
    return [s.logprob for s in score_windows(model, windows, batch_size=8, greedy=False, progress=False)]


# ---------------------------------------------------------------------------------------------------- generation

@dataclass(frozen=True)
class Decoding:
    """Every setting that decides a generation (what the report records, so it can be repeated exactly)."""

    max_new_tokens: int = 64
    do_sample: bool = False
    seed: int | None = None  # torch.manual_seed before sampling (None: greedy needs none)
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0

    def check(self, prompt_len: int | None = None, n_positions: int | None = None) -> None:
        if self.max_new_tokens < 1:
            raise UserError(f"--max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and not (self.temperature > 0 and self.top_k >= 0 and 0 < self.top_p <= 1):
            raise UserError("sampling needs --temperature > 0, --top_k >= 0 and 0 < --top_p <= 1")
        if n_positions is not None and prompt_len + self.max_new_tokens > n_positions:
            raise UserError(f"prompt ({prompt_len} tokens) + --max_new_tokens {self.max_new_tokens} exceeds the "
                            f"model's context of {n_positions} tokens")


def generate(model, prompt_ids: list[int], decoding: Decoding) -> list[int]:
    """The checkpoint's continuation of `prompt_ids` (transformers `generate`, KV cache; stops after an EOT)."""
    import torch
    from transformers import GenerationConfig

    decoding.check(len(prompt_ids), model.config.n_positions)
    sampling = dict(temperature=decoding.temperature, top_k=decoding.top_k, top_p=decoding.top_p) \
        if decoding.do_sample else {}
    config = GenerationConfig(max_new_tokens=decoding.max_new_tokens, do_sample=decoding.do_sample,
                              eos_token_id=EOT_TOKEN_ID, pad_token_id=EOT_TOKEN_ID, **sampling)
    if decoding.do_sample:
        torch.manual_seed(decoding.seed)
    tokens = torch.tensor([prompt_ids])
    with torch.inference_mode():
        out = model.generate(tokens, attention_mask=torch.ones_like(tokens), generation_config=config)
    return out[0, len(prompt_ids):].tolist()


def generation_record(decoding: Decoding, generated: list[int]) -> dict:
    import torch
    import transformers

    return {**asdict(decoding), "stopped_at_eot": bool(generated) and generated[-1] == EOT_TOKEN_ID,
            "torch": torch.__version__, "transformers": transformers.__version__}


# ---------------------------------------------------------------------------------------------------- sources

@dataclass
class Source:
    """What the spans are answered from: a recipe, its data's index, how far it trained, and its checkpoints."""

    cfg: TrainConfig
    index: TraceIndex
    steps_done: int
    where: str  # the run folder, repo id or recipe, for messages
    list_checkpoints: object = None  # () -> list[Checkpoint]; None: no checkpoints (a recipe)


def resolve_source(args: SpansArgs, overrides: list[str]) -> Source:
    if args.run_dir and args.repo_id:
        raise UserError("give --run_dir or --repo_id, not both")
    if args.run_dir:
        if not Path(args.run_dir).is_dir():
            raise UserError(f"run_dir {args.run_dir} does not exist")
        cfg = resolve_config(args.config, args.run_dir, overrides)
        data_dir = Path(args.data_dir or cfg.data_dir or "")
        if not (data_dir / "manifest.json").is_file():
            raise UserError(f"data_dir {data_dir} is not a prepared data folder (pass --data_dir)")
        check_run_matches(Path(args.run_dir), data_dir)
        return Source(cfg, TraceIndex(data_dir, args.index_dir), steps_done(args.run_dir, cfg), args.run_dir,
                      lambda: run_checkpoints(args.run_dir))
    if args.repo_id:
        if args.config or overrides:
            raise UserError("a release's recipe is its own training_config.json: drop --config and overrides")
        cfg = release_config(args.repo_id, args.data_dir or "")
        return Source(cfg, TraceIndex(args.data_dir, args.index_dir), cfg.total_steps(), args.repo_id,
                      lambda: hub_checkpoints(args.repo_id))
    cfg = resolve_config(args.config, None, overrides)
    data_dir = args.data_dir or cfg.data_dir
    if not data_dir or not Path(data_dir).is_dir():
        raise UserError(f"data_dir {data_dir} does not exist" if data_dir else "--data_dir is required")
    return Source(cfg, TraceIndex(data_dir, args.index_dir), cfg.total_steps(), args.config)


def chosen_checkpoint(args: SpansArgs, source: Source) -> Checkpoint | None:
    which = args.checkpoint if args.run_dir else args.revision
    if args.checkpoint and not args.run_dir:
        raise UserError("--checkpoint names a run's export: it needs --run_dir (a Hub release: --revision)")
    if args.revision and not args.repo_id:
        raise UserError("--revision names a branch of --repo_id")
    if which is None and not args.generate:
        return None
    if source.list_checkpoints is None:
        raise UserError("--generate needs a model: --run_dir R [--checkpoint stepN] or --repo_id ID [--revision]")
    found = source.list_checkpoints()
    return select_checkpoint(found, which or ("final" if args.run_dir else "main"), source.where)


# ---------------------------------------------------------------------------------------------------- the command

def repeat_command(args: SpansArgs, checkpoint: Checkpoint) -> str:
    """The command line that generates the same ids again (same checkpoint, prompt and decoding settings)."""
    # a run's checkpoint by its step (hf/final moves if the run is resumed and trained on); a Hub one by its branch
    where = ["--run_dir", args.run_dir, "--checkpoint", step_name(checkpoint.step)] if args.run_dir else \
        ["--repo_id", args.repo_id, "--revision", checkpoint.name, "--data_dir", args.data_dir]
    decoding = ["--max_new_tokens", str(args.max_new_tokens)]
    if args.do_sample:
        decoding += ["--do_sample", "--seed", str(args.seed), "--temperature", repr(args.temperature),
                     "--top_k", str(args.top_k), "--top_p", repr(args.top_p)]
    return shlex.join(["gpt2-owt", "trace", "spans", *where, "--prompt", args.prompt, "--generate", *decoding])


def marked_text(ids: list[int], spans_found: list[dict]) -> str:
    """The text with the union of the spans wrapped in [[ ]] (maximal spans may overlap)."""
    covered = np.zeros(len(ids) + 1, dtype=bool)
    for s in spans_found:
        covered[s["start"]:s["end"]] = True
    pieces, start = [], 0
    for i in range(1, len(ids) + 1):
        if covered[i] != covered[start] or i == len(ids):
            text = decode(ids[start:i])
            pieces.append(f"[[{text}]]" if covered[start] else text)
            start = i
    return "".join(pieces)


def format_spans(report: dict) -> str:
    lines = []
    checkpoint = report["checkpoint"]
    if report["input"] == "generate":
        g = report["generation"]
        how = f"sampled (seed {g['seed']}, temperature {g['temperature']}, top_k {g['top_k']}, top_p {g['top_p']})" \
            if g["do_sample"] else "greedy"
        lines.append(f"{checkpoint['label']} (step {checkpoint['step']}) continued {report['prompt']!r}: "
                     f"{report['num_tokens']} tokens, {how}, max_new_tokens {g['max_new_tokens']}"
                     f"{', stopped at EOT' if g['stopped_at_eot'] else ''}")
        lines.append(f"repeat: {report['repeat']}")
    lines.append(f"{report['num_tokens']} tokens; {report['num_maximal_spans']} maximal spans found verbatim in "
                 f"train.bin, the {len(report['spans'])} rarest kept (OLMoTrace's rules); exposures in updates < "
                 f"{report['until_step']}" + (f" (before {checkpoint['label']})" if checkpoint else ""))
    lines.append("")
    lines.append(marked_text(report["token_ids"], report["spans"]))
    lines.append("")
    if not report["spans"]:
        lines.append("no span of the text occurs in train.bin")
        return "\n".join(lines)
    logp = report["spans"][0]["model_logprob"] is not None
    lines.append(f"{'#':>3} {'tokens':>9} {'count':>7} {'exposures':>9} {'first':>6} {'last':>6} {'since':>6}"
                 + (f" {'logp':>7}" if logp else "") + "  span")
    dash = "-"
    for k, s in enumerate(report["spans"], 1):
        cells = [f"{k:>3}", f"{s['start']}-{s['end']:<4}".rjust(9), f"{s['count']:>7}", f"{s['exposures']:>9}",
                 f"{dash if s['first_update'] is None else s['first_update']:>6}",
                 f"{dash if s['last_update'] is None else s['last_update']:>6}",
                 f"{dash if s['steps_since_last_exposure'] is None else s['steps_since_last_exposure']:>6}"]
        if logp:
            cells.append(f"{s['model_logprob']:>7.2f}")
        lines.append(" ".join(cells) + f"  {s['text']!r}")
        for d in s["documents"]:
            lines.append(f"{'':>14}document {d['document']} (source row {d['source_row']}, token {d['token_position']}"
                         f", {d['exposures']} exposures): {d['context']!r}")
        if s["count"] > len(s["documents"]):
            lines.append(f"{'':>14}... {s['count'] - len(s['documents'])} more occurrences (--documents)")
    lines.append("first/last: the first and last update that fed a sequence holding the span whole; since: updates "
                 "after the last one")
    return "\n".join(lines)


def run_spans(args: SpansArgs, overrides: list[str] | None = None, load=load_checkpoint) -> dict:
    """The whole `trace spans` command as a function: resolve the source, generate if asked, find the spans.
    `load(checkpoint) -> model` (the explorer passes its cache of loaded checkpoints)."""
    given = [args.text is not None, args.token_ids is not None, args.generate]
    if sum(given) != 1:
        raise UserError("give exactly one of --text, --token_ids and --prompt ... --generate")
    if args.prompt is not None and not args.generate:
        raise UserError("--prompt is for --generate (to search a text, use --text)")
    if args.documents < 0 or args.context < 0 or not 0 < args.span_density <= 1:
        raise UserError("--documents and --context must be >= 0 and --span_density in (0, 1]")
    prompt_ids = encode(args.prompt or "") or [EOT_TOKEN_ID]  # no prompt: start a document, as GPT-2 samples
    decoding = Decoding(args.max_new_tokens, args.do_sample, args.seed if args.do_sample else None,
                        args.temperature, args.top_k, args.top_p)
    if args.generate:
        decoding.check()
    source = resolve_source(args, list(overrides or []))
    checkpoint = chosen_checkpoint(args, source)
    until = trained_steps(source.cfg, source.steps_done, None if checkpoint is None else checkpoint.step)
    if args.generate:  # before the weights load: the model's context from its config.json
        decoding.check(len(prompt_ids), read_json(checkpoint_folder(checkpoint) / MODEL_CONFIG)["n_positions"])
    model = None if checkpoint is None else load(checkpoint)
    report = {"text": None, "token_ids": None, "input": None, "prompt": args.prompt, "prompt_ids": None,
              "generation": None, "repeat": None}
    if args.generate:
        ids = generate(model, prompt_ids, decoding)
        report |= {"input": "generate", "prompt_ids": prompt_ids, "generation": generation_record(decoding, ids),
                   "repeat": repeat_command(args, checkpoint)}
        context_ids, first_begins_word = prompt_ids, prompt_ids[-1] == EOT_TOKEN_ID
    else:
        ids = query_ids(args.text, args.token_ids, max_len=10**9)
        report["input"] = "text" if args.text is not None else "token_ids"
        context_ids, first_begins_word = None, True
    report |= {"text": decode(ids), "token_ids": ids,
               "checkpoint": None if checkpoint is None else {
                   "name": checkpoint.name, "label": checkpoint.label, "model": checkpoint.model,
                   "revision": checkpoint.revision, "step": checkpoint.step,
                   "weights_sha256": weights_sha256(checkpoint)}}
    if not ids:  # a generation that stopped at once (its first token was not produced)
        return report | spans(source.index, source.cfg, [], until)
    return report | spans(source.index, source.cfg, ids, until, first_begins_word=first_begins_word,
                          documents=args.documents, density=args.span_density, context=args.context,
                          checkpoint_step=None if checkpoint is None else checkpoint.step, model=model,
                          context_ids=context_ids)


def weights_sha256(checkpoint: Checkpoint) -> str | None:
    """The sha256 of the checkpoint's model.safetensors: as listed, or recorded in its export_info.json."""
    if checkpoint.weights_sha256:
        return checkpoint.weights_sha256
    info = checkpoint_folder(checkpoint) / EXPORT_INFO
    return read_json(info).get("weights_sha256") if info.is_file() else None


@cli_main
def main(argv: list[str] | None = None) -> None:
    args, overrides = parse(SpansArgs, argv, "trace spans", overrides=FIELD_NAMES)
    report = run_spans(args, overrides)
    print(json.dumps(report, indent=1) if args.json else format_spans(report))


if __name__ == "__main__":
    main()
