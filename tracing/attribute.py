"""Which training sequences taught the model a text: gradient attribution (Bergson) over the run's own batches.

    gpt2-owt attribute --run_dir R (--query "..." | --prompt "..." --completion "...")
                       [--method trackstar|ekfac|source] [--checkpoint stepN | --checkpoints stepA stepB ...]
                       [--candidates updates A:B | --candidates FIND.json] [--sample N] [--top_k 20] [--json]

The candidates are sequences the trainer fed: every row of the global batches of updates A..B-1 (default: every
update the model at the checkpoint trained on), or the exposures listed by `gpt2-owt trace find --json`, built
through the trainer's own sampler (`WindowSampler.for_run`, the rows `gpt2-owt data-order --update U` lists) and
handed to Bergson as a `datasets.Dataset` that keeps each one's update, row, window, documents and source rows.
Bergson (EleutherAI, MIT) does the math; nothing here computes an influence:

    trackstar   Bergson's TrackStar pipeline at one checkpoint: unit-normalised random projections of the
                per-sequence gradients, preconditioned by their autocorrelation (Chang et al. 2024).
    ekfac       Bergson's EK-FAC influence function at one checkpoint (Grosse et al. 2023).
    source      Bergson's SOURCE (approximate unrolling, Bae et al. 2024) over several checkpoints/stepN, with the
                AdamW second moments of each (use_adam_preconditioner). Bergson sums its per-segment scores as if
                every candidate were trained on in every segment (fine-tuning epochs); a pre-training sequence is fed
                once, at a known update, so its score is Bergson's score of the segment holding that update,
                divided by the segment's length (SOURCE's uniform-time weight of one step) and by the global batch
                size (the trainer's loss is a batch mean).

Every score is an `effect`: the predicted rise of the query's mean loss at the checkpoint had the sequence been
left out of training (positive: the sequence taught the model the query; the units are the method's own, so
compare ranks across methods, not values). The query is scored as `trace curve` scores a text: after an EOT
(GPT-2's document start) so every token of it is predicted, or, with --prompt, the completion after the prompt.
The candidate's loss is the trainer's: the mean next-token loss of its seq_len + 1 token window.

`--json` schema:
    {"method", "bergson_version", "steps": [int],                 # the checkpoint step(s) attributed at
     "query": {"text"|null, "prompt"|null, "completion"|null, "token_ids": [int], "scored_tokens": int},
     "candidates": {"source": str, "count": int},
     "sequences": [{"rank": int, "effect": float, "update": int, "row": int, "window": int,
                    "documents": [int], "source_rows": [int], "context": str (first --top_k only)}],  # by rank
     "command": [str]}                                             # this command line, as argv
Nothing is written into the run folder: Bergson works in a temporary folder, deleted at the end.
"""

import contextlib
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpt2_owt.core.args import command_argv, parse
from gpt2_owt.core.errors import UserError, cli_main
from gpt2_owt.core.readers import read_json
from gpt2_owt.core.steps import parse_step_name, step_name
from gpt2_owt.modeling.checkpoint_series import run_checkpoints
from gpt2_owt.modeling.tokenizer import EOT_TOKEN_ID
from gpt2_owt.training.config import TrainConfig
from gpt2_owt.training.data_dir import TokenSplit, WindowSampler, open_split, read_windows
from gpt2_owt.training.data_order import batch_order
from gpt2_owt.training.run_dir import CHECKPOINTS

from gpt2_owt.modeling.tokenizer import decode, encode
from gpt2_owt.training.runs import check_run_matches, run_config, steps_done

METHODS = ("trackstar", "ekfac", "source")
BERGSON_INSTALL = "make setup (or: pip install -e '.[attribution]' && pip install --no-deps bergson==2.5.1)"
# GPT-2's output layer is the tied input embedding, a vocabulary x width matrix: Bergson's own GPT-2 recipes leave it
# out of the gradients (filter_modules "lm_head").
FILTER_MODULES = "lm_head"


