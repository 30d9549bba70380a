"""Train GPT-2 with Accelerate (single GPU, DDP, DeepSpeed ZeRO-1/2/3, multi-node) from one YAML config.

    accelerate launch [--config_file accelerate_configs/X.yaml] -m gpt2_owt.cli train \
        --config training/configs/gpt2-124m-owt.yaml [--field value ...]

Reads a prepared `data_dir/` (training/data_dir.py), writes a `run_dir/` (training/run_dir.py). Read top to bottom:
checks (nothing is written until every input is valid) -> run folder -> model/optimizer/schedule -> loop.

Step N means "after N optimizer updates": checkpoints/stepN and hf/stepN hold the weights after N updates,
hf/step0 the initial weights. Update N (0-based) trains on global batch N of the sampler (training/data_dir.py)
with learning rate lr(N) of the schedule.
"""

import contextlib
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from gpt2_owt.modeling import UserError, build_model, cli_main, load_config, sha256_file
from gpt2_owt.modeling.flops import flops_per_token, peak_bf16_flops
from gpt2_owt.modeling.hf_folder import save_hf_folder
from gpt2_owt.modeling.output_paths import check_not_overlapping
from gpt2_owt.modeling.records import package_versions, read_json
from gpt2_owt.training import checkpoints as ckpt
from gpt2_owt.training import determinism, speed
from gpt2_owt.modeling.steps import step_name
from gpt2_owt.training.run_dir import CHECKPOINTS, DATA_MANIFEST, FINAL, HF_EXPORTS, LOGS, RUN_INFO, TRAINING_CONFIG
from gpt2_owt.training.config import TrainConfig, parse_config
from gpt2_owt.training.data_dir import MANIFEST, TokenSplit, WindowSampler, batch_sha256, open_split, read_windows
from gpt2_owt.training.run_dir import RunDir
from gpt2_owt.training.sequence_losses import SequenceLossWriter
from gpt2_owt.training.timing import IntervalTimer

# Model-config keys a checkpoint must share with the run that resumes it (they fix the tensors' shapes/meaning).
MODEL_IDENTITY_KEYS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "activation_function",
                       "layer_norm_epsilon", "tie_word_embeddings", "scale_attn_by_inverse_layer_idx",
                       "reorder_and_upcast_attn")


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


def once_per_node(acc, check):
    """check() on each node's local main process only (the others would re-read the same files); every process
    gets the verdict: the result, or the first UserError raised on any node. The others wait in one all-gather,
    bounded by the process-group timeout."""
    verdict = None
    if acc.is_local_main_process:
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
    manifest = once_per_node(acc, lambda: check_data(cfg, vocab_size))
    return open_split(cfg.data_dir, "train"), open_split(cfg.data_dir, "val"), manifest


def model_identity(model_config, pad_vocab_to_multiple_of: int) -> dict:
    """The model's shape as a checkpoint must match it: config keys plus the output rows it trains with (padding)."""
    d = model_config.to_dict()
    return {k: d.get(k) for k in MODEL_IDENTITY_KEYS} | {
        "vocab_rows": speed.padded_rows(model_config.vocab_size, pad_vocab_to_multiple_of)}


def find_checkpoint(cfg: TrainConfig) -> tuple[Path, dict] | None:
    """(path, verified info) of the checkpoint to resume from: None (fresh start), the newest intact one ('auto',
    skipping damaged newer ones), or the given path, which must be intact (training/checkpoints.py)."""
    if cfg.resume_from_checkpoint is None:
        return None
    if cfg.resume_from_checkpoint == "auto":
        return ckpt.find_resumable(Path(cfg.output_dir) / CHECKPOINTS)
    path = Path(cfg.resume_from_checkpoint)
    return path, ckpt.read_info(path)


def restarts_same_run(cfg: TrainConfig, out: Path, identity: dict) -> bool:
    """`--resume_from_checkpoint auto` on a folder whose run never reached a checkpoint: start it again if it is
    the same run (same model, data and run identity), e.g. a job preempted or crashed before its first save."""
    if cfg.resume_from_checkpoint != "auto" or not (out / TRAINING_CONFIG).is_file():
        return False
    previous = read_json(out / TRAINING_CONFIG)
    manifest = out / DATA_MANIFEST
    same_data = previous.get("data_dir") == cfg.data_dir or (
        manifest.is_file() and sha256_file(manifest) == identity["data_manifest_sha256"])  # (copy may be missing)
    changes = ckpt.identity_changes(ckpt.run_identity(previous, identity["model"], None), identity)
    return previous.get("model_config") == cfg.model_config and same_data and set(changes) <= {"data_manifest_sha256"}


