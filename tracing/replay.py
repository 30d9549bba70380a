"""Counterfactual replay: what a run would have learned without some of its training sequences, exactly.

    gpt2-owt replay --run_dir R --from_step S --to_step T
                    (--remove UPDATES.jsonl | --remove_documents 12 40 ... | --remove_text "...")
                    --query "..." [--query "..." ...] [--query_prefix "..."] [--every K] [--output_dir OUT] [--json]
    accelerate launch --config_file accelerate_configs/cpu_zero2.yaml --num_processes 2 -m gpt2_owt.cli replay ...

Loads the run's checkpoints/stepS (model, AdamW moments, schedule, RNG states) and re-runs updates S .. T-1 with
the run's own batches, schedule, precision and backend, through the trainer's own update function
(`Trainer.update`, training/trainer.py): once with nothing left out (the original trajectory) and once with the
removed sequences left out of their batches (the counterfactual). The query's loss is reported after every
update (or every K) on both, with the difference at step T.

The removal rule: a removed sequence is left out of its global batch; that update's loss is the mean over the
batch's remaining rows (its gradient scaled to match: `row_weights`), an update whose every row is removed takes a
zero gradient (AdamW still applies its moments and weight decay), and nothing else changes: the other rows, the
data order of every other update and the learning-rate schedule stay the run's. With nothing removed the update
IS the training arithmetic, so the original trajectory ends on the run's own weights at step T bit for bit on CPU
(checked every time against hf/stepT or checkpoints/stepT when the run kept one: "exact" in the report).

What to remove: `--remove FILE.jsonl` of {"update": u, "row": r} (rows of the global batch, as `gpt2-owt
data-order --update u` lists them), `--remove_documents` (every sequence of updates S..T-1 whose window holds a
token of one of these train-split documents, as `trace find` numbers them), or `--remove_text` (every exposure of
the text in updates S..T-1, found as `gpt2-owt trace find` finds it: needs the data_dir's trace index).
The query is scored as `trace curve` scores it: the mean next-token loss of the query's tokens after
--query_prefix (after an EOT, GPT-2's document start, without one), through the trainer's loss function.

`--output_dir OUT` (held under the one-writer lock) receives replay.json (the --json report) and replay.png; R is
never written. `--json` schema:
    {"run_dir", "from_step", "to_step", "every", "rule",
     "queries": [{"text", "prefix", "token_ids"}],
     "steps": [S, ..., T],                                         # where the losses below were taken
     "original": [[loss per step] per query], "counterfactual": [[...] per query],
     "difference_at_to_step": [counterfactual - original at T, per query],
     "removed": {"count", "how", "what", "updates": int, "sequences": [{"update", "row"}]},
     "exact": {"reference": str|null, "bitwise_equal": bool|null},  # original at T vs the run's own weights
     "layout": {"world_size", "zero_stage", "mixed_precision", "same_as_run": bool}}

Python API (what benchmarks/bench_attribution.py calls): `replay(...) -> ReplayResult`, or a `Replayer` for many
counterfactuals of one window (the model is built once; each trajectory reloads checkpoint S).
"""

import contextlib
import json
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from gpt2_owt.core.args import parse
from gpt2_owt.core.errors import UserError, cli_main
from gpt2_owt.core.readers import read_json, read_jsonl
from gpt2_owt.core.steps import step_name
from gpt2_owt.modeling.tokenizer import EOT_TOKEN_ID
from gpt2_owt.training.config import TrainConfig
from gpt2_owt.training.data_dir import TokenSplit, WindowSampler, open_split
from gpt2_owt.training.run_dir import CHECKPOINTS, FINAL, HF_EXPORTS, RUN_INFO, WEIGHTS, list_step_dirs

from gpt2_owt.modeling.tokenizer import encode
from gpt2_owt.training.runs import check_run_matches, run_config, steps_done

REPORT, PLOT = "replay.json", "replay.png"
RULE = ("a removed sequence is left out of its global batch: that update's loss is the mean over the remaining rows "
        "(an update with every row removed takes a zero gradient); everything else (other rows, data order, "
        "learning-rate schedule, precision) is the run's")