@dataclass
class AttributeArgs:
    run_dir: str = field(metadata={"help": "training run folder (its exports, checkpoints and data order)"})
    query: str | None = field(default=None, metadata={"help": "text whose loss to attribute (scored after an EOT)"})
    prompt: str | None = field(default=None, metadata={"help": "with --completion: the context, not scored"})
    completion: str | None = field(default=None, metadata={"help": "with --prompt: the text whose loss to attribute"})
    method: str = field(default="trackstar", metadata={"help": f"Bergson method: {', '.join(METHODS)}"})
    checkpoint: str | None = field(default=None, metadata={
        "help": "stepN to attribute at, trackstar/ekfac (default: the run's last step)"})
    checkpoints: list[str] | None = field(default=None, metadata={
        "help": "source: the checkpoints/stepN to unroll over, one segment each (default: every kept checkpoint)"})
    candidates: list[str] | None = field(default=None, metadata={
        "help": "`updates A:B` (updates A..B-1) or a `trace find --json` file (default: every update before the "
                "checkpoint)"})
    sample: int | None = field(default=None, metadata={"help": "score a random sample of N candidates", "ge": 1})
    seed: int = field(default=0, metadata={"help": "seed of --sample"})
    top_k: int = field(default=20, metadata={"help": "sequences listed with their text", "ge": 0})
    data_dir: str | None = field(default=None, metadata={"help": "the run's data folder (default: its config's)"})
    json: bool = field(default=False, metadata={"help": "print JSON (schema in the module docstring)"})


# ---------------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Query:
    """Token ids of a query and how many leading ones are context only (their next-token losses are not scored)."""

    token_ids: tuple[int, ...]
    context: int  # >= 1: the first prediction scored is token_ids[context]
    text: str | None = None
    prompt: str | None = None
    completion: str | None = None

    @property
    def scored_tokens(self) -> int:
        return len(self.token_ids) - self.context

    def labels(self) -> list[int]:
        """Bergson's labels (the inputs' own ids, shifted inside the loss): -100 marks an unscored position."""
        return [-100] * self.context + list(self.token_ids[self.context:])


def make_query(text: str | None, prompt: str | None, completion: str | None, seq_len: int) -> Query:
    """--query TEXT (after an EOT), or --prompt P --completion C (C after P); at most a training window long."""
    if (text is None) == (completion is None):
        raise UserError("give --query TEXT, or --prompt P with --completion C")
    if text is not None and prompt is not None:
        raise UserError("--prompt goes with --completion, not with --query")
    if completion is not None and not prompt:
        raise UserError("--completion needs a non-empty --prompt (or use --query, scored after an EOT)")
    scored = encode(text if text is not None else completion)
    if not scored:
        raise UserError("the query is empty: nothing to attribute")
    context = [EOT_TOKEN_ID] if text is not None else encode(prompt)
    ids = context + scored
    if len(ids) > seq_len + 1:
        raise UserError(f"the query is {len(ids)} tokens with its context, longer than a training window "
                        f"({seq_len + 1} = seq_len + 1)")
    return Query(tuple(ids), len(context), text, prompt, completion)


@dataclass
class Candidates:
    """Training sequences by (update, row of the global batch), with what `gpt2-owt data-order` says of each."""

    update: np.ndarray  # int64 [n]
    row: np.ndarray  # int64 [n]
    window: np.ndarray  # int64 [n]: the train.bin window the sampler gave that row
    documents: list[list[int]]
    source_rows: list[list[int]]
    source: str  # how they were chosen, for the report

    def __len__(self) -> int:
        return len(self.update)

    def take(self, index: np.ndarray, source: str) -> "Candidates":
        return Candidates(self.update[index], self.row[index], self.window[index],
                          [self.documents[i] for i in index], [self.source_rows[i] for i in index], source)


