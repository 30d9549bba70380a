"""The trace explorer's engine: one run (or one published release) as the page of `gpt2-owt explore` sees it (its
checkpoints, recipe, data and index), each view answered through the Python API of the command it names, next to
the command line that reproduces it. The verb is tracing/explore.py, the page tracing/explore_app.py; this module
imports neither, and neither gradio nor torch at import.
"""

import itertools
import shlex
from collections import OrderedDict
from pathlib import Path

from gpt2_owt.core.errors import UserError
from gpt2_owt.core.hf_argparser import HfArgumentParser
from gpt2_owt.core.steps import step_name
from gpt2_owt.modeling.hf_folder import WEIGHTS
from gpt2_owt.training.data_dir import MANIFEST


def command_line(argv: list[str]) -> str:
    """The shell line of a command: every argument quoted as a POSIX shell needs it."""
    return shlex.join(argv)


class ModelCache:
    """Loaded checkpoints, least recently used dropped first once their weights pass `max_bytes`."""

    def __init__(self, load, max_bytes: float):
        self.load, self.max_bytes = load, max_bytes
        self.models: OrderedDict = OrderedDict()

    def __call__(self, checkpoint):
        # a local export rewritten in place (a resumed run's hf/final) is a new model: its weights' mtime is in the key
        weights = Path(checkpoint.model) / WEIGHTS
        key = (checkpoint.model, checkpoint.revision, weights.stat().st_mtime_ns if weights.is_file() else None)
        if key in self.models:
            self.models.move_to_end(key)
            return self.models[key]
        model = self.load(checkpoint)
        self.models[key] = model
        while len(self.models) > 1 and sum(map(weight_bytes, self.models.values())) > self.max_bytes:
            self.models.popitem(last=False)
        return model


def weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