@dataclass
class ReplayArgs:
    run_dir: str = field(metadata={"help": "the run folder to replay (never written)"})
    from_step: int = field(metadata={"help": "start at checkpoints/stepS (a step the run kept a checkpoint of)", "ge": 0})
    to_step: int = field(metadata={"help": "replay updates from_step .. to_step-1 (to_step <= the run's steps)", "ge": 1})
    query: list[str] = field(default_factory=list, metadata={"help": "text(s) whose loss to follow (repeatable)"})
    query_prefix: str | None = field(default=None, metadata={"help": "score each query after this prefix "
                                                                      "(default: after an EOT)"})
    remove: str | None = field(default=None, metadata={"help": "JSONL of {\"update\": u, \"row\": r} to leave out"})
    remove_documents: list[int] | None = field(default=None, metadata={
        "help": "leave out every sequence holding a token of these train documents"})
    remove_text: str | None = field(default=None, metadata={
        "help": "leave out every exposure of this text (needs the data_dir's trace index)"})
    every: int = field(default=1, metadata={"help": "report the query losses every K updates (and at to_step)", "ge": 1})
    data_dir: str | None = field(default=None, metadata={"help": "the run's data folder (default: run_info's)"})
    index_dir: str | None = field(default=None, metadata={"help": "trace index for --remove_text (default: "
                                                                   "DATA_DIR/trace_index)"})
    output_dir: str | None = field(default=None, metadata={"help": "write replay.json and replay.png here"})
    json: bool = field(default=False, metadata={"help": "print the JSON report (schema in the module docstring)"})


@dataclass(frozen=True)
class Query:
    """A text whose loss a replay follows: its mean next-token loss after `prefix` (after an EOT without one)."""

    text: str
    prefix: str | None = None

    def ids(self) -> tuple[list[int], list[int]]:
        """(context ids, scored ids)."""
        return (encode(self.prefix) if self.prefix else [EOT_TOKEN_ID]), encode(self.text)


@dataclass
class Trajectory:
    steps: list[int]  # steps the losses were taken at: from_step, from_step + every, ..., to_step
    losses: np.ndarray  # float64 [queries, steps]


@dataclass
class ReplayResult:
    run_dir: str
    from_step: int
    to_step: int
    every: int
    queries: list[dict]  # {"text", "prefix", "token_ids"}
    steps: list[int]
    original: list[list[float]]
    counterfactual: list[list[float]]
    difference_at_to_step: list[float]
    removed: dict
    exact: dict
    layout: dict
    rule: str = RULE

    def to_json(self) -> dict:
        keys = ("run_dir", "from_step", "to_step", "every", "rule", "queries", "steps", "original", "counterfactual",
                "difference_at_to_step", "removed", "exact", "layout")
        return {k: asdict(self)[k] for k in keys}


# ---------------------------------------------------------------------------------------------- the run's side
@dataclass
class ReplaySource:
    """What a replay reads from a run folder, each checked before anything is built."""

    run_dir: Path
    config: TrainConfig
    run_info: dict
    checkpoint: Path
    data_dir: Path
    steps_done: int

    @classmethod
    def of_run(cls, run_dir: str | Path, from_step: int, to_step: int, data_dir: str | Path | None = None):
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise UserError(f"run_dir {run_dir} does not exist")
        config = run_config(run_dir)
        done = steps_done(run_dir, config)
        info = read_json(run_dir / RUN_INFO, "run info")
        if not 0 <= from_step < to_step:
            raise UserError(f"--to_step {to_step} must be after --from_step {from_step}")
        if to_step > done:
            raise UserError(f"--to_step {to_step} is beyond the {done} steps {run_dir} trained")
        changed_at = [seg.get("from_step") for seg in info.get("segments") or [] if seg.get("from_step", 0) > from_step]
        if changed_at:
            raise UserError(f"{run_dir} changed its recipe at step {changed_at[0]} (run_info.json segments): replay "
                            "from a checkpoint at or after that step (training_config.json is the recipe from then on)")
        checkpoint = run_dir / CHECKPOINTS / step_name(from_step)
        if not checkpoint.is_dir():
            kept = ", ".join(step_name(s) for s, _ in list_step_dirs(run_dir / CHECKPOINTS)) or "none"
            raise UserError(f"{run_dir} has no checkpoint of step {from_step} (kept: {kept}): a replay starts from "
                            "a saved optimizer state")
        data_dir = Path(data_dir or info.get("data_dir") or config.data_dir or "")
        if not (data_dir / "manifest.json").is_file():
            raise UserError(f"data_dir {data_dir} is not a prepared data folder: pass the run's data with --data_dir")
        check_run_matches(run_dir, data_dir)
        return cls(run_dir, config, info, checkpoint, data_dir, done)

    def reference_weights(self, step: int) -> tuple[str, Path] | None:
        """(label, model.safetensors) of the run's own weights at `step`: hf/stepN, hf/final when it is that step,
        or the checkpoint's (training layout) model.safetensors; None when the run kept none of them."""
        candidates = [(f"{HF_EXPORTS}/{step_name(step)}", self.run_dir / HF_EXPORTS / step_name(step) / WEIGHTS)]
        if step == self.steps_done:
            candidates.append((f"{HF_EXPORTS}/{FINAL}", self.run_dir / HF_EXPORTS / FINAL / WEIGHTS))
        candidates.append((f"{CHECKPOINTS}/{step_name(step)}", self.run_dir / CHECKPOINTS / step_name(step) / WEIGHTS))
        return next(((label, path) for label, path in candidates if path.is_file()), None)