def batch_candidates(split: TokenSplit, sampler: WindowSampler, pairs: dict[int, list[int]], source: str) -> Candidates:
    """The rows `pairs` names ({update: [rows]}), described by the data-order lookup of each update."""
    update, row, window, documents, source_rows = [], [], [], [], []
    for u in sorted(pairs):
        sequences = batch_order(split, sampler, u)["sequences"]
        for r in pairs[u]:
            s = sequences[r]
            update.append(u), row.append(r), window.append(s["window"])
            documents.append(s["documents"]), source_rows.append(s["source_rows"])
    as_array = lambda values: np.asarray(values, dtype=np.int64)  # noqa: E731
    return Candidates(as_array(update), as_array(row), as_array(window), documents, source_rows, source)


def parse_update_range(text: str, trained: int) -> range:
    start, sep, stop = text.partition(":")
    try:
        updates = range(int(start), int(stop)) if sep else None
    except ValueError:
        updates = None
    if updates is None or not 0 <= updates.start < updates.stop:
        raise UserError(f"--candidates updates {text}: expected A:B with 0 <= A < B (updates A..B-1)")
    if updates.stop > trained:
        raise UserError(f"--candidates updates {text}: the model attributed at step{trained} trained on updates "
                        f"< {trained} only")
    return updates


def find_pairs(path: Path, sampler: WindowSampler, trained: int) -> dict[int, list[int]]:
    """The exposures (update, row) a `trace find --json` report lists, each once."""
    report = read_json(path, "trace find report")
    occurrences = report.get("occurrences")
    if not isinstance(occurrences, list) or not all(isinstance(o, dict) for o in occurrences):
        raise UserError(f"trace find report {path} is damaged (no 'occurrences' list): write it with "
                        "`gpt2-owt trace find ... --json`")
    pairs: dict[int, set[int]] = {}
    for occurrence in occurrences:
        for e in occurrence.get("exposures") or []:
            u, r = e.get("update") if isinstance(e, dict) else None, e.get("row") if isinstance(e, dict) else None
            if not isinstance(u, int) or not isinstance(r, int) or not 0 <= r < sampler.global_batch_size or u < 0:
                raise UserError(f"trace find report {path} is damaged (exposure {e!r} has no valid update and row)")
            if u < trained:
                pairs.setdefault(u, set()).add(r)
    if not pairs:
        raise UserError(f"trace find report {path} lists no exposure before step{trained}: nothing to attribute")
    return {u: sorted(rows) for u, rows in pairs.items()}


def choose_candidates(spec: list[str] | None, sample: int | None, seed: int, split: TokenSplit,
                      sampler: WindowSampler, trained: int) -> Candidates:
    """--candidates (`updates A:B`, a `trace find --json` file, or every update < the attributed step) and --sample."""
    every_row = list(range(sampler.global_batch_size))
    if not spec:
        updates, source = range(0, trained), f"updates 0:{trained}"
        if trained == 0:
            raise UserError("step0 has trained on nothing: attribute at a later --checkpoint")
        pairs = {u: every_row for u in updates}
    elif spec[0] == "updates" and len(spec) == 2:
        updates, source = parse_update_range(spec[1], trained), f"updates {spec[1]}"
        pairs = {u: every_row for u in updates}
    elif len(spec) == 1:
        path = Path(spec[0])
        if not path.is_file():
            raise UserError(f"--candidates {spec[0]}: no such trace find report (or give `updates A:B`)")
        pairs, source = find_pairs(path, sampler, trained), f"exposures in {spec[0]}"
    else:
        raise UserError(f"--candidates {' '.join(spec)}: expected `updates A:B` or a `trace find --json` file")
    if sample is not None:
        count = sum(len(rows) for rows in pairs.values())
        if sample > count:
            raise UserError(f"--sample {sample} is more than the {count} candidate sequences ({source})")
        flat = np.array([(u, r) for u, rows in pairs.items() for r in rows], dtype=np.int64)
        chosen = flat[np.sort(np.random.default_rng(seed).choice(count, size=sample, replace=False))]
        pairs, source = {}, f"{sample} sampled (seed {seed}) of {source}"
        for u, r in chosen.tolist():
            pairs.setdefault(u, []).append(r)
    return batch_candidates(split, sampler, pairs, source)


