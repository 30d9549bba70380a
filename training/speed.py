"""Training-time speed options that leave the model mathematically the same, and their undoing at export. The
trainer applies them in one block of `Trainer.build()` (training/trainer.py):

    speed.set_matmul_precision(cfg.tf32, on_cuda)
    speed.apply_model_options(model, cfg.fused_gelu, cfg.pad_vocab_to_multiple_of, cfg.compile)  # before prepare
    optimizer = build_optimizer(model, cfg, fused=cfg.fused_adamw)
    ... train: token_losses leaves out the logits of rows >= config.vocab_size ...
    state_dict = exported_state_dict(state_dict, model.config.vocab_size)   # plain GPT-2 layout again

- fused GELU: GPT-2's `gelu_new` (tanh approximation written as ~8 elementwise ops) runs as one
  `F.gelu(approximate="tanh")` kernel; same function (max difference measured by tests/test_speed.py). The module
  has no weights and `config.json` keeps `activation_function: gelu_new`.
- padded vocabulary: the tied embedding / output layer gets zero rows up to a multiple of 64 (50,257 -> 50,304), so
  the output matmul has tensor-core-friendly shapes. No token id reaches the extra rows and their logits are cut
  off before the loss, so they get zero gradient, stay zero under AdamW (decay of 0 is 0) and loss, gradients and
  updates equal the unpadded model's. Exports cut them off again: exactly `vocab_size` rows.
- regional compilation: each `GPT2Block` is compiled in place (`nn.Module.compile`), so parameter names (state
  dicts, checkpoints, exports) carry no `_orig_mod.` and a checkpoint resumes compiled or not; the causal mask is
  built outside the compiled blocks and SDPA keeps its own kernel choice. The loss head (pad cut, log-softmax,
  NLL: `token_losses`) is compiled as one more region; the output matmul stays in the model's own forward.
- bf16 logits stay bf16 until the loss head: the trainer's loss function runs the forward inside
  `accelerator.autocast()` and drops the autocast + fp32 output cast that `accelerator.prepare` wraps around the
  forward (`accelerator.unwrap_model(model, keep_fp32_wrapper=False)`), which would add one pass each way over the
  [tokens, 50k] logits; the loss head upcasts them itself inside its own pass. bf16 -> fp32 is exact, so the values
  are the same (tests/test_speed.py).
- fused AdamW, TF32 matmuls for fp32 on CUDA (`optimizer_kwargs`, `set_matmul_precision`).
"""

import functools

import torch
import torch.nn.functional as F
from gpt2_owt.core.errors import UserError
from gpt2_owt.modeling.model import fuse_gelu


def resolve_auto(value: bool | None, on_cuda: bool) -> bool:
    """A speed option left unset (None) is on exactly where it is known to pay off and keep numerics: CUDA."""
    return on_cuda if value is None else bool(value)


