"""The Trainer of `gpt2-owt train` (training/train.py): GPT-2 with Accelerate (single GPU, DDP, DeepSpeed
ZeRO-1/2/3, multi-node) from one resolved TrainConfig.

Reads a prepared `data_dir/` (training/data_dir.py), writes a `run_dir/` (training/run_dir.py), checkpoints through
training/checkpointer.py. Read top to bottom: checks (nothing is written until every input is valid) -> the loss
function -> the Trainer: run folder, model with its speed options, the one update, records, evaluation, saving, loop.

Step N means "after N optimizer updates": checkpoints/stepN and hf/stepN hold the weights after N updates,
hf/step0 the initial weights. Update u (0-based) trains on global batch u of the sampler (training/data_dir.py)
with learning rate lr(u) of the schedule and turns step u into step u + 1 (core/steps.py).
"""

import contextlib
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Collection
from dataclasses import asdict, replace
from pathlib import Path

import torch

from gpt2_owt.core.errors import UserError
from gpt2_owt.core.folder_lock import FolderLock
from gpt2_owt.core.output_paths import check_not_overlapping
from gpt2_owt.core.readers import read_json
from gpt2_owt.core.records import sha256_file
from gpt2_owt.core.records import package_versions
from gpt2_owt.core.steps import step_name
from gpt2_owt.modeling.config import load_config
from gpt2_owt.modeling.flops import flops_per_token, peak_bf16_flops
from gpt2_owt.modeling.hf_folder import save_hf_folder
from gpt2_owt.modeling.model import build_model
from gpt2_owt.training import determinism, speed
from gpt2_owt.training.checkpointer import (Checkpointer, check_identity, check_layout, complete_or_absent,
                                            identity_changes, model_identity, run_identity, verify)
from gpt2_owt.training.config import TrainConfig
from gpt2_owt.training.data_dir import MANIFEST, TokenSplit, WindowSampler, batch_sha256, open_split, read_windows
from gpt2_owt.training.run_dir import (DATA_MANIFEST, FINAL, HF_EXPORTS, LOGS, RESOLVED_KEYS, TRAINING_CONFIG, RunDir,
                                       add_segment)
from gpt2_owt.training.sequence_losses import SequenceLossWriter
from gpt2_owt.training.timing import IntervalTimer


# ----------------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------------


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


VERSIONED_PACKAGES = ("torch", "transformers", "accelerate", "deepspeed", "datasets", "tokenizers", "huggingface_hub")


def peak_flops(device: torch.device, mixed_precision: str) -> float | None:
    """Peak dense bf16 FLOP/s of one device, or None where unknown (CPU, GPUs not in modeling/flops.py, fp32)."""
    if device.type != "cuda" or mixed_precision != "bf16":
        return None
    return peak_bf16_flops(torch.cuda.get_device_name(device))


def memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    import psutil

    return psutil.Process().memory_info().rss / 1e9


# ----------------------------------------------------------------------------------------------------------------
# Input checks (run on every process before anything is written)
# ----------------------------------------------------------------------------------------------------------------


def verify_manifest(data_dir: Path, check_hashes: bool) -> dict:
    """The data_dir's manifest after checking every file (and the tokenizer fingerprint) against it
    (training/manifest.py owns the format and the check)."""
    from gpt2_owt.training.manifest import verify_data_dir

    return verify_data_dir(data_dir, check_hashes=check_hashes)


def check_token_ids(split: TokenSplit, name: str, vocab_size: int, chunk: int = 1 << 26) -> None:
    """Every token id must be < vocab_size (uint16 holds up to 65535): a bad id would silently index garbage."""
    for start in range(0, split.num_tokens, chunk):
        top = int(split.tokens[start : start + chunk].max())
        if top >= vocab_size:
            raise UserError(f"{name}.bin holds token id {top} >= the model's vocab_size {vocab_size}")


def check_output_apart_from_data(cfg: TrainConfig) -> None:
    """The run folder never is, lies inside or contains the data_dir (--overwrite_output_dir would delete it)."""
    check_not_overlapping(cfg.output_dir, {"data_dir": cfg.data_dir}, "--output_dir")
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"output_dir {out} exists and is not a folder")


def check_data(cfg: TrainConfig, vocab_size: int) -> dict:
    """Every check of the data_dir (file hashes, tokenizer, lengths, token ids); returns its manifest."""
    data_dir = Path(cfg.data_dir)
    if not data_dir.is_dir():
        raise UserError(f"data_dir {data_dir} does not exist")
    manifest = verify_manifest(data_dir, cfg.verify_data_hashes)
    for name in ("train", "val"):
        split = open_split(data_dir, name)
        if split.num_tokens < cfg.seq_len + 1:
            raise UserError(f"{data_dir}: {name} split has {split.num_tokens} tokens, fewer than seq_len + 1")
        check_token_ids(split, name, vocab_size)
    return manifest


