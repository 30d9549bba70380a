"""The trainer's configuration: one dataclass holding every hyperparameter, read from YAML plus command-line overrides.

    accelerate launch -m gpt2_owt.cli train --config training/configs/gpt2-124m-owt.yaml --micro_batch_size 8

The YAML mapping becomes a typed TrainConfig through `HfArgumentParser.parse_dict` (values checked and coerced by
the dataclass itself, `TrainConfig.__post_init__`); that config is then the parser's defaults, so the command line
overrides exactly the flags it names and is parsed by the same `HfArgumentParser`. An unknown or mistyped key (in
the YAML or on the command line) is one clear error naming the closest valid field.
"""

import argparse
import difflib
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from gpt2_owt.core.args import HelpFormatter, command_argv, unknown_flag
from gpt2_owt.core.errors import UserError
from gpt2_owt.core.hf_argparser import HfArgumentParser
from gpt2_owt.training.data_dir import SEEDS_DEFAULTING_TO_SEED
from gpt2_owt.training.run_dir import RESOLVED_KEYS  # derived fields a run's training_config.json records

# Pythia's checkpoint schedule: log-spaced early steps, then every `export_interval` steps.
PYTHIA_EARLY_STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
REPORT_TO = ("tensorboard", "wandb", "trackio", "none")
MIXED_PRECISION = ("auto", "no", "bf16")


