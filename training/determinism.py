"""Deterministic mode (`deterministic: true`): every kernel choice that can vary between two identical runs is pinned.

Set before CUDA is first used (cuBLAS reads CUBLAS_WORKSPACE_CONFIG when it creates its handle). What it buys and
costs on GPU is stated in the README (unmeasured until a GPU run); on CPU the trainer is bitwise reproducible anyway.
"""

import os

import torch

CUBLAS_WORKSPACE = ":4096:8"  # fixed cuBLAS workspaces: split-K reductions always in the same order


def sdpa_backend(on_cuda: bool, mixed_precision: str) -> str:
    """The one SDPA kernel a deterministic run uses: flash (needs bf16 on CUDA; also CPU's own) or else math."""
    return "flash" if (not on_cuda or mixed_precision == "bf16") else "math"


def pin_sdpa_backend(backend: str) -> None:
    torch.backends.cuda.enable_flash_sdp(backend == "flash")
    torch.backends.cuda.enable_mem_efficient_sdp(False)  # its backward uses atomic adds (non-deterministic)
    torch.backends.cuda.enable_cudnn_sdp(False)
    torch.backends.cuda.enable_math_sdp(backend == "math")


def configure(deterministic: bool, on_cuda: bool, mixed_precision: str) -> dict:
    """Apply deterministic mode (or leave torch's defaults); returns what is in force, for run_info.json."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        os.environ["FLASH_ATTENTION_DETERMINISTIC"] = "1"  # transformers' flash_attention_2 path (flash_attn)
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        pin_sdpa_backend(sdpa_backend(on_cuda, mixed_precision))
    return recorded()


def recorded() -> dict:
    b = torch.backends.cuda
    return {
        "use_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "flash_attention_deterministic": os.environ.get("FLASH_ATTENTION_DETERMINISTIC") == "1",
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "sdpa_backends": {"flash": b.flash_sdp_enabled(), "mem_efficient": b.mem_efficient_sdp_enabled(),
                          "cudnn": b.cudnn_sdp_enabled(), "math": b.math_sdp_enabled()},
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