def sampler_of(config: TrainConfig, split: TokenSplit) -> WindowSampler:
    return WindowSampler.for_run(config, split)


# ---------------------------------------------------------------------------------------------- what to remove
def removed_from_file(path: str | Path, from_step: int, to_step: int, global_batch_size: int) -> list[tuple[int, int]]:
    """The (update, row) pairs of a JSONL file of {"update": u, "row": r}, each inside the replayed window."""
    pairs = []
    for i, row in enumerate(read_jsonl(path, "--remove", missing_ok=False), 1):
        u, r = row.get("update"), row.get("row")
        if not (isinstance(u, int) and isinstance(r, int)):
            raise UserError(f"--remove {path}: line {i} is not {{\"update\": int, \"row\": int}}")
        if not from_step <= u < to_step:
            raise UserError(f"--remove {path}: line {i} names update {u}, outside the replayed updates "
                            f"{from_step}..{to_step - 1}")
        if not 0 <= r < global_batch_size:
            raise UserError(f"--remove {path}: line {i} names row {r} of a global batch of {global_batch_size}")
        pairs.append((u, r))
    return pairs


def sequences_holding_documents(split: TokenSplit, sampler: WindowSampler, documents: Iterable[int],
                                from_step: int, to_step: int) -> list[tuple[int, int]]:
    """Every (update, row) of updates from_step..to_step-1 whose window [w*seq_len, w*seq_len + seq_len + 1) holds
    a token of one of `documents` (train-split document numbers)."""
    documents = sorted(set(documents))
    bad = [d for d in documents if not 0 <= d < split.num_documents]
    if bad:
        raise UserError(f"--remove_documents {bad[0]} is not a train document (0..{split.num_documents - 1})")
    starts = np.asarray([split.doc_offsets[d] for d in documents], np.int64)
    ends = np.asarray([split.doc_offsets[d + 1] for d in documents], np.int64)
    pairs = []
    for u in range(from_step, to_step):
        first = sampler.global_batch_windows(u) * sampler.seq_len
        last = first + sampler.seq_len + 1
        holds = (first[:, None] < ends[None, :]) & (starts[None, :] < last[:, None])
        pairs += [(u, int(r)) for r in np.flatnonzero(holds.any(axis=1))]
    return pairs


def exposures_of_text(data_dir: Path, index_dir: str | None, config: TrainConfig, text: str, from_step: int,
                      to_step: int) -> list[tuple[int, int]]:
    """Every (update, row) at which the trainer fed a window holding the text whole, in updates
    from_step..to_step-1 (tracing/find.py's exposures, through the run's sampler)."""
    from .exposures import exposures_of
    from .find import query_ids
    from .index import TraceIndex

    ids = query_ids(text, None, config.seq_len + 1)
    index = TraceIndex(data_dir, index_dir)
    positions = index.positions(ids)
    exposures = exposures_of(positions, len(ids), sampler_of(config, index.split), to_step, listed=len(positions))
    keep = exposures.update() >= from_step
    return sorted(set(zip(exposures.update()[keep].tolist(), exposures.row()[keep].tolist())))