def shared_verdict(acc, check, run_here: bool):
    """check() on the processes where `run_here` (each node's local main process for file checks, the main process
    for the run folder's lock); every process gets the verdict: the result, or the first UserError raised on any
    process. The others wait in one all-gather, bounded by the process-group timeout."""
    verdict = None
    if run_here:
        try:
            verdict = ("ok", check())
        except UserError as e:
            verdict = ("error", str(e))
    if acc.num_processes > 1:
        from accelerate.utils import gather_object

        verdicts = [v for v in gather_object([verdict]) if v is not None]
        verdict = next((v for v in verdicts if v[0] == "error"), verdicts[0])
    if verdict[0] == "error":
        raise UserError(verdict[1])
    return verdict[1]


def open_data(cfg: TrainConfig, vocab_size: int, acc) -> tuple[TokenSplit, TokenSplit, dict]:
    manifest = shared_verdict(acc, lambda: check_data(cfg, vocab_size), acc.is_local_main_process)
    return open_split(cfg.data_dir, "train"), open_split(cfg.data_dir, "val"), manifest


def find_checkpoint(cfg: TrainConfig) -> tuple[Path, dict] | None:
    """(path, verified info) of the checkpoint to resume from: None (fresh start), the newest intact one ('auto',
    skipping damaged newer ones), or the given path, which must be intact (training/checkpointer.py)."""
    if cfg.resume_from_checkpoint is None:
        return None
    if cfg.resume_from_checkpoint == "auto":
        return Checkpointer(cfg.output_dir).latest()
    path = Path(cfg.resume_from_checkpoint)
    return path, verify(path)


def restarts_same_run(cfg: TrainConfig, out: Path, identity: dict) -> bool:
    """`--resume_from_checkpoint auto` on a folder whose run never reached a checkpoint: start it again if it is
    the same run (same model, data and run identity), e.g. a job preempted or crashed before its first save."""
    if cfg.resume_from_checkpoint != "auto" or not (out / TRAINING_CONFIG).is_file():
        return False
    previous = read_json(out / TRAINING_CONFIG)
    manifest = out / DATA_MANIFEST
    same_data = previous.get("data_dir") == cfg.data_dir or (
        manifest.is_file() and sha256_file(manifest) == identity["data_manifest_sha256"])  # (copy may be missing)
    changes = identity_changes(run_identity(previous, identity["model"], None), identity)
    return previous.get("model_config") == cfg.model_config and same_data and set(changes) <= {"data_manifest_sha256"}


def check_output_dir(cfg: TrainConfig, resuming: bool, identity: dict) -> bool:
    """A fresh run must not land on top of another run, unless --overwrite_output_dir. Returns whether the folder
    holds an earlier run's files that the fresh start replaces."""
    out = Path(cfg.output_dir)
    if resuming or not RunDir(out).holds_run():
        return False
    if cfg.overwrite_output_dir or restarts_same_run(cfg, out, identity):
        return True
    raise UserError(
        f"output_dir {out} already holds a run: pass --resume_from_checkpoint auto to continue it or "
        "--overwrite_output_dir to replace it"
    )


# ----------------------------------------------------------------------------------------------------------------
# Accelerate / DeepSpeed set-up
# ----------------------------------------------------------------------------------------------------------------


def resolved(cfg: TrainConfig) -> TrainConfig:
    """The config a Trainer runs: every value left to the hardware decided (compile and fused AdamW: on exactly on
    CUDA), as training_config.json records it. The seeds TrainConfig resolves itself; the Trainer changes nothing."""
    on_cuda = torch.cuda.is_available()  # the device Accelerate picks (make_accelerator)
    return replace(cfg, compile=speed.resolve_auto(cfg.compile, on_cuda),
                   fused_adamw=speed.resolve_auto(cfg.fused_adamw, on_cuda))


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator, InitProcessGroupKwargs
    from accelerate.utils import ProjectConfiguration

    handlers = []
    cpu_processes = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if cpu_processes:
        # Without CUDA, Accelerate would treat a multi-process launch as non-distributed: create a gloo group, and
        # outside DeepSpeed take Accelerate's MULTI_CPU path (DDP over gloo; cpu=True would bypass DeepSpeed's).
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
        if deepspeed:
            skip_deepspeed_shm_op()
    precision = cfg.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "no"
    log_with = None if cfg.report_to == "none" else cfg.report_to
    if log_with is not None:
        from accelerate.utils import is_tensorboard_available, is_trackio_available, is_wandb_available

        available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available,
                     "trackio": is_trackio_available}[log_with]()
        if not available:
            raise UserError(f"report_to={log_with} but {log_with} is not installed (pip install it or --report_to none)")
    return Accelerator(
        cpu=cpu_processes and not deepspeed,
        mixed_precision=precision,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=cfg.output_dir, logging_dir=str(Path(cfg.output_dir) / LOGS)),
        # The schedule is per optimizer step: step it exactly once per update ourselves (Accelerate would otherwise
        # step it num_processes times per update).
        step_scheduler_with_optimizer=False,
        kwargs_handlers=handlers,
    )