# ---------------------------------------------------------------------------------------------------- checkpoints
def checkpoint_step(name: str, flag: str) -> int:
    step = parse_step_name(name)
    if step is None:
        raise UserError(f"{flag} {name}: expected a step name stepN (core/steps.py)")
    return step


def saved_states(run_dir: Path) -> dict[int, Path]:
    """checkpoints/stepN folders of the run (Accelerate states: the weights and the AdamW moments), by step."""
    folder = run_dir / CHECKPOINTS
    found = {parse_step_name(p.name): p for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else {}
    return {s: p for s, p in sorted(found.items()) if s is not None}


def plain_state(state: Path, cfg: TrainConfig, model, with_optimizer: bool) -> tuple[dict, dict | None]:
    """Weights and {name: (exp_avg_sq, step)} of an Accelerate state saved without DeepSpeed. The optimizer's
    parameter order is the trainer's own: `build_optimizer` over the model as the trainer builds it, the saved state
    loaded into it, then read back per parameter (no index is guessed)."""
    import torch
    from safetensors.torch import load_file

    from gpt2_owt.training.trainer import build_optimizer

    weights = load_file(state / "model.safetensors")
    if not with_optimizer:
        return weights, None
    optimizer = build_optimizer(model, cfg)
    optimizer.load_state_dict(torch.load(state / "optimizer.bin", map_location="cpu", weights_only=True))
    return weights, {name: (optimizer.state[p]["exp_avg_sq"], optimizer.state[p]["step"])
                     for name, p in model.named_parameters()}


def deepspeed_state(state: Path, out: Path) -> tuple[dict, dict]:
    """Weights and {name: (exp_avg_sq, step)} of a DeepSpeed ZeRO state (partitioned over its processes), merged per
    parameter by DeepSpeed's own universal-checkpoint conversion (deepspeed.checkpoint.ds_to_universal)."""
    import argparse

    import torch
    from deepspeed.checkpoint import ds_to_universal

    tag = (state / "latest").read_text().strip() if (state / "latest").is_file() else "pytorch_model"
    with contextlib.redirect_stdout(sys.stderr):
        ds_to_universal.main(argparse.Namespace(
            input_folder=str(state / tag), output_folder=str(out), num_extract_workers=1, num_merge_workers=1,
            keep_temp_folder=False, strict=True, inject_missing_state=True))
    weights, moments = {}, {}
    for folder in sorted((out / "zero").iterdir()):
        if folder.is_dir():
            load = lambda name: torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=False)  # noqa: E731
            weights[folder.name] = load("fp32")["param"]
            if (folder / "exp_avg_sq.pt").is_file():  # not for lm_head.weight: tied to wte, one parameter
                moments[folder.name] = (load("exp_avg_sq")["param"], load("step"))
    return weights, moments