def check_output_dir(cfg: TrainConfig, resuming: bool, identity: dict) -> bool:
    """A fresh run must not land on top of another run, unless --overwrite_output_dir. Returns whether the folder
    holds an earlier run's files that the fresh start replaces."""
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"output_dir {out} exists and is not a folder")
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


def build_scheduler(optimizer, cfg: TrainConfig):
    """lr(s) = peak * (s + 1) / warmup for s < warmup, then cosine from peak to min_lr, reaching min_lr exactly at
    the last update s = total_steps - 1 (transformers' `cosine_warmup_with_min_lr`)."""
    from transformers import get_scheduler

    return get_scheduler("cosine_warmup_with_min_lr", optimizer, num_warmup_steps=cfg.warmup_steps,
                         num_training_steps=cfg.total_steps(), scheduler_specific_kwargs={"min_lr": cfg.min_lr})


def apply_changed_hyperparameters(optimizer, scheduler, cfg: TrainConfig) -> None:
    """load_state restores the optimizer's and schedule's own copies of lr, betas, eps and weight decay; after an
    allowed config change (--allow_changed_config) the new values govern from the resumed step on. The schedule's
    shape (warmup, total steps, min_lr) already comes from the new lambda; only its base lr is stored state."""
    decay_group = optimizer.param_groups[0]
    for group in optimizer.param_groups:
        group.update(betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps, initial_lr=cfg.learning_rate)
    decay_group["weight_decay"] = cfg.weight_decay
    schedule = getattr(scheduler, "scheduler", scheduler)  # inside Accelerate's wrapper
    schedule.base_lrs = [cfg.learning_rate] * len(optimizer.param_groups)
    schedule._last_lr = [base * fn(schedule.last_epoch) for base, fn in zip(schedule.base_lrs, schedule.lr_lambdas)]
    for group, lr in zip(optimizer.param_groups, schedule._last_lr):
        group["lr"] = lr


def lm_token_losses(model, tokens: torch.Tensor, vocab_size: int, compiled: bool = False) -> torch.Tensor:
    """Next-token cross-entropy [B, seq_len] of windows [B, seq_len + 1]: inputs tokens[:, :-1], targets tokens[:, 1:].
    Logits of padded output rows (>= vocab_size, training/speed.py) are left out; `compiled` runs the loss head as
    one compiled graph (the `compile` lever). Training takes its loss as the mean of this tensor whether or not
    per-sequence losses are recorded, so recording them cannot change the weights."""
    logits = model(input_ids=tokens[:, :-1], use_cache=False).logits
    return speed.token_losses_fn(compiled)(logits, tokens[:, 1:], vocab_size)


def lm_loss(model, tokens: torch.Tensor, vocab_size: int, compiled: bool = False) -> torch.Tensor:
    """Mean next-token cross-entropy of windows [B, seq_len + 1]."""
    return lm_token_losses(model, tokens, vocab_size, compiled).mean()


# ----------------------------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------------------------