def skip_deepspeed_shm_op() -> None:
    """DeepSpeed on CPU JIT-compiles its shared-memory all-reduce op when its process group starts (about 30 s on a
    machine's first launch, minutes on a loaded one; later launches load the cached build). Only its inference
    all-reduce uses that op: training reduces through torch.distributed (gloo here). Marked incompatible in the
    table DeepSpeed consults (`deepspeed.ops.__compatible_ops__`, probed once per process and kept), the op is never
    built and DeepSpeed's process group runs without it, as it does on machines that cannot build it."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def configure_deepspeed(accelerator, cfg: TrainConfig, grad_accum: int) -> int | None:
    """Fill the DeepSpeed config's "auto" batch/clipping values from the training config; returns the ZeRO stage.

    DeepSpeed then owns gradient accumulation and clipping (`accelerator.backward` runs engine.step at the
    accumulation boundary), so they happen exactly once; any explicit value that disagrees is an error.
    """
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return None
    ds = plugin.deepspeed_config
    wanted = {"train_micro_batch_size_per_gpu": cfg.micro_batch_size, "gradient_accumulation_steps": grad_accum,
              "train_batch_size": cfg.global_batch_size, "gradient_clipping": cfg.grad_clip}
    for key, value in wanted.items():
        current = ds.get(key, "auto")
        if current == "auto":
            ds[key] = value
        elif float(current) != float(value):
            raise UserError(f'DeepSpeed config sets {key}={current} but this run needs {value}: set it to "auto"')
    for key in ("optimizer", "scheduler"):
        if key in ds:
            raise UserError(f"remove {key!r} from the DeepSpeed config: the trainer builds AdamW and its schedule")
    if accelerator.mixed_precision == "bf16":
        use_torch_autocast(ds)
    zero = ds.setdefault("zero_optimization", {})
    stage = int(zero.get("stage", 0))
    if stage == 3 and zero.get("stage3_gather_16bit_weights_on_model_save", "auto") == "auto":
        zero["stage3_gather_16bit_weights_on_model_save"] = True  # exports need the gathered full weights
    return stage


def use_torch_autocast(ds: dict) -> None:
    """The numerics of single-GPU and DDP runs under DeepSpeed too: fp32 weights (the master weights, which exports
    then publish) with bf16 autocast compute, instead of Accelerate's `bf16.enabled` (module cast to bf16, bf16
    gradients accumulated and reduced, bf16 copies exported). No module is marked lower-precision-safe, so every
    gradient is reduced in fp32 (DeepSpeed would reduce Linear gradients in bf16 otherwise)."""
    ds["bf16"] = {"enabled": False}
    ds["fp16"] = {"enabled": False}
    ds["torch_autocast"] = {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, fused: bool = False) -> torch.optim.AdamW:
    """AdamW with weight decay on >=2-D weights (matmuls, embeddings) only; none on biases and LayerNorm."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                             **speed.optimizer_kwargs(fused))


def build_scheduler(optimizer, cfg: TrainConfig, last_epoch: int = -1):
    """lr(u) = peak * (u + 1) / warmup for u < warmup, then cosine from peak to min_lr, reaching min_lr exactly at
    the last update u = total_steps - 1 (transformers' `cosine_warmup_with_min_lr`, the function get_scheduler picks
    for that name). Built at `last_epoch` = u - 1, it starts at update u (every param group then needs its
    "initial_lr", which the first build sets)."""
    from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup_lr_rate

    return get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
        optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.total_steps(), min_lr=cfg.min_lr,
        last_epoch=last_epoch)


