"""Where the wall time of a metrics interval went, so throughput counts training work only.

Each metrics row covers the wall time since the previous row: `data_seconds` (reading + copying the batch),
`forward_backward_seconds` (all micro batches; under DeepSpeed this includes its optimizer step, which the engine
runs inside the last backward), `record_seconds` (the per-update logs: fed-batch hash, per-sequence losses),
`optimizer_seconds` (clip, step, schedule, zero_grad), and the non-training phases
`eval_seconds`, `export_seconds`, `checkpoint_seconds`. tokens/s and MFU divide by the interval's wall time minus
the non-training phases. On CUDA every phase ends with a device synchronize, so kernels queued asynchronously are
charged to the phase that launched them (one sync per phase per update: small next to a 0.5M-token update).
"""

import contextlib
import time

import torch

TRAINING_PHASES = ("data", "forward_backward", "record", "optimizer")
EXCLUDED_PHASES = ("eval", "export", "checkpoint")


class IntervalTimer:
    def __init__(self, device: torch.device):
        self.sync = device.type == "cuda"
        self.reset()

    def reset(self) -> None:
        self.started = time.perf_counter()
        self.seconds = dict.fromkeys(TRAINING_PHASES + EXCLUDED_PHASES, 0.0)

    @contextlib.contextmanager
    def phase(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                torch.cuda.synchronize()
            self.seconds[name] += time.perf_counter() - t0

    def training_seconds(self) -> float:
        """Wall time of the interval so far, minus eval / export / checkpoint time."""
        return time.perf_counter() - self.started - sum(self.seconds[p] for p in EXCLUDED_PHASES)

    def row(self) -> dict:
        return {f"{name}_seconds": round(value, 4) for name, value in self.seconds.items()}