@dataclass
class TrainConfig:
    # --- what to train on, where to write ---
    model_config: str = field(default="gpt2-124m", metadata={"help": "modeling preset name or path to a config.json"})
    data_dir: str | None = field(default=None, metadata={"help": "prepared data folder (training/prepare_data.py)"})
    output_dir: str | None = field(default=None, metadata={"help": "run folder (layout: training/run_dir.py)"})
    verify_data_hashes: bool = field(
        default=True, metadata={"help": "sha256 every data file against its manifest at start (false: sizes/counts)"}
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": "replace a different run already in output_dir"})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'auto' (latest checkpoint in output_dir, if any) or a checkpoints/stepN path"}
    )
    allow_changed_config: bool = field(
        default=False, metadata={"help": "let a resume change the data, batch layout or optimizer/schedule values "
                                         "(recorded as a new segment in run_info.json)"}
    )
    # --- batch and length ---
    seq_len: int = field(default=1024, metadata={"help": "tokens per training sequence (<= model n_positions)"})
    micro_batch_size: int = field(default=16, metadata={"help": "sequences per process per forward/backward"})
    global_batch_size: int = field(
        default=512, metadata={"help": "sequences per optimizer step, fixed whatever the world size"}
    )
    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps (set this or max_tokens)"})
    max_tokens: int | None = field(
        default=None, metadata={"help": "token budget; max_steps = ceil(max_tokens / (global_batch_size * seq_len))"}
    )
    # --- optimizer and schedule (AdamW; linear warmup then cosine to min_lr) ---
    learning_rate: float = field(default=6e-4, metadata={"help": "peak learning rate"})
    min_lr: float = field(default=6e-5, metadata={"help": "learning rate at the last step"})
    warmup_steps: int = field(default=2000, metadata={"help": "linear warmup steps"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay, on >=2-D weights only"})
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip: float = field(default=1.0, metadata={"help": "max global grad norm (0 = no clipping)"})
    seed: int = field(default=1337, metadata={"help": "default for init_seed and data_seed"})
    init_seed: int | None = field(default=None, metadata={"help": "seeds the model init (default: seed)"})
    data_seed: int | None = field(default=None, metadata={"help": "seeds the data order (default: seed)"})
    mixed_precision: str = field(default="auto", metadata={"help": "auto (bf16 on CUDA, fp32 elsewhere), no, bf16"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa, eager or flash_attention_2"})
    # --- evaluation, logging, checkpoints, exports ---
    eval_interval: int = field(default=1000, metadata={"help": "steps between validation losses (0 = only at end)"})
    eval_iters: int = field(default=8, metadata={"help": "validation batches of global_batch_size sequences"})
    log_interval: int = field(default=10, metadata={"help": "steps between metrics rows"})
    checkpoint_interval: int = field(default=1000, metadata={"help": "steps between checkpoints (0 = only at end)"})
    keep_last_checkpoints: int = field(
        default=3, metadata={"help": "checkpoints kept besides milestones (the latest is always kept)"}
    )
    checkpoint_milestone_interval: int = field(
        default=10000, metadata={"help": "checkpoints at multiples of this are never deleted (0 = none)"}
    )
    export_steps: list[int] = field(
        default_factory=lambda: list(PYTHIA_EARLY_STEPS),
        metadata={"help": "steps exported to hf/stepN (besides every export_interval and the end)"},
    )
    export_interval: int = field(default=1000, metadata={"help": "also export every N steps (0 = off)"})
    report_to: str = field(default="tensorboard", metadata={"help": f"tracker: one of {REPORT_TO}"})
    run_name: str = field(default="gpt2-owt", metadata={"help": "tracker project / run name"})
    record_fed_batches: bool = field(
        default=False, metadata={"help": "write sha256 of every fed batch to fed_batches.jsonl (data-order audits)"}
    )
    record_sequence_losses: bool = field(
        default=True, metadata={"help": "write every sequence's training loss to sequence_losses/ (tracing/)"}
    )
    # --- speed options that keep the model's numerics (training/speed.py); unset = on exactly on CUDA ---
    compile: bool | None = field(
        default=None, metadata={"help": "torch.compile each transformer block (default: true on CUDA, else false)"}
    )
    fused_adamw: bool | None = field(
        default=None, metadata={"help": "fused AdamW kernel (default: true on CUDA; on CPU it is not bit-equal)"}
    )
    tf32: bool = field(default=True, metadata={"help": "TF32 tensor cores for fp32 matmuls (CUDA only)"})
    fused_gelu: bool = field(
        default=True, metadata={"help": "train with the one-kernel tanh GELU (same function as gelu_new)"}
    )
    pad_vocab_to_multiple_of: int = field(
        default=64, metadata={"help": "pad the output layer's rows while training (0 = off); exports stay 50,257"}
    )
    deterministic: bool = field(
        default=False, metadata={"help": "deterministic kernels (training/determinism.py; slower on GPU)"}
    )

    def __post_init__(self):
        """Type-check every field (YAML values arrive untyped: `6e-4` is a string to YAML 1.1, `1` may be a float)."""
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            setattr(self, f.name, coerce_field(f.name, getattr(self, f.name), hints[f.name]))
        # Resolved here, so training_config.json, checkpoints and data_order all record the seeds actually used.
        self.init_seed = self.seed if self.init_seed is None else self.init_seed
        self.data_seed = self.seed if self.data_seed is None else self.data_seed

    # ---- derived values ----
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.seq_len

    def total_steps(self) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return math.ceil(self.max_tokens / self.tokens_per_step())

    def gradient_accumulation_steps(self, world_size: int) -> int:
        per_step = self.micro_batch_size * world_size
        if self.global_batch_size % per_step:
            raise UserError(
                f"global_batch_size {self.global_batch_size} is not divisible by micro_batch_size "
                f"{self.micro_batch_size} x world size {world_size} = {per_step}"
            )
        return self.global_batch_size // per_step

    def is_export_step(self, step: int) -> bool:
        return step in self.export_steps or (self.export_interval > 0 and step > 0 and step % self.export_interval == 0)

    def validate(self) -> None:
        """Checks that need no files or processes (those live in the trainer)."""
        if not self.data_dir:
            raise UserError("data_dir is required (--data_dir or `data_dir:` in the YAML)")
        if not self.output_dir:
            raise UserError("output_dir is required (--output_dir or `output_dir:` in the YAML)")
        self.validate_recipe()

    def validate_recipe(self) -> None:
        """The checks of the recipe itself, without its folders: a command that answers for a recipe it does not
        train (data-order, trace) refuses what `train` would refuse, rather than answer for a run that cannot be."""
        if (self.max_steps is None) == (self.max_tokens is None):
            raise UserError("set exactly one of max_steps and max_tokens")
        positive = ["seq_len", "micro_batch_size", "global_batch_size", "learning_rate", "eval_iters", "log_interval"]
        positive.append("max_steps" if self.max_steps is not None else "max_tokens")
        for name in positive:
            if getattr(self, name) <= 0:
                raise UserError(f"{name} must be > 0, got {getattr(self, name)}")
        non_negative = ["min_lr", "warmup_steps", "weight_decay", "adam_eps", "grad_clip", "eval_interval",
                        "checkpoint_interval", "keep_last_checkpoints", "checkpoint_milestone_interval",
                        "export_interval", "pad_vocab_to_multiple_of"]
        for name in non_negative:
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.min_lr > self.learning_rate:
            raise UserError(f"min_lr {self.min_lr} is above learning_rate {self.learning_rate}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.warmup_steps >= self.total_steps():
            raise UserError(f"warmup_steps {self.warmup_steps} must be below the {self.total_steps()} training steps")
        if self.global_batch_size % self.micro_batch_size:
            raise UserError(
                f"global_batch_size {self.global_batch_size} is not divisible by micro_batch_size {self.micro_batch_size}"
            )
        for name, allowed in (("report_to", REPORT_TO), ("mixed_precision", MIXED_PRECISION)):
            if getattr(self, name) not in allowed:
                raise UserError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if any(s < 0 for s in self.export_steps):
            raise UserError(f"export_steps must be >= 0, got {self.export_steps}")

    def check_model_fits(self):
        """The model preset this recipe names (its GPT2Config), which must hold a training window: seq_len <=
        n_positions (a longer window indexes past the position embeddings). Apart from validate(): it reads the
        preset and imports transformers, which parsing a recipe does not need."""
        from gpt2_owt.modeling.config import load_config  # transformers: only when a recipe is checked

        model_config = load_config(self.model_config)
        if self.seq_len > model_config.n_positions:
            raise UserError(f"seq_len {self.seq_len} exceeds the model's n_positions {model_config.n_positions}")
        return model_config


FIELD_NAMES = [f.name for f in fields(TrainConfig)]


def _as_number(value, kind):
    """`value` as an int or float when it is one exactly (2.0 is an int, 2.5 is not; YAML strings like '6e-4')."""
    if isinstance(value, bool):
        return None
    if kind is int and isinstance(value, float):
        return int(value) if value.is_integer() else None
    try:
        return kind(value) if isinstance(value, (int, float, str)) else None
    except ValueError:
        return None


def coerce_field(name: str, value, annotation):
    """`value` as the field's declared type (int, float, bool, str, list[int], optionally None), or a UserError."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        annotation = next(a for a in args if a is not type(None))
    if typing.get_origin(annotation) is list:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{name} must be a list, got {value!r}")
        (item,) = typing.get_args(annotation)
        return [coerce_field(f"{name}[{i}]", v, item) for i, v in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif annotation in (int, float):
        number = _as_number(value, annotation)
        if number is not None and not math.isfinite(number):  # nan/inf train to NaN weights or a zero schedule
            raise UserError(f"{name} must be a finite number, got {value!r}")
        if number is not None:
            return number
    elif annotation is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise UserError(f"{name} must be {annotation.__name__}, got {value!r}")


class _Parser(HfArgumentParser):
    """HfArgumentParser whose errors are UserErrors (one line, exit 2) instead of usage dumps."""

    def __init__(self):
        super().__init__(TrainConfig, allow_abbrev=False, prog="gpt2-owt train", formatter_class=HelpFormatter,
                         description="--config FILE.yaml sets any of the fields below (training/configs/*.yaml); "
                         "flags given after it override the file.")
        for action in self._actions:  # `export_steps: []` / a bare `--export_steps` = no early exports
            if action.dest == "export_steps":
                action.nargs = "*"

    def error(self, message):
        raise UserError(message)


def _unknown(key: str, where: str) -> UserError:
    close = difflib.get_close_matches(key, FIELD_NAMES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UserError(f"unknown config field {key!r} in {where}{hint}")


def read_yaml_config(path: str | Path) -> dict:
    """The YAML mapping of TrainConfig fields in `path` (null values keep the default)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"cannot parse {path}: {e}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of config fields")
    for key in data:
        if key not in FIELD_NAMES and key not in RESOLVED_KEYS:
            raise _unknown(str(key), str(path))
    return {k: v for k, v in data.items() if v is not None}


def check_derived(values: dict, config: "TrainConfig", path: str) -> None:
    """A run's own resolved training_config.json is a recipe too: the fields the trainer derived and recorded
    (RESOLVED_KEYS) are not settings, so they are not taken, but they must still follow from the file's settings,
    or the file was edited in one place and not the other (which of the two did the user mean?)."""
    given = {key: values[key] for key in RESOLVED_KEYS if key in values}
    expected = {"total_steps": config.total_steps(), "tokens_per_step": config.tokens_per_step()}
    world, accumulation = given.get("world_size"), given.get("gradient_accumulation_steps")
    if isinstance(world, int) and not isinstance(world, bool) and world > 0:  # any world size may resume a run
        expected["gradient_accumulation_steps"] = config.global_batch_size // (config.micro_batch_size * world)
        if config.global_batch_size % (config.micro_batch_size * world) or accumulation != \
                expected["gradient_accumulation_steps"]:
            raise UserError(f"{path}: gradient_accumulation_steps {accumulation!r} x micro_batch_size "
                            f"{config.micro_batch_size} x world_size {world} is not its global_batch_size "
                            f"{config.global_batch_size} (derived fields must follow from the settings)")
    elif "world_size" in given:
        raise UserError(f"{path}: world_size {world!r} is not a positive integer")
    differ = [f"{key} {given[key]!r} (its settings give {value})" for key, value in expected.items()
              if key in given and given[key] != value]
    if differ:
        raise UserError(f"{path}: derived {', '.join(differ)}: edit the settings (max_steps, seq_len, "
                        "global_batch_size, ...) and drop the derived fields, or restore the file")


def parse_config(argv: list[str] | None = None, validate: bool = True) -> TrainConfig:
    """`--config FILE.yaml` (optional) plus `--field value` overrides -> a (validated) TrainConfig."""
    argv = command_argv(argv)
    parser = _Parser()
    message = unknown_flag(argv, set(parser._option_string_actions) | {"--config"})
    if message:  # before the YAML is read: a typo is named first
        raise UserError(message)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, rest = pre.parse_known_args(argv)
    if known.config:
        values = read_yaml_config(known.config)
        try:
            (from_yaml,) = parser.parse_dict({k: v for k, v in values.items() if k not in RESOLVED_KEYS})
        except UserError as e:
            raise UserError(f"{known.config}: {e}") from None
        check_derived(values, from_yaml, known.config)
        # Seeds the YAML leaves unset stay unset, so a `--seed` flag still sets them (resolved in __post_init__).
        unset = {name: None for name in SEEDS_DEFAULTING_TO_SEED if name not in values}
        parser.set_defaults(**(asdict(from_yaml) | unset))
    config, remaining = parser.parse_args_into_dataclasses(args=rest, return_remaining_strings=True)
    if remaining:
        flag = next((a for a in remaining if a.startswith("-")), remaining[0])
        raise _unknown(flag.lstrip("-").replace("-", "_"), "the command line")
    if validate:
        config.validate()
    return config