def load_state(state: Path, cfg: TrainConfig, work: Path, with_optimizer: bool):
    """(the model in checkpoints/stepN in the plain GPT-2 layout, {name: (exp_avg_sq, step)} or None)."""
    from gpt2_owt.modeling.config import load_config
    from gpt2_owt.modeling.model import build_model
    from gpt2_owt.training.speed import exported_state_dict

    info = read_json(state / "checkpoint_info.json", "checkpoint info")
    model = build_model(load_config(cfg.model_config))
    if info.get("zero_stage") is None:
        weights, moments = plain_state(state, cfg, model, with_optimizer)
    else:
        weights, moments = deepspeed_state(state, work / f"universal-{state.name}")
    missing, unexpected = model.load_state_dict(exported_state_dict(weights, model.config.vocab_size), strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise UserError(f"{state} does not hold the run's model ({cfg.model_config})")
    model.tie_weights()
    if moments is None or not with_optimizer:
        return model, None
    shapes = dict(model.named_parameters())
    return model, {name: (moments[name][0][: p.shape[0]], moments[name][1])  # padded vocabulary rows cut
                   for name, p in shapes.items()}


def adam_state(moments: dict, cfg: TrainConfig) -> dict:
    """Bergson's `optimizer.pt`: each parameter's AdamW step and second moment, keyed by its name (Bergson prefers
    the name to the index), in one group with the run's betas and eps."""
    state = {i: {"param_name": name, "exp_avg_sq": exp_avg_sq, "step": step}
             for i, (name, (exp_avg_sq, step)) in enumerate(moments.items())}
    return {"state": state, "param_groups": [{"betas": (cfg.adam_beta1, cfg.adam_beta2), "eps": cfg.adam_eps,
                                              "params": list(state)}]}


def with_context(model, seq_len: int):
    """`model`, with one more position embedding when its context is exactly seq_len: Bergson reads the whole
    seq_len + 1 token window so that each of its seq_len targets is scored, and that last position only feeds
    logits no label follows, so no loss or gradient depends on the added row."""
    import torch

    wpe = model.transformer.wpe
    if wpe.num_embeddings >= seq_len + 1:
        return model
    longer = torch.nn.Embedding(seq_len + 1, wpe.embedding_dim)
    with torch.no_grad():
        longer.weight.zero_()
        longer.weight[: wpe.num_embeddings] = wpe.weight
    model.transformer.wpe = longer
    model.config.n_positions = seq_len + 1
    return model


def model_folder(run: "Run", step: int, out: Path, with_optimizer: bool = False) -> Path:
    """A from_pretrained folder Bergson can load with the weights of `step`: the run's export of it when one exists
    and its context holds a training window, else written to `out` (from the export or checkpoints/stepN); with
    `with_optimizer`, from checkpoints/stepN with its AdamW state as `optimizer.pt`."""
    import torch

    from gpt2_owt.modeling.config import load_config
    from gpt2_owt.modeling.hf_folder import load_hf_model, save_hf_folder

    exported = [] if with_optimizer or not (run.run_dir / "hf").is_dir() else \
        [Path(c.model) for c in run_checkpoints(run.run_dir) if c.step == step]
    if exported and load_config(exported[0]).n_positions >= run.cfg.seq_len + 1:
        return exported[0]
    if exported:
        model, moments = load_hf_model(exported[0]), None
    else:
        model, moments = load_state(saved_states(run.run_dir)[step], run.cfg, out.parent, with_optimizer)
    save_hf_folder(with_context(model, run.cfg.seq_len), out, overwrite=True)
    if moments is not None:
        torch.save(adam_state(moments, run.cfg), out / "optimizer.pt")
    return out


# ---------------------------------------------------------------------------------------------------- Bergson
def bergson():
    """The bergson package. Imported with stdout pointed at stderr: its import sets the root logger to write to
    stdout (logging.basicConfig), where this command prints its report."""
    try:
        with contextlib.redirect_stdout(sys.stderr):
            import bergson
    except ImportError as e:
        raise UserError(f"gpt2-owt attribute needs Bergson ({e.name} is not installed): {BERGSON_INSTALL}") from None
    return bergson


def save_candidates(split: TokenSplit, candidates: Candidates, seq_len: int, path: Path) -> str:
    """The candidates as the `datasets.Dataset` Bergson reads: each one's whole window (`input_ids`), and the update,
    row, window, documents and source rows that say where the trainer fed it."""
    from datasets import Dataset

    tokens = read_windows(split, candidates.window, seq_len)
    Dataset.from_dict({"input_ids": tokens.tolist(), "update": candidates.update, "row": candidates.row,
                       "window": candidates.window, "documents": candidates.documents,
                       "source_rows": candidates.source_rows}).save_to_disk(str(path))
    return str(path)


def save_queries(queries: list[Query], path: Path) -> str:
    from datasets import Dataset

    Dataset.from_dict({"input_ids": [list(q.token_ids) for q in queries],
                       "labels": [q.labels() for q in queries]}).save_to_disk(str(path))
    return str(path)


def index_config(config_cls, run_path: Path, model: Path, dataset: str, **fields):
    """Bergson's settings shared by every method: fp32, the trainer's per-sequence loss (mean over its targets),
    one sequence window per token budget at least, the output layer left out."""
    from bergson.config.config import DataConfig

    from gpt2_owt.modeling.config import load_config

    return config_cls(run_path=str(run_path), model=str(model), data=DataConfig(dataset=dataset), precision="fp32",
                      loss_reduction="mean", filter_modules=FILTER_MODULES,
                      token_batch_size=load_config(model).n_positions, **fields)


def oriented_scores(path: Path) -> np.ndarray:
    """[n candidates, n queries] from a Bergson score folder, positive = proponent (the folder's score_cfg says
    which sign its method uses)."""
    from bergson.config.config import ScoreConfig
    from bergson.config.config_io import load_subconfig
    from bergson.data import load_scores

    scores = np.asarray(load_scores(path)[:], dtype=np.float64)
    score_cfg = load_subconfig(path, "score_cfg", ScoreConfig)
    return scores if score_cfg is None or score_cfg.higher_is_better else -scores


def run_trackstar(model: Path, candidates: str, queries: str, work: Path) -> np.ndarray:
    from bergson.cli.trackstar import trackstar
    from bergson.config.config import PreprocessConfig, QuerySetConfig, TrackstarConfig, TrackstarIndexConfig

    # One query is too few for a query-side Hessian: precondition with the candidates' own (Bergson's advice)
    settings = TrackstarConfig(query=QuerySetConfig(dataset=queries, aggregation="none"), mix_hessians=False,
                               preprocess_cfg=PreprocessConfig(unit_normalize=True), stats_sample_size=None)
    trackstar(index_config(TrackstarIndexConfig, work / "trackstar", model, candidates), settings)
    return oriented_scores(work / "trackstar" / "scores")


def run_ekfac(model: Path, candidates: str, queries: str, work: Path) -> np.ndarray:
    from bergson.config.config import (HessianConfig, HessianPipelineConfig, IndexConfig, PreprocessConfig,
                                       QuerySetConfig, ScoreConfig)
    from bergson.hessians.pipeline import hessian_pipeline

    hessian_pipeline(index_config(IndexConfig, work / "ekfac", model, candidates),
                     HessianConfig(method="kfac", ev_correction=True), ScoreConfig(), PreprocessConfig(),
                     HessianPipelineConfig(query=QuerySetConfig(dataset=queries, aggregation="none")))
    return oriented_scores(work / "ekfac" / "scores")


def learning_rates(cfg: TrainConfig, updates: int) -> np.ndarray:
    """The learning rate of updates 0..updates-1, from the trainer's own schedule."""
    import torch

    from gpt2_owt.training.trainer import build_scheduler

    schedule = build_scheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.learning_rate), cfg)
    return np.array([cfg.learning_rate * schedule.lr_lambdas[0](u) for u in range(updates)])