def check_queries(queries: list[Query], seq_len: int) -> None:
    """Every query fits one training window (what the model was trained to read); checked before any work."""
    if not queries:
        raise UserError("give at least one --query")
    for q in queries:
        context, ids = q.ids()
        if not ids:
            raise UserError("a --query is empty: nothing to score")
        if len(context) + len(ids) - 1 > seq_len:
            raise UserError(f"the query {q.text[:40]!r} with its prefix is {len(context) + len(ids)} tokens, longer "
                            f"than the run's training windows (seq_len {seq_len} + 1)")


def leave_out_by_update(pairs: Iterable[tuple[int, int]]) -> dict[int, set[int]]:
    rows: dict[int, set[int]] = {}
    for u, r in pairs:
        rows.setdefault(int(u), set()).add(int(r))
    return rows


# ---------------------------------------------------------------------------------------------- the replay
class Replayer:
    """Replays updates from_step .. to_step-1 of a run through its trainer: `original()` (nothing removed, checked
    against the run's weights at to_step) and `counterfactual(removed)`, as many as wanted; each reloads
    checkpoints/step<from_step>. Holds the one-writer lock on `output_dir` (a temporary folder without one) until
    close(). One Replayer per process at a time (Accelerate's state is per process)."""

    def __init__(self, run_dir: str | Path, from_step: int, to_step: int, output_dir: str | Path | None = None,
                 data_dir: str | Path | None = None, source: ReplaySource | None = None):
        from gpt2_owt.training.trainer import Trainer, resolved

        self.source = source or ReplaySource.of_run(run_dir, from_step, to_step, data_dir)
        self.from_step, self.to_step = from_step, to_step
        self._tmp = tempfile.TemporaryDirectory(prefix="replay-") if output_dir is None else None
        run = self.source.config
        hardware = self.source.run_info.get("hardware") or {}
        precision = hardware.get("mixed_precision") or run.mixed_precision
        self.config = replace(run, output_dir=str(output_dir or self._tmp.name), data_dir=str(self.source.data_dir),
                              resume_from_checkpoint=str(self.source.checkpoint), allow_changed_config=False,
                              overwrite_output_dir=False, record_fed_batches=False, record_sequence_losses=False,
                              report_to="none", mixed_precision=precision)
        self.trainer = None
        try:
            self.trainer = Trainer(resolved(self.config), argv=[], command="replay")
            self.trainer.build()  # model, optimizer and schedule at from_step
        except BaseException:
            self.close()
            raise
        self._at_from_step = True
        self._original: dict[tuple, Trajectory] = {}
        self.exact: dict = {"reference": None, "bitwise_equal": None}
        layout = self.trainer.layout()
        self.layout = layout | {"same_as_run": tuple(layout.values()) == (
            hardware.get("num_processes"), hardware.get("deepspeed_zero_stage"), hardware.get("mixed_precision"))}

    def close(self) -> None:
        if self.trainer is not None:
            self.trainer.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "Replayer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ queries
    def query_losses(self, queries: list[Query]) -> list[float]:
        """Each query's mean next-token loss with the current weights, by the trainer's loss function."""
        import torch

        t = self.trainer
        losses = []
        with t.scoring():
            for q in queries:
                context, ids = q.ids()
                window = torch.tensor([context + ids], device=t.device)
                losses.append(float(t.token_losses(window)[0, -len(ids):].double().mean()))
        return losses

    # ------------------------------------------------------------------ trajectories
    def trajectory(self, leave_out: dict[int, set[int]], queries: list[Query], every: int = 1,
                   progress: bool = True) -> Trajectory:
        """Updates from_step .. to_step-1 from checkpoint from_step, leaving out leave_out[u] rows of update u; the
        queries' losses at from_step and after every `every` updates (and at to_step)."""
        from tqdm.auto import tqdm

        t = self.trainer
        check_queries(queries, self.config.seq_len)
        if not self._at_from_step:
            t.load_checkpoint(self.source.checkpoint)
        self._at_from_step = False
        steps, losses = [self.from_step], [self.query_losses(queries)]
        bar = tqdm(range(self.from_step, self.to_step), desc="replay", unit="update",
                   disable=not progress or not t.is_local_main_process)
        for u in bar:
            t.update(u, leave_out.get(u, ()))
            step = u + 1
            if (step - self.from_step) % every == 0 or step == self.to_step:
                steps.append(step)
                losses.append(self.query_losses(queries))
        return Trajectory(steps, np.asarray(losses, dtype=np.float64).T)

    def original(self, queries: list[Query], every: int = 1, progress: bool = True) -> Trajectory:
        """The run's own trajectory (nothing removed), computed once per (queries, every); its weights at to_step
        are compared with the run's own (self.exact)."""
        key = (tuple(queries), every)
        if key not in self._original:
            self._original[key] = self.trajectory({}, queries, every, progress)
            self.exact = self.compare_with_run()
        return self._original[key]

    def counterfactual(self, removed: Iterable[tuple[int, int]], queries: list[Query], every: int = 1,
                       progress: bool = True) -> Trajectory:
        """The trajectory with the (update, row) sequences in `removed` left out of their batches."""
        removed = list(removed)
        bad = [(u, r) for u, r in removed if not (self.from_step <= u < self.to_step
                                                   and 0 <= r < self.config.global_batch_size)]
        if bad:
            raise UserError(f"removed sequence (update {bad[0][0]}, row {bad[0][1]}) is outside updates "
                            f"{self.from_step}..{self.to_step - 1} x rows 0..{self.config.global_batch_size - 1}")
        return self.trajectory(leave_out_by_update(removed), queries, every, progress)

    def compare_with_run(self) -> dict:
        """Whether the current weights (after a replay with nothing removed) equal the run's own at to_step."""
        from safetensors.torch import load_file

        state = self.trainer.plain_state_dict()  # collective
        found = self.source.reference_weights(self.to_step)
        if found is None or state is None:
            return {"reference": None, "bitwise_equal": None}
        label, path = found
        reference = load_file(str(path))
        vocab = self.trainer.model_config.vocab_size
        equal = all(name in state and state[name].cpu().equal(tensor[:vocab] if "wte" in name else tensor)
                    for name, tensor in reference.items())
        return {"reference": label, "bitwise_equal": bool(equal)}