# ---------------------------------------------------------------------------------------------- model options
def padded_rows(vocab_size: int, multiple: int) -> int:
    """vocab_size rounded up to a multiple (0 or 1: no padding)."""
    return vocab_size if multiple <= 1 else -(-vocab_size // multiple) * multiple


def pad_vocab(model, multiple: int) -> int:
    """Append zero rows to the tied input embedding / output layer up to a multiple; returns the row count.
    `config.vocab_size` stays the real vocabulary (the exported config is unchanged)."""
    if not model.config.tie_word_embeddings:
        raise UserError("pad_vocab_to_multiple_of needs tied input/output embeddings (GPT-2's layout); set it to 0")
    wte = model.transformer.wte
    rows = padded_rows(wte.num_embeddings, multiple)
    if rows == wte.num_embeddings:
        return rows
    padded = torch.nn.Embedding(rows, wte.embedding_dim, device=wte.weight.device, dtype=wte.weight.dtype)
    with torch.no_grad():
        padded.weight.zero_()
        padded.weight[: wte.num_embeddings] = wte.weight
    model.transformer.wte = padded
    model.lm_head.weight = padded.weight  # keep the tie
    return rows


def compile_blocks(model) -> None:
    """Regional compilation: one compiled graph per transformer block, compiled in place (no wrapper module)."""
    for block in model.transformer.h:
        block.compile()


def apply_model_options(model, fused_gelu: bool, pad_multiple: int, compile_model: bool) -> int:
    """The model-side speed options, in place, before `accelerator.prepare`; returns the output layer's row count."""
    if fused_gelu:
        fuse_gelu(model)
    rows = pad_vocab(model, pad_multiple)
    if compile_model:
        compile_blocks(model)
    return rows


def exported_state_dict(state_dict: dict | None, vocab_size: int) -> dict | None:
    """The training state dict in the plain GPT-2 layout: embedding / output rows cut back to vocab_size. Tied
    tensors stay one tensor (so save_pretrained still drops the duplicate lm_head.weight). None stays None: under
    ZeRO-3 only the main process receives the gathered weights."""
    if state_dict is None:
        return None
    out, cut = {}, {}
    for key, tensor in state_dict.items():
        if key.endswith(("wte.weight", "lm_head.weight")) and tensor.shape[0] > vocab_size:
            ptr = tensor.data_ptr()
            if ptr not in cut:
                cut[ptr] = tensor[:vocab_size].clone()
            tensor = cut[ptr]
        out[key] = tensor
    # DeepSpeed's state dict clones each tensor on its own, which unties them: tie equal ones again, so
    # save_pretrained drops the duplicate lm_head.weight as for an unwrapped model
    wte, head = "transformer.wte.weight", "lm_head.weight"
    if wte in out and head in out and out[head] is not out[wte] and torch.equal(out[head], out[wte]):
        out[head] = out[wte]
    return out


def token_losses(logits: torch.Tensor, targets: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Next-token cross-entropy per position ([B, T] from logits [B, T, rows]) over the real tokens only: the logits
    of padded output rows are cut off before the softmax, so they get no probability mass and zero gradient."""
    logits = logits if logits.size(-1) == vocab_size else logits[..., :vocab_size]
    losses = F.cross_entropy(logits.float().reshape(-1, vocab_size), targets.reshape(-1), reduction="none")
    return losses.view_as(targets)


@functools.cache
def compiled_token_losses():
    """`token_losses` as one compiled graph. With GPT-2's 50k vocabulary the loss head is most of a small model's
    memory traffic: eager runs the pad cut, log_softmax, NLL and their backwards as separate passes over the
    [tokens, 50k] logits (plus a zero-filled padded gradient); compiled, forward and backward are one fused pass
    each. Shapes are static (one graph per micro-batch shape)."""
    return torch.compile(token_losses, dynamic=False)


def token_losses_fn(compiled: bool):
    return compiled_token_losses() if compiled else token_losses


# ---------------------------------------------------------------------------------------------- kernel options
def optimizer_kwargs(fused: bool) -> dict:
    """torch.optim.AdamW implementation: one fused kernel per step, or the multi-tensor (foreach) one."""
    return {"fused": True} if fused else {"foreach": True}


def set_matmul_precision(tf32: bool, on_cuda: bool) -> str:
    """TF32 tensor cores for fp32 matmuls/convolutions on CUDA (bf16 autocast matmuls are unaffected); returns
    torch's float32 matmul precision now in force."""
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
    return torch.get_float32_matmul_precision()


def check_attn_implementation(name: str) -> None:
    """Refuse an attention kernel this machine cannot run (before anything is written)."""
    if name == "flash_attention_2":
        from transformers.utils import is_flash_attn_2_available

        if not is_flash_attn_2_available():
            raise UserError("attn_implementation flash_attention_2 needs the flash_attn package and a CUDA GPU "
                            "(pip install flash-attn), or use --attn_implementation sdpa")