def run_source(folders: list[Path], steps: list[int], cfg: TrainConfig, update: np.ndarray, candidates: str,
               queries: str, work: Path) -> np.ndarray:
    """SOURCE with one segment per checkpoint: segment l holds updates [steps[l-1], steps[l]) (from 0), its lr * K
    the sum of the trainer's learning rates over them."""
    from bergson.approx_unrolling.pipeline import approx_unrolling_pipeline
    from bergson.config.config import ApproxUnrollingConfig, HessianConfig, IndexConfig, QuerySetConfig

    bounds = [0, *steps]
    rates = learning_rates(cfg, steps[-1])
    lengths = [b - a for a, b in zip(bounds, bounds[1:])]
    settings = ApproxUnrollingConfig(
        checkpoints=[str(f) for f in folders], segments=len(steps), use_adam_preconditioner=True, momentum=0.0,
        lr_list=[float(rates[a:b].mean()) for a, b in zip(bounds, bounds[1:])], step_size_list=lengths,
        query=QuerySetConfig(dataset=queries, aggregation="none"))
    approx_unrolling_pipeline(index_config(IndexConfig, work / "source", folders[-1], candidates),
                              HessianConfig(method="kfac", ev_correction=True), settings)
    segment = np.searchsorted(np.asarray(steps), update, side="right")  # update u < steps[segment]
    per_segment = np.stack([oriented_scores(work / "source" / f"segment_{l}" / "scores_ckpt_0")
                            for l in range(len(steps))])  # [segments, candidates, queries]
    weight = 1.0 / (np.asarray(lengths, dtype=np.float64)[segment] * cfg.global_batch_size)
    return per_segment[segment, np.arange(len(update))] * weight[:, None]