def apply_changed_hyperparameters(optimizer, scheduler, cfg: TrainConfig, step: int) -> None:
    """load_state restores the optimizer's and schedule's own copies of lr, betas, eps and weight decay; after an
    allowed config change (--allow_changed_config) the new values govern from the resumed step on: the groups get
    the new values, and the schedule the state of one built afresh at `step` from the new config (whose
    construction also sets every group's lr to the new lr(step))."""
    for group in optimizer.param_groups:
        group.update(betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps, initial_lr=cfg.learning_rate)
    optimizer.param_groups[0]["weight_decay"] = cfg.weight_decay  # the decayed group (build_optimizer)
    scheduler.load_state_dict(build_scheduler(scheduler.scheduler.optimizer, cfg, last_epoch=step - 1).state_dict())


# ----------------------------------------------------------------------------------------------------------------
# The loss function
# ----------------------------------------------------------------------------------------------------------------


def lm_token_losses(model, tokens: torch.Tensor, vocab_size: int, compiled: bool = False,
                    autocast=None) -> torch.Tensor:
    """Next-token cross-entropy [B, seq_len] of windows [B, seq_len + 1]: inputs tokens[:, :-1], targets tokens[:, 1:].
    The forward runs inside `autocast` (the trainer passes its accelerator's mixed precision); the loss head (the
    logits of padded output rows cut off, log-softmax in fp32, NLL: training/speed.py) runs outside it, compiled
    when `compiled`. Training takes its loss as the mean of this tensor whether or not per-sequence losses are
    recorded, so recording them cannot change the weights."""
    with autocast or contextlib.nullcontext():
        logits = model(input_ids=tokens[:, :-1], use_cache=False).logits
    return speed.token_losses_fn(compiled)(logits, tokens[:, 1:], vocab_size)


def lm_loss(model, tokens: torch.Tensor, vocab_size: int, compiled: bool = False) -> torch.Tensor:
    """Mean next-token cross-entropy of windows [B, seq_len + 1]."""
    return lm_token_losses(model, tokens, vocab_size, compiled).mean()


def row_weights(global_batch_size: int, micro_batch_size: int, leave_out: Collection[int]) -> torch.Tensor:
    """Weights [global_batch_size] of the rows of one global batch when the rows in `leave_out` are left out
    (counterfactual replay): a micro batch's loss is sum(weight * row loss), so that after the 1 / (micro batches x
    processes) averaging of backward the update's loss is the mean over the n remaining rows: weight =
    global_batch_size / (micro_batch_size * n) for a kept row, 0 for a left-out one (0 for all: a zero gradient)."""
    kept = torch.ones(global_batch_size, dtype=torch.float64)
    kept[list(leave_out)] = 0
    n = int(kept.sum())
    return (kept * (global_batch_size / (micro_batch_size * n)) if n else kept).float()


# ----------------------------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------------------------


