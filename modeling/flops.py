"""Derived compute facts, one definition for the trainer (MFU, run_info.json) and the model card.

Torch-free: the card builds without torch. `flops_per_token` takes the model config as a dict (config.json or
`GPT2Config.to_dict()`).
"""

FLOPS_FORMULA = ("6·N + 12·n_layer·n_embd·seq_len (PaLM appendix B, as nanoGPT; N = weight matrices + tied "
                 "token embedding, position embeddings excluded)")


def flops_per_token(config: dict, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the matmuls of forward+backward (N without position embeddings, which are
    a lookup) plus 12 * n_layer * n_embd * seq_len for attention scores and values (PaLM appendix B, nanoGPT)."""
    n_embd, n_layer = config["n_embd"], config["n_layer"]
    n_inner = config.get("n_inner") or 4 * n_embd
    per_layer = 4 * n_embd * n_embd + 2 * n_embd * n_inner  # qkv + attn proj + mlp weights
    n = n_layer * per_layer + config["vocab_size"] * n_embd  # + tied embedding / lm_head
    return 6.0 * n + 12.0 * n_layer * n_embd * seq_len


# Per device, keyed by the EXACT name `torch.cuda.get_device_name()` reports (no substring matching: "H100" must
# not price an "H100 NVL" as an SXM part). peak = dense (no sparsity) BF16 tensor-core FLOP/s, tdp = max board power
# in W, both from NVIDIA's datasheets: A100 (2021, "BF16 312 TFLOPS", 400 W SXM / 250 W PCIe 40GB / 300 W PCIe
# 80GB), H100 (2023: SXM 1,979 / PCIe 1,513 / NVL 1,671 TFLOPS with sparsity, halved here; 700 / 350 / 400 W),
# H200 (SXM 1,979 / NVL 1,671 with sparsity; 700 / 600 W), L40S (362.05 TFLOPS dense; 350 W), HGX B200 (4.5
# PFLOPS with sparsity; 1000 W). A device missing here has no MFU and no default power: never a guess.
DEVICES = {
    "NVIDIA A100-SXM4-40GB": {"peak_bf16_flops": 312e12, "tdp_watts": 400},
    "NVIDIA A100-SXM4-80GB": {"peak_bf16_flops": 312e12, "tdp_watts": 400},
    "NVIDIA A100-PCIE-40GB": {"peak_bf16_flops": 312e12, "tdp_watts": 250},
    "NVIDIA A100 80GB PCIe": {"peak_bf16_flops": 312e12, "tdp_watts": 300},
    "NVIDIA H100 80GB HBM3": {"peak_bf16_flops": 989.5e12, "tdp_watts": 700},  # H100 SXM5
    "NVIDIA H100 PCIe": {"peak_bf16_flops": 756.5e12, "tdp_watts": 350},
    "NVIDIA H100 NVL": {"peak_bf16_flops": 835.5e12, "tdp_watts": 400},
    "NVIDIA H200": {"peak_bf16_flops": 989.5e12, "tdp_watts": 700},  # H200 SXM 141GB
    "NVIDIA H200 NVL": {"peak_bf16_flops": 835.5e12, "tdp_watts": 600},
    "NVIDIA L40S": {"peak_bf16_flops": 362.05e12, "tdp_watts": 350},
    "NVIDIA B200": {"peak_bf16_flops": 2.25e15, "tdp_watts": 1000},
}


def peak_bf16_flops(device_name: str | None) -> float | None:
    """Dense bf16 peak FLOP/s of one device by its exact name, None if not in the table."""
    return DEVICES.get(device_name or "", {}).get("peak_bf16_flops")


def tdp_watts(device_name: str | None) -> float | None:
    """Published max board power of one device by its exact name, None if not in the table."""
    return DEVICES.get(device_name or "", {}).get("tdp_watts")