# ---------------------------------------------------------------------------------------------------- the API
@dataclass
class Run:
    """What attribution reads of a run folder: its recipe, data and sampler."""

    run_dir: Path
    cfg: TrainConfig
    split: TokenSplit
    sampler: WindowSampler
    steps_done: int

    @classmethod
    def open(cls, run_dir: str | Path, data_dir: str | Path | None = None) -> "Run":
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise UserError(f"run_dir {run_dir} does not exist")
        cfg = run_config(run_dir)
        done = steps_done(run_dir, cfg)
        data_dir = data_dir or cfg.data_dir
        if not data_dir or not Path(data_dir).is_dir():
            raise UserError(f"data_dir {data_dir} does not exist (pass --data_dir)" if data_dir else
                            f"{run_dir} names no data_dir: pass --data_dir")
        check_run_matches(run_dir, Path(data_dir))
        split = open_split(data_dir, "train")
        return cls(run_dir, cfg, split, WindowSampler.for_run(cfg, split), done)


def resolve_steps(run: Run, method: str, checkpoint: str | None, checkpoints: list[str] | None) -> list[int]:
    """The step(s) to attribute at: one for trackstar/ekfac (an export hf/stepN or a checkpoint), the
    checkpoints/stepN list for source."""
    if method not in METHODS:
        raise UserError(f"--method {method}: Bergson's methods here are {', '.join(METHODS)}")
    states = saved_states(run.run_dir)
    if method == "source":
        if checkpoint is not None:
            raise UserError("--method source unrolls over --checkpoints stepA stepB ... (not --checkpoint)")
        steps = sorted({checkpoint_step(c, "--checkpoints") for c in checkpoints}) if checkpoints else \
            [s for s in states if s > 0]
        missing = [step_name(s) for s in steps if s not in states]
        if missing or not steps:
            have = ", ".join(map(step_name, states)) or "none"
            raise UserError(f"--method source needs checkpoints/stepN with optimizer states; {run.run_dir} has "
                            f"{'no ' + ', '.join(missing) if missing else 'none after step0'} (kept: {have})")
        if steps[0] == 0:
            raise UserError("--checkpoints step0: the initial weights end no segment of training")
        return steps
    if checkpoints:
        raise UserError(f"--checkpoints is for --method source; {method} attributes at one --checkpoint")
    exported = {c.step for c in run_checkpoints(run.run_dir)} if (run.run_dir / "hf").is_dir() else set()
    available = sorted((exported - {None}) | set(states))
    if not available:
        raise UserError(f"{run.run_dir} has no export (hf/stepN) or checkpoint to attribute at")
    step = checkpoint_step(checkpoint, "--checkpoint") if checkpoint else available[-1]
    if step not in available:
        raise UserError(f"--checkpoint {checkpoint}: {run.run_dir} has neither hf/{checkpoint} nor "
                        f"checkpoints/{checkpoint} (steps saved: {', '.join(map(step_name, available))})")
    return [step]


