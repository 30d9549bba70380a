"""A realistic training run folder and eval results for the model-card and upload tests.

`make_run_dir` trains the REAL tiny model a few AdamW steps on the token ids of a prepared data_dir (the
`owt_data_dir` fixture: genuine OpenWebText through `training.prepare_data`) and writes what the
trainer writes (the training/run_dir.py layout and keys): hf/step_0, hf/step_1 and hf/final hold different
weights. `make_results` writes an eval results.json in the shape documented in eval/evaluate.py.
"""

import json
import shutil
from pathlib import Path

import torch

import modeling
from eval.references import task_references
from training import run_dir as rd
from training.data_dir import MANIFEST, open_split

SEQ_LEN = 32
BATCH = 4
LR = 3e-3

TRAIN_CONFIG = {
    "model_config": "tiny", "data_dir": "/data/owt-sample", "output_dir": "/runs/tiny", "seed": 1337,
    "max_steps": 2, "micro_batch_size": BATCH, "global_batch_size": BATCH, "seq_len": SEQ_LEN,
    "learning_rate": LR, "min_lr": 3e-4, "warmup_steps": 0, "lr_scheduler_type": "cosine", "weight_decay": 0.1,
    "adam_beta1": 0.9, "adam_beta2": 0.95, "adam_eps": 1e-8, "grad_clip": 1.0, "mixed_precision": "no",
    "eval_interval": 1, "eval_iters": 1, "checkpoint_interval": 1, "export_steps": [0, 1],
    "resume_from_checkpoint": None, "report_to": ["tensorboard"], "gradient_accumulation_steps": 1, "world_size": 1,
}


def _token_batches(data_dir: Path, n: int) -> list[torch.Tensor]:
    """Consecutive (seq_len + 1)-token windows of the prepared train split (genuine OWT token ids)."""
    tokens = open_split(data_dir, "train").tokens
    per = BATCH * (SEQ_LEN + 1)
    return [torch.from_numpy(tokens[i * per:(i + 1) * per].astype("int64")).view(BATCH, SEQ_LEN + 1)
            for i in range(n)]


def _export(model, run_dir: Path, name: str, step: int, tokens: int) -> None:
    out = run_dir / rd.HF_EXPORTS / name
    model.save_pretrained(out)
    for f in sorted(modeling.TOKENIZER_SHA256):
        shutil.copy(modeling.TOKENIZER_DIR / f, out / f)
    sha = modeling.sha256_file(out / "model.safetensors")
    (out / "export_info.json").write_text(json.dumps({"step": step, "tokens": tokens, "weights_sha256": sha}))


def make_run_dir(run_dir: Path, data_dir: Path, with_cuda_hardware: bool = False) -> Path:
    """Train the tiny model 2 steps; export hf/step_0, hf/step_1, hf/final (= step 2); write every run file."""
    run_dir.mkdir(parents=True)
    model = modeling.build_model("tiny", seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.1)
    metrics = []
    tokens_per_step = BATCH * SEQ_LEN
    batches = _token_batches(data_dir, 3)
    _export(model, run_dir, rd.step_dir_name(0), 0, 0)
    for step, batch in enumerate(batches[:2], start=1):
        loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        tokens = step * tokens_per_step
        metrics.append({"step": step, "tokens": tokens, "train_loss": loss.item(), "lr": LR * (1 - 0.1 * step),
                        "grad_norm": 1.5, "tokens_per_sec": 1000.0, "mfu": None, "elapsed_seconds": 2.0 * step})
        with torch.no_grad():
            val = model(input_ids=batches[2][:, :-1], labels=batches[2][:, :-1]).loss.item()
        metrics.append({"step": step, "tokens": tokens, "val_loss": val})
        if step == 1:
            _export(model, run_dir, rd.step_dir_name(1), 1, tokens)
    _export(model, run_dir, rd.FINAL, 2, 2 * tokens_per_step)

    (run_dir / rd.METRICS).write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (run_dir / rd.TRAINING_CONFIG).write_text(json.dumps(TRAIN_CONFIG, indent=2))
    shutil.copyfile(data_dir / MANIFEST, run_dir / rd.DATA_MANIFEST)
    hardware = ({"device_type": "cuda", "device_name": "NVIDIA A100-SXM4-80GB", "num_processes": 8, "num_machines": 1,
                 "distributed_type": "DEEPSPEED", "mixed_precision": "bf16", "deepspeed_zero_stage": 1}
                if with_cuda_hardware else
                {"device_type": "cpu", "device_name": "x86_64", "num_processes": 1, "num_machines": 1,
                 "distributed_type": "NO", "mixed_precision": "no", "deepspeed_zero_stage": None})
    run_info = {
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "command": ["accelerate", "launch", "-m", "training.train", "--config", "training/configs/tiny.yaml"],
        "versions": {"torch": torch.__version__, "transformers": "5.23.0", "accelerate": "1.15.0",
                     "deepspeed": "0.19.8", "datasets": "5.2.0", "tokenizers": "0.23.3",
                     "huggingface_hub": "2.4.0", "python": "3.11.9"},
        "hardware": hardware,
        "started_at": "2026-11-23T10:00:00+00:00", "finished_at": "2026-11-23T10:00:04+00:00",
        "wall_time_seconds": 3600.0, "status": "completed", "steps_done": 2, "tokens_seen": 2 * tokens_per_step,
        "num_parameters": modeling.count_parameters(model), "flops_per_token": 6.0 * modeling.count_parameters(model),
        "data_dir": str(data_dir), "data_manifest_sha256": modeling.sha256_file(run_dir / rd.DATA_MANIFEST),
    }
    (run_dir / rd.RUN_INFO).write_text(json.dumps(run_info, indent=2))
    return run_dir


RESULTS_TASKS = {
    "wikitext": {"metrics": {"word_perplexity": 41234.5, "byte_perplexity": 7.25, "bits_per_byte": 2.858},
                 "counts": {"documents": 62, "words": 245569, "bytes": 1290590, "tokens": 287644},
                 "settings": {"max_length": 256}, "data": {"source": "wikitext-2-raw-v1/wiki.test.raw", "sha256": "173c"}},
    "lambada_openai": {"metrics": {"acc": 0.0123, "perplexity": 98765.4, "acc_last_token": 0.02},
                       "counts": {"examples": 5153}},
    "owt_val": {"metrics": {"loss": 9.876, "perplexity": 19467.1}, "counts": {"tokens": 987, "windows": 4}},
}


def make_results(path: Path, weights_sha256: str, tasks: dict | None = None) -> Path:
    results = {
        "model": {"name_or_path": "runs/tiny/hf/final", "revision": None, "weights_sha256": weights_sha256,
                  "num_parameters": 6862464},
        "settings": {"max_length": 256, "batch_size": 8, "dtype": "float32", "device": "cpu"},
        "versions": {"transformers": "5.23.0", "torch": torch.__version__},
        "created_at": "2026-11-23T11:00:00+00:00",
        # each task carries its published references, as eval.evaluate writes them
        "tasks": {task: {**block, "references": task_references(task, block["metrics"])}
                  for task, block in (RESULTS_TASKS if tasks is None else tasks).items()},
    }
    path.write_text(json.dumps(results, indent=2))
    return path