class Trainer:
    """One training run (or, for `gpt2-owt replay`, a run's updates replayed from one of its checkpoints): the
    checks and the run folder's lock in __init__, the model in build(), one update in update(), the loop in run().
    Use it as a context manager (or call close()): the lock is held until then."""

    def __init__(self, cfg: TrainConfig, argv: list[str], command: str = "train"):
        if cfg.compile is None or cfg.fused_adamw is None:
            raise ValueError("a Trainer takes a resolved config: Trainer(resolved(cfg), ...)")
        self.cfg = cfg
        self.argv = argv
        self.out = Path(cfg.output_dir)
        self.run_dir = RunDir(self.out)  # written by the main process only
        self.model_config = cfg.check_model_fits()
        check_output_apart_from_data(cfg)
        speed.check_attn_implementation(cfg.attn_implementation)
        self.accelerator = acc = make_accelerator(cfg)
        # the precision asked for (under DeepSpeed, Accelerate reports "no" once bf16 becomes torch_autocast)
        self.mixed_precision = str(acc.mixed_precision)
        self.train_split, self.val_split, self.manifest = open_data(cfg, self.model_config.vocab_size, acc)
        # one writer per run folder, from before its checkpoints are read to close() (core/folder_lock.py)
        self.lock, self.sequence_loss_writer = FolderLock(self.out, command), None
        shared_verdict(acc, self.lock.acquire, acc.is_main_process)
        try:
            self.check_run(cfg, acc)
        except BaseException:
            self.close()
            raise

    def check_run(self, cfg: TrainConfig, acc) -> None:
        """Resume state, run identity, world layout and the values this run resolves (speed options, seeds)."""
        self.vocab_rows = speed.padded_rows(self.model_config.vocab_size, cfg.pad_vocab_to_multiple_of)
        self.identity = run_identity(asdict(cfg) | {"total_steps": cfg.total_steps()},
                                     model_identity(self.model_config.to_dict(), self.vocab_rows),
                                     sha256_file(Path(cfg.data_dir) / MANIFEST))
        self.resume_path, self.resume_info = find_checkpoint(cfg) or (None, None)
        self.config_changes = check_identity(self.resume_path, self.resume_info, self.identity,
                                             cfg.allow_changed_config) if self.resume_path else {}
        self.replace_previous = check_output_dir(cfg, self.resume_path is not None, self.identity)

        self.on_cuda = acc.device.type == "cuda"
        self.determinism = determinism.configure(cfg.deterministic, self.on_cuda, self.mixed_precision)
        self.world = acc.num_processes
        self.grad_accum = cfg.gradient_accumulation_steps(self.world)
        acc.gradient_accumulation_steps = self.grad_accum
        self.zero_stage = configure_deepspeed(acc, cfg, self.grad_accum)
        if self.resume_path:
            check_layout(self.resume_path, self.resume_info, self.world, self.zero_stage)
        self.checkpointer = Checkpointer(self.out, cfg.keep_last_checkpoints, cfg.checkpoint_milestone_interval)
        self.total_steps = cfg.total_steps()
        self.tokens_per_step = cfg.tokens_per_step()
        self.sampler = WindowSampler.for_run(cfg, self.train_split)
        self.val_sampler = WindowSampler.for_run(cfg, self.val_split, validation=True)
        self.flops_per_token = flops_per_token(self.model_config.to_dict(), cfg.seq_len)
        self.peak_flops = peak_flops(acc.device, self.mixed_precision)
        self.timer = IntervalTimer(acc.device)
        self.stop_signal = None
        self.step, self.elapsed_before = 0, 0.0
        acc.wait_for_everyone()  # every process has passed its checks before the main one writes anything

    def close(self) -> None:
        """Release the run folder's lock (and the per-sequence loss file)."""
        if self.sequence_loss_writer is not None:
            self.sequence_loss_writer.close()
        self.lock.release()

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------------------------- run folder
    def write_run_dir(self) -> None:
        """training_config.json, data_manifest.json and run_info.json; on resume, the rows written after the
        checkpoint are dropped and the per-sequence losses reopened at its step."""
        acc, cfg = self.accelerator, self.cfg
        if acc.is_main_process:
            if self.replace_previous:
                self.run_dir.clear()
            resolved = dict(zip(RESOLVED_KEYS, (self.grad_accum, self.world, self.total_steps, self.tokens_per_step)))
            manifest_path = Path(cfg.data_dir) / MANIFEST
            start = int(self.resume_info["step"]) if self.resume_info else 0
            if self.resume_path:  # drop rows the killed run wrote after this checkpoint: they are recomputed
                self.run_dir.truncate_rows(start)  # first: a damaged log is refused before anything is rewritten
            self.run_dir.start(asdict(cfg) | resolved, manifest_path, self.run_info_fields(sha256_file(manifest_path)),
                               resuming=self.resume_path is not None)
            if cfg.record_sequence_losses:  # opened at the (resumed) step: no update missing or twice
                self.sequence_loss_writer = SequenceLossWriter(self.out, cfg.global_batch_size, start)
        acc.wait_for_everyone()

    def run_info_fields(self, manifest_sha256: str) -> dict:
        """What run_info.json records about this run (RunDir adds started_at, finished_at, wall time and status)."""
        acc = self.accelerator
        device = acc.device
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", self.world))
        resumed_step = self.resume_info["step"] if self.resume_info else 0
        return {
            "git_commit": git_commit(),
            "command": list(sys.argv[:1]) + list(self.argv),
            "versions": package_versions(VERSIONED_PACKAGES),
            "hardware": {
                "device_type": device.type,
                "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor()
                                                                                               or platform.machine()),
                "num_processes": self.world,
                "num_machines": max(1, self.world // max(1, local_world)),
                "distributed_type": str(acc.distributed_type.value),
                "mixed_precision": self.mixed_precision,
                "deepspeed_zero_stage": self.zero_stage,
                "deepspeed_torch_autocast": bool(acc.state.deepspeed_plugin and acc.state.deepspeed_plugin
                                                 .deepspeed_config.get("torch_autocast", {}).get("enabled")),
            },
            "steps_done": resumed_step,
            "tokens_seen": resumed_step * self.tokens_per_step,
            "num_parameters": None,  # filled once the model exists
            "flops_per_token": self.flops_per_token,
            "data_dir": str(Path(self.cfg.data_dir).resolve()),
            "data_manifest_sha256": manifest_sha256,
            "segments": add_segment(self.run_dir.previous_run_info().get("segments", []) if self.resume_path else [],
                                    resumed_step, self.config_changes),
            "determinism": self.determinism,
        }

    def update_run_info(self, step: int, status: str) -> None:
        if self.accelerator.is_main_process:
            self.run_dir.update_run_info(status, steps_done=step, tokens_seen=step * self.tokens_per_step,
                                         wall_time_seconds=round(self.elapsed(), 3))

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.t_start

    def log_row(self, row: dict) -> None:
        if self.accelerator.is_main_process:
            self.run_dir.log_metrics(row)

    # -------------------------------------------------------------------------------- model
    def build(self) -> None:
        """Model, optimizer and schedule, prepared by Accelerate; on resume (or replay) loaded from the checkpoint."""
        cfg, acc = self.cfg, self.accelerator
        model = build_model(self.model_config, attn_implementation=cfg.attn_implementation, seed=cfg.init_seed)
        if acc.is_main_process:
            self.run_dir.run_info["num_parameters"] = sum(p.numel() for p in model.parameters())

        # ---- speed options (training/speed.py): the same model and arithmetic, in less time ----
        speed.set_matmul_precision(cfg.tf32, self.on_cuda)  # TF32 for fp32 matmuls on CUDA
        speed.apply_model_options(model, cfg.fused_gelu, cfg.pad_vocab_to_multiple_of, cfg.compile)  # GELU, pad, compile
        optimizer = build_optimizer(model, cfg, fused=cfg.fused_adamw)  # fused AdamW kernel
        scheduler = build_scheduler(optimizer, cfg)
        self.model, self.optimizer, self.scheduler = acc.prepare(model, optimizer, scheduler)
        # Mixed precision comes from the loss function's `accelerator.autocast()` around the forward, so the
        # autocast and fp32 output cast that prepare() wrapped around the forward go (public API; the model is
        # changed in place): bf16 logits reach the loss head, which upcasts them in its own pass.
        acc.unwrap_model(self.model, keep_fp32_wrapper=False)

        if self.resume_path is not None:
            self.checkpointer.load(acc, self.resume_path)
            self.step = int(self.resume_info["step"])
            if self.config_changes:
                apply_changed_hyperparameters(self.optimizer, self.scheduler, cfg, self.step)
            self.elapsed_before = float(self.resume_info["elapsed_seconds"])
            acc.print(f"resumed from {self.resume_path} at step {self.step}")

    def token_losses(self, tokens: torch.Tensor) -> torch.Tensor:
        """The loss function with this run's model, precision and loss head: [rows, seq_len] of windows."""
        return lm_token_losses(self.model, tokens, self.model_config.vocab_size, self.cfg.compile,
                               autocast=self.accelerator.autocast())

    # -------------------------------------------------------------------------------- one update
    def rank_batch(self, batch: int, sampler: WindowSampler, split: TokenSplit) -> torch.Tensor:
        """This process's rows of global batch `batch` of `sampler`, as token windows on the device."""
        windows = sampler.rank_windows(batch, self.accelerator.process_index, self.world)
        return torch.from_numpy(read_windows(split, windows, self.cfg.seq_len)).to(self.accelerator.device)

    def update(self, update: int, leave_out: Collection[int] = ()) -> tuple[torch.Tensor, float | None]:
        """Update `update` (0-based): train on global batch `update` of the sampler and step optimizer and schedule,
        turning step `update` into step `update` + 1. Returns (this process's mean loss, the gradient norm).

        `leave_out`: rows of the global batch to leave out (counterfactual replay, tracing/replay.py): the update's
        loss is then the mean over the remaining rows (row_weights). Left empty, this is the training arithmetic."""
        acc, micro, timer = self.accelerator, self.cfg.micro_batch_size, self.timer
        with timer.phase("data"):
            tokens = self.rank_batch(update, self.sampler, self.train_split)
            weights = None
            if leave_out:
                per_rank = self.cfg.global_batch_size // self.world
                weights = row_weights(self.cfg.global_batch_size, micro, leave_out).to(acc.device)
                weights = weights[acc.process_index * per_rank : (acc.process_index + 1) * per_rank]
        with timer.phase("forward_backward"):
            loss_sum = torch.zeros((), device=acc.device)
            sequence_losses = []
            for m in range(self.grad_accum):
                rows = slice(m * micro, (m + 1) * micro)
                with acc.accumulate(self.model):
                    token_losses = self.token_losses(tokens[rows])
                    if weights is None:
                        loss = token_losses.mean()
                    else:
                        loss = (token_losses.mean(dim=1) * weights[rows]).sum()
                    acc.backward(loss)  # divides by grad_accum; under DeepSpeed it also steps at the boundary
                loss_sum += loss.detach()
                sequence_losses.append(token_losses.detach().mean(dim=1))
        assert acc.sync_gradients, "gradient accumulation boundary out of step with the global batch"
        with timer.phase("record"):
            self.record(update, tokens, torch.cat(sequence_losses))
        with timer.phase("optimizer"):
            # Outside DeepSpeed this clips; under DeepSpeed the engine already clipped (gradient_clipping) and
            # stepped, and this returns the norm it measured.
            grad_norm = acc.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip or float("inf"))
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss_sum / self.grad_accum, None if grad_norm is None else float(grad_norm)

    def record(self, update: int, tokens: torch.Tensor, losses: torch.Tensor) -> None:
        """The per-update logs, each gathered across processes in global row order (rank r holds rows
        [r * B/R, (r + 1) * B/R)): the sha256 of the batch exactly as fed (fed_batches.jsonl, record_fed_batches)
        and every sequence's loss (sequence_losses/, record_sequence_losses)."""
        acc = self.accelerator
        if self.cfg.record_fed_batches:
            fed = acc.gather(tokens).cpu().numpy()
            if acc.is_main_process:
                self.run_dir.log_fed_batch(update, batch_sha256(fed))
        if self.cfg.record_sequence_losses:
            losses = acc.gather(losses).cpu().numpy()
            if self.sequence_loss_writer is not None:
                self.sequence_loss_writer.append(update, losses)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over eval_iters fixed validation batches (the first windows of val, same every time)."""
        acc, micro = self.accelerator, self.cfg.micro_batch_size
        self.model.eval()
        losses = []
        for b in range(self.cfg.eval_iters):
            tokens = self.rank_batch(b, self.val_sampler, self.val_split)
            for m in range(0, tokens.size(0), micro):
                losses.append(self.token_losses(tokens[m : m + micro]).mean())
        self.model.train()
        return float(acc.reduce(torch.stack(losses).mean(), reduction="mean"))

    @contextlib.contextmanager
    def scoring(self):
        """Score with the current weights (model in eval mode, no gradients), then back to training."""
        self.model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.model.train()

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_local_main_process(self) -> bool:
        return self.accelerator.is_local_main_process

    def layout(self) -> dict:
        """How the updates are spread: processes, DeepSpeed ZeRO stage (None: none) and the precision asked for."""
        return {"world_size": self.world, "zero_stage": self.zero_stage, "mixed_precision": self.mixed_precision}

    # -------------------------------------------------------------------------------- saving
    def load_checkpoint(self, path: str | Path) -> None:
        """Model, optimizer, schedule and RNG states from checkpoints/stepN (collective): a replay starts over."""
        self.checkpointer.load(self.accelerator, path)

    def save_checkpoint(self, step: int) -> None:
        """checkpoints/stepN through the Checkpointer (collective), then run_info's progress."""
        self.checkpointer.save(self.accelerator, step, {
            "step": step, "tokens": step * self.tokens_per_step, "elapsed_seconds": self.elapsed(),
            "world_size": self.world, "zero_stage": self.zero_stage, "identity": self.identity})
        self.update_run_info(step, "running")

    def plain_state_dict(self) -> dict | None:
        """The model's weights in the plain GPT-2 layout (padded output rows cut off) on the main process (collective:
        under ZeRO-3 the full weights are gathered; the other processes get None there)."""
        return speed.exported_state_dict(self.accelerator.get_state_dict(self.model), self.model_config.vocab_size)

    def export(self, name: str, step: int) -> None:
        """A from_pretrained folder at hf/<name> (modeling/hf_folder.py), with export_info.json."""
        acc = self.accelerator
        state_dict = self.plain_state_dict()
        if acc.is_main_process:
            final = self.run_dir.export_dir(name)
            with complete_or_absent(final.with_name(f".{name}.tmp-{os.getpid()}"), final):  # its temp name
                save_hf_folder(acc.unwrap_model(self.model), final, overwrite=True, state_dict=state_dict,
                               export_info={"step": step, "tokens": step * self.tokens_per_step})
        acc.wait_for_everyone()

    # -------------------------------------------------------------------------------- signals
    @contextlib.contextmanager
    def stop_signals_caught(self):
        """SIGTERM/SIGINT only set `stop_signal` (the loop saves and exits); the previous handlers come back on exit,
        so a trainer run inside a longer-lived process (tests, notebooks) leaves no handler behind for its forks."""
        def handler(signum, frame):
            self.stop_signal = signum
            signal.signal(signum, signal.SIG_DFL)  # a second signal kills at once

        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        for sig in previous:
            signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def should_stop(self) -> bool:
        """True on every rank if any rank got SIGTERM/SIGINT (one small all-reduce per step)."""
        if self.stop_signal is not None:
            self.accelerator.set_trigger()
        return self.accelerator.check_trigger()

    # -------------------------------------------------------------------------------- loop
    def tracker_config(self) -> dict:
        flat = asdict(self.cfg) | {"gradient_accumulation_steps": self.grad_accum, "world_size": self.world}
        return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat.items()}

    def run(self) -> int:
        acc, cfg = self.accelerator, self.cfg
        self.write_run_dir()
        self.build()
        self.t_start = time.time()
        if acc.is_main_process:
            self.update_run_info(self.step, "running")
        if cfg.report_to != "none":
            acc.init_trackers(cfg.run_name, config=self.tracker_config())
        with self.stop_signals_caught():
            return self.train_loop()

    def train_loop(self) -> int:
        from tqdm.auto import tqdm

        acc, cfg = self.accelerator, self.cfg
        if self.step == 0 and cfg.is_export_step(0):
            self.export(step_name(0), 0)
        acc.print(f"training {self.total_steps} steps x {self.tokens_per_step} tokens; world {self.world}, "
                  f"micro batch {cfg.micro_batch_size}, grad accumulation {self.grad_accum}")
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not acc.is_local_main_process, desc="train")
        self.timer.reset()
        updates_since_log = 0
        while self.step < self.total_steps:
            lr = self.scheduler.get_last_lr()[0]
            loss, grad_norm = self.update(self.step)
            self.step += 1
            updates_since_log += 1
            bar.update(1)
            last = self.step == self.total_steps
            if self.step % cfg.log_interval == 0 or last:
                loss = float(acc.reduce(loss, reduction="mean"))
                tps = updates_since_log * self.tokens_per_step / self.timer.training_seconds()  # no eval/saving time
                mfu = tps * self.flops_per_token / (self.peak_flops * self.world) if self.peak_flops else None
                row = {"step": self.step, "tokens": self.step * self.tokens_per_step, "train_loss": loss, "lr": lr,
                       "grad_norm": grad_norm, "tokens_per_sec": tps, "mfu": mfu,
                       "elapsed_seconds": round(self.elapsed(), 3), "memory_gb": round(memory_gb(acc.device), 3)}
                row |= self.timer.row()
                self.log_row(row)
                acc.log({k: v for k, v in row.items() if isinstance(v, float)}, step=self.step)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}")
                self.timer.reset()
                updates_since_log = 0
            if (cfg.eval_interval and self.step % cfg.eval_interval == 0) or last:
                with self.timer.phase("eval"):
                    val = self.evaluate()
                self.log_row({"step": self.step, "tokens": self.step * self.tokens_per_step, "val_loss": val})
                acc.log({"val_loss": val}, step=self.step)
            if cfg.is_export_step(self.step) and not last:
                with self.timer.phase("export"):
                    self.export(step_name(self.step), self.step)
            stop = self.should_stop()
            if (cfg.checkpoint_interval and self.step % cfg.checkpoint_interval == 0) or last or stop:
                with self.timer.phase("checkpoint"):
                    self.save_checkpoint(self.step)
            if stop:
                return self.interrupted(bar)
        bar.close()
        if cfg.is_export_step(self.step):
            self.export(step_name(self.step), self.step)
        self.export(FINAL, self.step)
        self.update_run_info(self.step, "completed")
        acc.end_training()
        acc.print(f"done: {self.out / HF_EXPORTS / FINAL}")
        return 0

    def interrupted(self, bar) -> int:
        bar.close()
        self.update_run_info(self.step, "interrupted")
        self.accelerator.end_training()
        name = signal.Signals(self.stop_signal).name if self.stop_signal else "a signal on another rank"
        # the one `error: interrupted by SIG; what is kept` line every command ends an interruption with
        self.accelerator.print(
            f"error: interrupted by {name}; the checkpoint of step {self.step} is saved: continue with "
            f"--resume_from_checkpoint auto --output_dir {self.out}", file=sys.stderr)
        return 128 + (self.stop_signal or signal.SIGTERM)