def attribute(run: Run, queries: list[Query], candidates: Candidates, method: str, steps: list[int],
              work: Path) -> np.ndarray:
    """Bergson's `method` at `steps` (one for trackstar/ekfac; source's checkpoints): [len(candidates),
    len(queries)] effects (module docstring), in candidate order. Writes only into `work`."""
    bergson()
    last = steps[-1]
    late = candidates.update >= last
    if late.any():
        raise UserError(f"candidate update {int(candidates.update[late][0])} comes after step{last}: the model "
                        f"attributed there trained on updates < {last}")
    data = save_candidates(run.split, candidates, run.cfg.seq_len, work / "candidates")
    prompts = save_queries(queries, work / "queries")
    with contextlib.redirect_stdout(sys.stderr):  # Bergson reports progress on stdout; ours carries the report
        if method == "source":
            folders = [model_folder(run, step, work / f"checkpoint-{step}", with_optimizer=True) for step in steps]
            return run_source(folders, steps, run.cfg, candidates.update, data, prompts, work)
        model = model_folder(run, last, work / f"model-{step_name(last)}")
        return (run_trackstar if method == "trackstar" else run_ekfac)(model, data, prompts, work)


# ---------------------------------------------------------------------------------------------------- the report
def report(run: Run, query: Query, candidates: Candidates, method: str, steps: list[int], effects: np.ndarray,
           top_k: int) -> dict:
    order = np.argsort(-effects, kind="stable")
    sequences = []
    for rank, i in enumerate(order.tolist(), start=1):
        item = {"rank": rank, "effect": float(effects[i]), "update": int(candidates.update[i]),
                "row": int(candidates.row[i]), "window": int(candidates.window[i]),
                "documents": candidates.documents[i], "source_rows": candidates.source_rows[i]}
        if rank <= top_k:
            start, end = run.sampler.token_range(candidates.window[i])
            item["context"] = decode(run.split.tokens[start:end])
        sequences.append(item)
    return {"method": method, "bergson_version": bergson().__version__, "steps": steps,
            "query": {"text": query.text, "prompt": query.prompt, "completion": query.completion,
                      "token_ids": list(query.token_ids), "scored_tokens": query.scored_tokens},
            "candidates": {"source": candidates.source, "count": len(candidates)}, "sequences": sequences}


def format_report(result: dict) -> str:
    q = result["query"]
    what = repr(q["text"]) if q["text"] is not None else f"{q['completion']!r} after {q['prompt']!r}"
    at = ", ".join(map(step_name, result["steps"]))
    count, source = result["candidates"]["count"], result["candidates"]["source"]
    lines = [f"{result['method']} (Bergson {result['bergson_version']}) at {at}: which of {count} training sequences "
             f"({source}) taught {what} ({q['scored_tokens']} tokens scored)",
             "effect = predicted rise of the query's loss had the sequence been left out (method units)",
             f"{'rank':>5} {'effect':>11} {'update':>7} {'row':>4}  source rows  context"]
    for s in result["sequences"]:
        if "context" not in s:
            break
        context = s["context"].replace("\n", "\\n")
        lines.append(f"{s['rank']:>5} {s['effect']:>11.4g} {s['update']:>7} {s['row']:>4}  "
                     f"{','.join(map(str, s['source_rows'])):<11}  {context[:100]!r}")
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> None:
    argv = command_argv(argv)
    args = parse(AttributeArgs, argv, "attribute")
    run = Run.open(args.run_dir, args.data_dir)
    query = make_query(args.query, args.prompt, args.completion, run.cfg.seq_len)
    steps = resolve_steps(run, args.method, args.checkpoint, args.checkpoints)
    candidates = choose_candidates(args.candidates, args.sample, args.seed, run.split, run.sampler, steps[-1])
    bergson()
    with tempfile.TemporaryDirectory(prefix="gpt2-owt-attribute-") as work:
        effects = attribute(run, [query], candidates, args.method, steps, Path(work))[:, 0]
    result = report(run, query, candidates, args.method, steps, effects, args.top_k) | {
        "command": ["gpt2-owt", "attribute", *argv]}
    print(json.dumps(result, indent=1) if args.json else format_report(result))


if __name__ == "__main__":
    main()