def replay(run_dir: str | Path, from_step: int, to_step: int, removed: Iterable[tuple[int, int]],
           queries: list[Query | str], every: int = 1, output_dir: str | Path | None = None,
           data_dir: str | Path | None = None, how: str = "list", what=None, progress: bool = True) -> ReplayResult:
    """One counterfactual: the original and the counterfactual trajectories of `queries` over updates
    from_step .. to_step-1 with the (update, row) sequences in `removed` left out (see the module docstring)."""
    queries = [q if isinstance(q, Query) else Query(q) for q in queries]
    removed = sorted(set((int(u), int(r)) for u, r in removed))
    with Replayer(run_dir, from_step, to_step, output_dir, data_dir) as replayer:
        return result_of(replayer, removed, queries, every, how, what, progress)


def result_of(replayer: Replayer, removed: list[tuple[int, int]], queries: list[Query], every: int, how: str,
              what, progress: bool = True) -> ReplayResult:
    counterfactual = replayer.counterfactual(removed, queries, every, progress)
    original = replayer.original(queries, every, progress)
    return ReplayResult(
        run_dir=str(replayer.source.run_dir), from_step=replayer.from_step, to_step=replayer.to_step, every=every,
        queries=[{"text": q.text, "prefix": q.prefix, "token_ids": q.ids()[1]} for q in queries],
        steps=original.steps, original=original.losses.tolist(), counterfactual=counterfactual.losses.tolist(),
        difference_at_to_step=(counterfactual.losses[:, -1] - original.losses[:, -1]).tolist(),
        removed={"count": len(removed), "how": how, "what": what, "updates": len({u for u, _ in removed}),
                 "sequences": [{"update": u, "row": r} for u, r in removed]},
        exact=replayer.exact, layout=replayer.layout)


# ---------------------------------------------------------------------------------------------- report
def format_result(r: ReplayResult) -> str:
    exact = r.exact
    check = ("no export or checkpoint of that step to compare with" if exact["reference"] is None else
             f"{'bitwise equal to' if exact['bitwise_equal'] else 'DIFFERS from'} the run's {exact['reference']}")
    lines = [f"replay of {r.run_dir}: updates {r.from_step}..{r.to_step - 1} from checkpoints/step{r.from_step}; "
             f"nothing removed: {check}"]
    if not r.layout["same_as_run"]:
        lines.append(f"note: replayed with {r.layout} unlike the run: not its arithmetic bit for bit")
    what = f" ({r.removed['how']}: {r.removed['what']})" if r.removed["what"] is not None else ""
    lines.append(f"removed {r.removed['count']} sequences in {r.removed['updates']} updates{what}; rule: {r.rule}")
    for i, q in enumerate(r.queries):
        after = f" after {q['prefix']!r}" if q["prefix"] else ""
        lines.append(f"\nquery {q['text']!r}{after}: loss at step {r.to_step} original {r.original[i][-1]:.6f}, "
                     f"counterfactual {r.counterfactual[i][-1]:.6f}, difference {r.difference_at_to_step[i]:+.6f}")
        lines.append("  step   original  counterfactual  difference")
        for step, a, b in zip(r.steps, r.original[i], r.counterfactual[i]):
            lines.append(f"  {step:>4}  {a:9.5f}  {b:14.5f}  {b - a:+10.5f}")
    return "\n".join(lines)