class Trainer:
    def __init__(self, cfg: TrainConfig, argv: list[str]):
        self.cfg = cfg
        self.argv = argv
        self.out = Path(cfg.output_dir)
        self.run_dir = RunDir(self.out)  # written by the main process only
        self.model_config = load_config(cfg.model_config)
        if cfg.seq_len > self.model_config.n_positions:
            raise UserError(f"seq_len {cfg.seq_len} exceeds the model's n_positions {self.model_config.n_positions}")
        check_output_apart_from_data(cfg)
        speed.check_attn_implementation(cfg.attn_implementation)
        self.accelerator = acc = make_accelerator(cfg)
        # the precision asked for (under DeepSpeed, Accelerate reports "no" once bf16 becomes torch_autocast)
        self.mixed_precision = str(acc.mixed_precision)
        self.train_split, self.val_split, self.manifest = open_data(cfg, self.model_config.vocab_size, acc)
        self.manifest_sha256 = sha256_file(Path(cfg.data_dir) / MANIFEST)
        self.identity = ckpt.run_identity(asdict(cfg) | {"total_steps": cfg.total_steps()},
                                          model_identity(self.model_config, cfg.pad_vocab_to_multiple_of),
                                          self.manifest_sha256)
        self.resume_path, self.resume_info = find_checkpoint(cfg) or (None, None)
        self.config_changes = ckpt.check_identity(self.resume_path, self.resume_info, self.identity,
                                                  cfg.allow_changed_config) if self.resume_path else {}
        self.replace_previous = check_output_dir(cfg, self.resume_path is not None, self.identity)

        on_cuda = acc.device.type == "cuda"
        cfg.compile = speed.resolve_auto(cfg.compile, on_cuda)  # resolved values go to training_config.json
        cfg.fused_adamw = speed.resolve_auto(cfg.fused_adamw, on_cuda)
        speed.set_matmul_precision(cfg.tf32, on_cuda)
        self.determinism = determinism.configure(cfg.deterministic, on_cuda, self.mixed_precision)
        self.world = acc.num_processes
        self.grad_accum = cfg.gradient_accumulation_steps(self.world)
        acc.gradient_accumulation_steps = self.grad_accum
        self.zero_stage = configure_deepspeed(acc, cfg, self.grad_accum)
        if self.resume_path:
            ckpt.check_layout(self.resume_path, self.resume_info, self.world, self.zero_stage)
        self.total_steps = cfg.total_steps()
        self.tokens_per_step = cfg.tokens_per_step()
        self.sampler = WindowSampler.for_run(cfg, self.train_split)
        self.val_sampler = WindowSampler.for_run(cfg, self.val_split, validation=True)
        self.flops_per_token = flops_per_token(self.model_config.to_dict(), cfg.seq_len)
        self.peak_flops = peak_flops(acc.device, self.mixed_precision)
        self.stop_signal = None
        acc.wait_for_everyone()  # every process has passed its checks before the main one writes anything

    # -------------------------------------------------------------------------------- run folder
    def write_run_dir(self) -> None:
        acc, cfg = self.accelerator, self.cfg
        if acc.is_main_process:
            if self.replace_previous:
                self.run_dir.clear()
            resolved = asdict(cfg) | {"gradient_accumulation_steps": self.grad_accum, "world_size": self.world,
                                      "total_steps": self.total_steps, "tokens_per_step": self.tokens_per_step}
            manifest_path = Path(cfg.data_dir) / MANIFEST
            self.run_dir.start(resolved, manifest_path, self.run_info_fields(sha256_file(manifest_path)),
                               resuming=self.resume_path is not None)
        acc.wait_for_everyone()

    def run_info_fields(self, manifest_sha256: str) -> dict:
        """What run_info.json records about this run (RunDir adds started_at, wall time and status)."""
        acc = self.accelerator
        device = acc.device
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", self.world))
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
            "steps_done": self.resume_info["step"] if self.resume_info else 0,
            "tokens_seen": self.resume_info["tokens"] if self.resume_info else 0,
            "num_parameters": None,  # filled once the model exists
            "flops_per_token": self.flops_per_token,
            "data_dir": str(Path(self.cfg.data_dir).resolve()),
            "data_manifest_sha256": manifest_sha256,
            # resumes that changed the run identity (--allow_changed_config): [{"from_step", "changes", ...}]
            "segments": ckpt.add_segment(self.previous_segments(),
                                         self.resume_info["step"] if self.resume_info else 0, self.config_changes),
            "determinism": self.determinism,
        }

    def previous_segments(self) -> list[dict]:
        path = self.out / RUN_INFO
        return read_json(path).get("segments", []) if self.resume_path and path.is_file() else []

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
        cfg, acc = self.cfg, self.accelerator
        model = build_model(self.model_config, attn_implementation=cfg.attn_implementation, seed=cfg.init_seed)
        if acc.is_main_process:
            self.run_dir.run_info["num_parameters"] = sum(p.numel() for p in model.parameters())
        self.vocab_rows = speed.apply_model_levers(model, cfg.fused_gelu, cfg.pad_vocab_to_multiple_of, cfg.compile)
        optimizer = build_optimizer(model, cfg, fused=cfg.fused_adamw)
        scheduler = build_scheduler(optimizer, cfg)
        self.model, self.optimizer, self.scheduler = acc.prepare(model, optimizer, scheduler)
        speed.keep_bf16_outputs(acc.unwrap_model(self.model))
        self.step, self.elapsed_before = 0, 0.0
        if self.resume_path is not None:
            acc.load_state(str(self.resume_path))
            if self.config_changes:
                apply_changed_hyperparameters(self.optimizer, self.scheduler, cfg)
            self.step = int(self.resume_info["step"])
            self.elapsed_before = float(self.resume_info.get("elapsed_seconds", 0.0))
            if acc.is_main_process:  # drop rows the killed run wrote after this checkpoint: they are recomputed
                self.run_dir.truncate_rows(self.step)
            acc.print(f"resumed from {self.resume_path} at step {self.step}")
        # opened at the (resumed) step: keeps the rows of updates < step, so none is missing or duplicated
        self.sequence_loss_writer = SequenceLossWriter(self.out, cfg.global_batch_size, self.step) \
            if cfg.record_sequence_losses and acc.is_main_process else None

    # -------------------------------------------------------------------------------- one update
    def rank_batch(self, step: int, sampler: WindowSampler, split: TokenSplit) -> torch.Tensor:
        windows = sampler.rank_windows(step, self.accelerator.process_index, self.world)
        return torch.from_numpy(read_windows(split, windows, self.cfg.seq_len)).to(self.accelerator.device)

    def train_step(self, step: int) -> tuple[torch.Tensor, float | None]:
        acc, micro, timer = self.accelerator, self.cfg.micro_batch_size, self.timer
        with timer.phase("data"):
            tokens = self.rank_batch(step, self.sampler, self.train_split)
            if self.cfg.record_fed_batches:
                self.trace(step, tokens)
        with timer.phase("forward_backward"):
            loss_sum = torch.zeros((), device=acc.device)
            sequence_losses = []
            for m in range(self.grad_accum):
                with acc.accumulate(self.model):
                    token_losses = lm_token_losses(self.model, tokens[m * micro : (m + 1) * micro],
                                                   self.model_config.vocab_size, self.cfg.compile)
                    loss = token_losses.mean()
                    acc.backward(loss)  # divides by grad_accum; under DeepSpeed it also steps at the boundary
                loss_sum += loss.detach()
                sequence_losses.append(token_losses.detach().mean(dim=1))
            if self.cfg.record_sequence_losses:
                self.record_sequence_losses(step, torch.cat(sequence_losses))
        assert acc.sync_gradients, "gradient accumulation boundary out of step with the global batch"
        with timer.phase("optimizer"):
            # Outside DeepSpeed this clips; under DeepSpeed the engine already clipped (gradient_clipping) and
            # stepped, and this returns the norm it measured.
            grad_norm = acc.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip or float("inf"))
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss_sum / self.grad_accum, None if grad_norm is None else float(grad_norm)

    def record_sequence_losses(self, step: int, losses: torch.Tensor) -> None:
        """Append the step's per-sequence losses, gathered across ranks in rank = global row order."""
        losses = self.accelerator.gather(losses).cpu().numpy()
        if self.sequence_loss_writer is not None:
            self.sequence_loss_writer.append(step, losses)

    def trace(self, step: int, tokens: torch.Tensor) -> None:
        """Record a hash of the global batch exactly as fed (gathered across ranks in rank = global order)."""
        fed = self.accelerator.gather(tokens).cpu().numpy()
        if self.accelerator.is_main_process:
            self.run_dir.log_fed_batch(step, batch_sha256(fed))

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over eval_iters fixed validation batches (the first windows of val, same every time)."""
        acc, micro = self.accelerator, self.cfg.micro_batch_size
        self.model.eval()
        losses = []
        for b in range(self.cfg.eval_iters):
            tokens = self.rank_batch(b, self.val_sampler, self.val_split)
            for m in range(0, tokens.size(0), micro):
                losses.append(lm_loss(self.model, tokens[m : m + micro], self.model_config.vocab_size))
        self.model.train()
        return float(acc.reduce(torch.stack(losses).mean(), reduction="mean"))

    # -------------------------------------------------------------------------------- saving
    def save_checkpoint(self, step: int) -> None:
        """accelerator.save_state into checkpoints/stepN, complete-or-absent: written under a temp name and renamed
        by the main process once every rank has finished writing."""
        acc = self.accelerator
        tmp = self.run_dir.checkpoint_tmp(step)
        if acc.is_main_process:
            self.run_dir.begin_checkpoint(step)
        acc.wait_for_everyone()
        with ckpt.complete_or_absent(tmp, self.out / CHECKPOINTS / step_name(step)):
            acc.save_state(str(tmp))
            acc.wait_for_everyone()
            if acc.is_main_process:
                info = ckpt.write_info(tmp, {"step": step, "tokens": step * self.tokens_per_step,
                                             "elapsed_seconds": self.elapsed(), "world_size": self.world,
                                             "zero_stage": self.zero_stage, "identity": self.identity,
                                             "model": self.identity["model"], "seq_len": self.cfg.seq_len,
                                             "global_batch_size": self.cfg.global_batch_size,
                                             "init_seed": self.cfg.init_seed, "data_seed": self.cfg.data_seed,
                                             "vocab_rows": self.vocab_rows})
        if acc.is_main_process:
            self.run_dir.commit_checkpoint(tmp, info, self.cfg.keep_last_checkpoints,
                                           self.cfg.checkpoint_milestone_interval)
            self.update_run_info(step, "running")
        acc.wait_for_everyone()

    def export(self, name: str, step: int) -> None:
        """A from_pretrained folder at hf/<name> (modeling/hf_folder.py), with export_info.json."""
        acc = self.accelerator
        # collective: the full weights, gathered under ZeRO-3; the plain GPT-2 layout whatever levers trained it
        state_dict = speed.exported_state_dict(acc.get_state_dict(self.model), self.model_config.vocab_size)
        if acc.is_main_process:
            final = self.run_dir.export_dir(name)
            with ckpt.complete_or_absent(final.with_name(f".{name}.tmp-{os.getpid()}"), final):  # its temp name
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
            try:
                return self.train_loop()
            finally:
                if self.sequence_loss_writer is not None:
                    self.sequence_loss_writer.close()

    def train_loop(self) -> int:
        from tqdm.auto import tqdm

        acc, cfg = self.accelerator, self.cfg
        if self.step == 0 and cfg.is_export_step(0):
            self.export(step_name(0), 0)
        acc.print(f"training {self.total_steps} steps x {self.tokens_per_step} tokens; world {self.world}, "
                  f"micro batch {cfg.micro_batch_size}, grad accumulation {self.grad_accum}")
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not acc.is_local_main_process, desc="train")
        self.timer, steps_since_log = IntervalTimer(acc.device), 0
        while self.step < self.total_steps:
            lr = self.scheduler.get_last_lr()[0]
            loss, grad_norm = self.train_step(self.step)
            self.step += 1
            steps_since_log += 1
            bar.update(1)
            last = self.step == self.total_steps
            if self.step % cfg.log_interval == 0 or last:
                loss = float(acc.reduce(loss, reduction="mean"))
                tps = steps_since_log * self.tokens_per_step / self.timer.training_seconds()  # no eval/saving time
                mfu = tps * self.flops_per_token / (self.peak_flops * self.world) if self.peak_flops else None
                row = {"step": self.step, "tokens": self.step * self.tokens_per_step, "train_loss": loss, "lr": lr,
                       "grad_norm": grad_norm, "tokens_per_sec": tps, "mfu": mfu,
                       "elapsed_seconds": round(self.elapsed(), 3), "memory_gb": round(memory_gb(acc.device), 3)}
                row |= self.timer.row()
                self.log_row(row)
                acc.log({k: v for k, v in row.items() if isinstance(v, float)}, step=self.step)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}")
                self.timer.reset()
                steps_since_log = 0
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
        self.accelerator.print(
            f"interrupted by {name} after step {self.step}; checkpoint saved. Continue with "
            f"--resume_from_checkpoint auto --output_dir {self.out}", file=sys.stderr)
        return 128 + (self.stop_signal or signal.SIGTERM)


@cli_main
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg = parse_config(argv)
    code = Trainer(cfg, argv).run()
    if code:
        raise SystemExit(code)
    return 0


if __name__ == "__main__":
    main()