class Explorer:
    """One run (or release) as the page sees it: its checkpoints, recipe, data and index, and each view's answer
    through the command's own Python API, next to the command line that reproduces it."""

    def __init__(self, run_dir: str | None = None, repo_id: str | None = None, data_dir: str | None = None,
                 memorization_dir: str | None = None, attribution: list[str] | None = None,
                 model_cache_gb: float = 4.0):
        from gpt2_owt.modeling.checkpoint_series import load_checkpoint

        from .curve import checkpoints_of

        if run_dir is not None and not Path(run_dir).is_dir():
            raise UserError(f"run_dir {run_dir} does not exist")
        self.run_dir, self.repo_id, self.data_dir_flag = run_dir, repo_id, data_dir
        self.checkpoints = checkpoints_of(run_dir, repo_id)  # `trace curve`'s listing: one per step, by step
        self.config, self.data_dir = self.recipe(data_dir)
        self.memorization_dir, self.attribution = memorization_dir, list(attribution or [])
        if memorization_dir:
            from .memorization import INFO

            if not (Path(memorization_dir) / INFO).is_file():
                raise UserError(f"--memorization_dir {memorization_dir} holds no `trace memorization` output (no "
                                f"{INFO})")
        self.model = ModelCache(load_checkpoint, model_cache_gb * 2**30)
        self.context = 20  # tokens of context on each side of a document's span (the commands' default)
        self._index = self._split = self._losses = self._memorization = self._attributions = None
        self.attributions()  # a damaged or foreign file is one line at start, not a broken tab

    # ---- what the page is about -----------------------------------------------------------------------------

    def recipe(self, data_dir: str | None):
        """(TrainConfig, data folder): a run's training_config.json and data (--data_dir, else the run's own, checked
        to be the data it trained on); a release's recipe once --data_dir is its data (else no data order: None)."""
        from gpt2_owt.training.runs import check_run_matches, release_config, run_config

        if self.run_dir is None:
            return (release_config(self.repo_id, data_dir), data_dir) if data_dir else (None, None)
        config = run_config(self.run_dir)
        data_dir = data_dir or config.data_dir
        if not data_dir or not (Path(data_dir) / MANIFEST).is_file():
            raise UserError(f"data_dir {data_dir} is not a prepared data folder (pass --data_dir)")
        check_run_matches(Path(self.run_dir), Path(data_dir))
        return config, data_dir

    @property
    def source(self) -> str:
        return self.run_dir if self.run_dir is not None else self.repo_id

    def source_flags(self, with_data: bool = False) -> list[str]:
        """The flags naming this run (or release) on a command line, and its data folder when one was given."""
        flags = ["--run_dir", self.run_dir] if self.run_dir is not None else ["--repo_id", self.repo_id]
        return flags + (["--data_dir", self.data_dir_flag] if with_data and self.data_dir_flag else [])

    def listed(self) -> list:
        """The checkpoints as the commands list them now: a run folder's again (an export may have gone since the
        page loaded); a release's as listed at start (its branches)."""
        from .curve import checkpoints_of

        return checkpoints_of(self.run_dir, None) if self.run_dir is not None else self.checkpoints

    def checkpoint(self, position: int):
        """The checkpoint at slider position `position` (0 = the first step, as listed when the page loaded)."""
        if position is None or not 0 <= int(position) < len(self.checkpoints):
            raise UserError(f"no checkpoint at slider position {position}: there are {len(self.checkpoints)}")
        return self.checkpoints[int(position)]

    def checkpoint_label(self, position: int) -> str:
        c = self.checkpoints[int(position)]
        tokens = f", {c.tokens:,} tokens" if c.tokens is not None else ""
        return f"step {c.step} ({c.label}{tokens})"

    # ---- spans of a generation or a text (`trace spans`) ------------------------------------------------------

    def spans(self, position: int, prompt: str | None = None, text: str | None = None, max_new_tokens: int = 32,
              do_sample: bool = False, seed: int = 0) -> tuple[dict, str]:
        """`trace spans --json` at the chosen checkpoint: of what it generates from `prompt`, or of `text`."""
        from . import spans as spans_cmd

        checkpoint = self.checkpoint(position)
        if (prompt is None) == (text is None):
            raise UserError("give a prompt to generate from, or a text")
        if not (prompt if text is None else text):
            raise UserError("the prompt is empty: type the text the checkpoint should continue" if text is None else
                            "the text is empty: nothing to search")
        where = ["--run_dir", self.run_dir, "--checkpoint", step_name(checkpoint.step)] if self.run_dir else \
            ["--repo_id", self.repo_id, "--revision", checkpoint.name]
        where += ["--data_dir", self.data_dir_flag] if self.data_dir_flag else []
        query = ["--text", text] if text is not None else ["--prompt", prompt, "--generate", "--max_new_tokens",
                                                            str(int(max_new_tokens))]
        if text is None and do_sample:
            query += ["--do_sample", "--seed", str(int(seed))]
        argv = [*where, *query]
        parser = HfArgumentParser(spans_cmd.SpansArgs, allow_abbrev=False)
        args = parser.parse_args_into_dataclasses(args=argv)[0]  # the command's own parsing of the same line
        report = spans_cmd.run_spans(args, load=self.model)
        return report, command_line(["gpt2-owt", "trace", "spans", *argv, "--json"])

    def span_exposures(self, report: dict, k: int, limit: int = 10) -> tuple[dict, str]:
        """`trace find --json` of span k of a spans report: its occurrences and every exposure of the first `limit`
        of them (update, row, the sequence's training loss) in the updates the report counts."""
        from .find import find
        from gpt2_owt.training.runs import steps_done

        if self.run_dir is None:
            raise UserError("the updates of each exposure need a run folder (`trace find --run_dir`); a release "
                            "gives the counts of `trace spans` only")
        span = report["spans"][k]
        argv = [*self.source_flags(with_data=True), "--token_ids", *map(str, span["token_ids"]),
                "--until_step", str(report["until_step"]), "--limit", str(limit)]
        found = find(self.index(), self.config, span["token_ids"], report["until_step"], limit, losses=self.losses(),
                     steps_done=steps_done(self.run_dir, self.config))
        return {"text": None, **found}, command_line(["gpt2-owt", "trace", "find", *argv, "--json"])

    def index(self):
        """The data's trace index (opened once)."""
        from .index import TraceIndex

        if self._index is None:
            if not self.data_dir:
                raise UserError("no data folder: give --data_dir (the prepared data with its trace index)")
            self._index = TraceIndex(self.data_dir)
        return self._index

    def losses(self):
        from gpt2_owt.training.sequence_losses import read_sequence_losses

        if self._losses is None:
            self._losses = read_sequence_losses(self.run_dir, self.config.global_batch_size)
        return self._losses

    def marked_context(self, document: dict, span: dict) -> tuple[str, str, str]:
        """A document's context split around the span: (before, span, after), as the report decoded it."""
        from gpt2_owt.modeling.tokenizer import decode

        p = document["token_position"]
        before = decode(self.index().split.tokens[max(0, p - self.context) : p])
        context = document["context"]
        if context[len(before) : len(before) + len(span["text"])] != span["text"]:
            return context, "", ""  # a character cut by the context's edge: shown unmarked
        return before, span["text"], context[len(before) + len(span["text"]) :]

    # ---- learning curve (`trace curve`) ---------------------------------------------------------------------

    def curve(self, text: str, prefix: str | None = None, on_checkpoint=None) -> tuple[dict, str]:
        """`trace curve`'s result for the text (its JSON) and the command line that prints it. `on_checkpoint(k, n,
        checkpoint)` is called before the k-th of n checkpoints is scored (the page's progress bar)."""
        from . import curve as curve_cmd
        from gpt2_owt.modeling.tokenizer import encode

        prefix = prefix or None
        argv = ["gpt2-owt", "trace", "curve", *self.source_flags(with_data=True), "--text", text]
        argv += ["--prefix", prefix] if prefix else []
        line = command_line(argv + ["--json"])
        if not text:
            raise UserError("the text is empty: nothing to score")
        args = curve_cmd.CurveArgs(text=text, run_dir=self.run_dir, repo_id=self.repo_id, prefix=prefix,
                                   data_dir=self.data_dir, json=True)
        scored = (encode(prefix) if prefix else []) + encode(text)
        counter = curve_cmd.curve_exposure_counter(args, scored)
        listed, scored_so_far = self.listed(), itertools.count()

        def load(checkpoint):
            if on_checkpoint is not None:
                on_checkpoint(next(scored_so_far), len(listed), checkpoint)
            return self.model(checkpoint)

        return curve_cmd.curve(listed, text, prefix, counter, load=load), line

    # ---- saved results: `trace memorization`, `attribute` -----------------------------------------------------

    def memorization(self, position: int) -> tuple[list[dict], dict, str]:
        """The `trace memorization` rows of the chosen checkpoint's step (memorized first), its summary, and the
        command that made them."""
        from gpt2_owt.core.readers import read_json

        from .memorization import INFO, load_memorization

        if not self.memorization_dir:
            raise UserError("no memorization results: start the explorer with --memorization_dir OUT (the output "
                            "of `gpt2-owt trace memorization --run_dir R ... --output_dir OUT`)")
        if self._memorization is None:
            self._memorization = load_memorization(self.memorization_dir).to_pandas()
        step = self.checkpoint(position).step
        rows = self._memorization[self._memorization["step"] == step]
        if rows.empty:
            steps = sorted(set(self._memorization["step"].tolist()))
            raise UserError(f"{self.memorization_dir} has no rows for step {step}; it checked steps "
                            f"{', '.join(map(str, steps)) or 'none'}")
        rows = rows.sort_values(["memorized", "match_fraction", "sequence"], ascending=[False, False, True])
        info = read_json(Path(self.memorization_dir) / INFO, "memorization record")
        return rows.to_dict("records"), info, command_line(info.get("command") or [])

    def attributions(self) -> list[dict]:
        """The `attribute --json` results given with --attribution (read once, checked for their keys)."""
        from gpt2_owt.core.readers import DamagedFile, read_json

        if self._attributions is None:
            self._attributions = []
            for path in self.attribution:
                result = read_json(path, "attribution result")
                if not {"method", "steps", "query", "sequences"} <= set(result):
                    raise DamagedFile(f"attribution result {path} is not `gpt2-owt attribute --json` output (no "
                                      "method, steps, query, sequences)")
                self._attributions.append(result)
        return self._attributions

    # ---- data of update N (`data-order`) --------------------------------------------------------------------

    def data_order(self, update: int) -> tuple[dict, str]:
        """`data-order --run_dir R --update N --text --json`: the sequences of one global batch, with their text."""
        from gpt2_owt.training import data_order
        from gpt2_owt.training.data_dir import WindowSampler, open_split

        line = command_line(["gpt2-owt", "data-order", *self.source_flags(with_data=True), "--update", str(update),
                             "--text", "--json"])
        if self.run_dir is None:  # `data-order` answers from a run's recipe (--run_dir) or a YAML, not a Hub id
            raise UserError("the data of an update needs the run folder: gpt2-owt data-order --run_dir RUN --update "
                            f"{update} (a release's Space shows spans, exposure counts and curves)")
        if update < 0:
            raise UserError(f"--update must be >= 0, got {update}")
        from gpt2_owt.training.runs import check_update, update_limit

        check_update("--update", int(update), update_limit(self.config, self.run_dir))  # as `data-order` refuses
        if self._split is None:  # the token file only: the data order needs no trace index
            self._split = open_split(self.data_dir, "train")
        return data_order.batch_order(self._split, WindowSampler.for_run(self.config, self._split), int(update),
                                      text=True), line