def plot_result(r: ReplayResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, q in enumerate(r.queries):
        line, = ax.plot(r.steps, r.original[i], label=f"{q['text'][:30]!r} original")
        ax.plot(r.steps, r.counterfactual[i], "--", color=line.get_color(), label="counterfactual")
    ax.set_xlabel("step (updates done)")
    ax.set_ylabel("query loss (nats/token)")
    ax.set_title(f"replay: {r.removed['count']} sequences removed in updates {r.from_step}..{r.to_step - 1}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(r: ReplayResult, out: Path) -> None:
    from gpt2_owt.core.output_paths import atomic_output

    with atomic_output(out / REPORT) as tmp:
        tmp.write_text(json.dumps(r.to_json(), indent=1) + "\n")
    with atomic_output(out / PLOT) as tmp:
        plot_result(r, tmp)


# ---------------------------------------------------------------------------------------------- command
def resolve_removal(args: ReplayArgs, source: ReplaySource) -> tuple[list[tuple[int, int]], str, object]:
    """(pairs, how, what) from exactly one of --remove, --remove_documents, --remove_text."""
    given = [name for name in ("remove", "remove_documents", "remove_text") if getattr(args, name) is not None]
    if len(given) != 1:
        raise UserError("give exactly one of --remove, --remove_documents and --remove_text")
    cfg, S, T = source.config, args.from_step, args.to_step
    if args.remove is not None:
        pairs = removed_from_file(args.remove, S, T, cfg.global_batch_size)
        how, what = "list", args.remove
        if not pairs:  # the one "nothing to remove" rule of every removal mode: a replay that removes nothing
            raise UserError(f"nothing to remove: --remove {args.remove} lists no sequence "
                            "(one {\"update\": u, \"row\": r} object per line)")
    elif args.remove_documents is not None:
        split = open_split(source.data_dir, "train")
        pairs = sequences_holding_documents(split, sampler_of(cfg, split), args.remove_documents, S, T)
        how, what = "documents", args.remove_documents
    else:
        pairs = exposures_of_text(source.data_dir, args.index_dir, cfg, args.remove_text, S, T)
        how, what = "text", args.remove_text
    if not pairs:
        raise UserError(f"nothing to remove: no sequence of updates {S}..{T - 1} holds the {how} given "
                        "(`gpt2-owt trace find` lists where a text was fed)")
    return pairs, how, what


@cli_main
def main(argv: list[str] | None = None) -> None:
    from gpt2_owt.core.output_paths import guard_output

    args = parse(ReplayArgs, argv, "replay")
    source = ReplaySource.of_run(args.run_dir, args.from_step, args.to_step, args.data_dir)
    queries = [Query(text, args.query_prefix) for text in args.query]
    removed, how, what = resolve_removal(args, source)
    out = None
    if args.output_dir is not None:
        out = guard_output(args.output_dir, "--output_dir", folder=True, made_by="replay", ours=REPORT,
                           inputs={"run_dir": source.run_dir, "data_dir": source.data_dir})
    check_queries(queries, source.config.seq_len)
    with contextlib.redirect_stdout(sys.stderr):  # the trainer's and DeepSpeed's progress lines: stdout is the report
        with Replayer(args.run_dir, args.from_step, args.to_step, out, source=source) as replayer:
            result = result_of(replayer, sorted(set(removed)), queries, args.every, how, what)
            main_process = replayer.trainer.accelerator.is_main_process
            if main_process and out is not None:
                write_outputs(result, out)
    if main_process:
        print(json.dumps(result.to_json(), indent=1) if args.json else format_result(result))

if __name__ == "__main__":
    main()
