"""Step numbers: one convention for every file, folder, branch and report of the pipeline.

    step N    the state after N optimizer updates (N >= 0; step 0 = the initial weights). Its name is `stepN`
              everywhere: checkpoints/stepN/, hf/stepN/, the Hub branch stepN (Pythia's convention). metrics.jsonl
              rows, export_info.json, checkpoint_info.json and checkpoints.json say "step": N.
    update u  the u-th optimizer update (0-based). It trains on global batch u of the sampler and turns step u into
              step u + 1. Every per-update record says "update": fed_batches.jsonl rows, sequence_losses/ rows, the
              data order (`gpt2-owt data-order --update u`) and each exposure reported by `gpt2-owt trace`.

So the weights of step N have been trained on exactly the batches of updates 0 .. N-1 ("updates < N").
Torch-free (standard library only).
"""

import re

_STEP_NAME = re.compile(r"^step(\d+)$")


def step_name(step: int) -> str:
    """`stepN`: the folder (checkpoints/, hf/) and Hub branch name of step N."""
    return f"step{step}"


def parse_step_name(name: str) -> int | None:
    """N for a name `stepN`, None for any other name."""
    m = _STEP_NAME.match(name)
    return int(m.group(1)) if m else None
