"""`checkpoints.json`: what a published checkpoint series holds, written by upload.py to the release branch and read
by model_card/verify.py. Torch-free (json, hashlib): safetensors files are hashed tensor by tensor from their
header's byte ranges.

    {"format": 1, "repo_id": ..., "release_branch": "main",
     "data_order": {"data_seed", "init_seed", "seq_len", "global_batch_size", "data_manifest_sha256"},
     "checkpoints": [{"branch": "step0", "step": 0, "tokens": 0, "commit": <oid the weights were published in>,
                      "weights_sha256": <sha256 of model.safetensors>, "tensors_sha256": <digest of the tensors>,
                      "tensors": {name: sha256 of "dtype shape" + raw bytes}, "optimizer_state": {...} | null},
                     ..., {"branch": "main", "step": <final step>, ...}]}

`commit` is informative: verify judges content (hashes), so a branch re-committed with identical files passes.
"""

import hashlib
import json
import re
from pathlib import Path

from gpt2_owt.core.readers import DamagedFile, safetensors_header
from gpt2_owt.core.steps import parse_step_name
from gpt2_owt.modeling.hf_folder import WEIGHTS  # noqa: F401 (re-exported for upload.py and verify.py)
from gpt2_owt.training.data_dir import DATA_ORDER_FIELDS, read_recipe

CHECKPOINTS_JSON = "checkpoints.json"
FORMAT = 1
# Files every step branch shares byte for byte with the release branch (when the release has them).
SHARED_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
                "merges.txt", "special_tokens_map.json")
# The data order and the initial weights of the run: what the published checkpoints are a series of.
DATA_ORDER_KEYS = (*DATA_ORDER_FIELDS, "init_seed")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def tensor_digests(path: str | Path) -> dict[str, str]:
    """sha256 of every tensor (dtype, shape and raw bytes), by name; independent of the file's layout/metadata."""
    header, start = safetensors_header(path)
    digests = {}
    with open(path, "rb") as f:
        for name, meta in sorted(header.items()):
            if name == "__metadata__":
                continue
            begin, end = meta["data_offsets"]
            f.seek(start + begin)
            h = hashlib.sha256(f"{meta['dtype']} {meta['shape']}\n".encode())
            h.update(f.read(end - begin))
            digests[name] = h.hexdigest()
    return digests


def tensors_sha256(digests: dict[str, str]) -> str:
    """One digest over all tensors: two files hold the same tensors iff this is equal."""
    return hashlib.sha256("".join(f"{n} {d}\n" for n, d in sorted(digests.items())).encode()).hexdigest()


def data_order_identity(training_config: dict, data_manifest_sha256: str | None) -> dict:
    """What fixes the data order and the initial weights of a run (seeds default to `seed`, as in TrainConfig)."""
    return read_recipe(training_config, DATA_ORDER_KEYS) | {"data_manifest_sha256": data_manifest_sha256}


def checkpoint_entry(branch: str, step: int | None, tokens: int | None, weights: Path, weights_sha256: str,
                     commit: str | None, optimizer_state: dict | None = None) -> dict:
    digests = tensor_digests(weights)
    return {"branch": branch, "step": step, "tokens": tokens, "commit": commit, "weights_sha256": weights_sha256,
            "tensors_sha256": tensors_sha256(digests), "tensors": digests, "optimizer_state": optimizer_state}


def render(repo_id: str, release_branch: str, data_order: dict, entries: list[dict]) -> bytes:
    manifest = {"format": FORMAT, "repo_id": repo_id, "release_branch": release_branch, "data_order": data_order,
                "checkpoints": sorted(entries, key=lambda e: (e["step"] is None, e["step"] or 0, e["branch"]))}
    return (json.dumps(manifest, indent=1) + "\n").encode()


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a regular (non-LFS) file: what the Hub reports as its `oid`/`blob_id`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def parse(manifest, where: str) -> dict:
    """`manifest` (checkpoints.json's parsed JSON) checked against the schema above, or one DamagedFile naming
    `where` and the first problem: every key of every entry with its type, a stepN branch holding step N, no branch
    twice, and tokens = step x seq_len x global_batch_size (a swapped step/tokens pair is caught)."""
    def bad(why: str) -> DamagedFile:
        return DamagedFile(f"{CHECKPOINTS_JSON} {where} is damaged ({why})")

    def is_int(value, low: int = 0) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= low

    if not isinstance(manifest, dict):
        raise bad(f"a JSON {type(manifest).__name__}, expected an object")
    if manifest.get("format") != FORMAT:
        raise bad(f"format {manifest.get('format')!r}, expected {FORMAT}")
    order = manifest.get("data_order")
    if not isinstance(order, dict) or not all(is_int(order.get(k), 1 if k in ("seq_len", "global_batch_size") else 0)
                                              for k in DATA_ORDER_KEYS):
        raise bad(f"data_order must hold the integers {', '.join(DATA_ORDER_KEYS)}")
    entries = manifest.get("checkpoints")
    if not isinstance(entries, list) or not entries:
        raise bad("no checkpoints list")
    tokens_per_step = order["seq_len"] * order["global_batch_size"]
    seen = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise bad(f"checkpoints[{i}] is not an object")
        name = entry.get("branch", f"checkpoints[{i}]")
        checks = [("branch", isinstance(entry.get("branch"), str) and entry["branch"]),
                  ("step", is_int(entry.get("step"))), ("tokens", is_int(entry.get("tokens"))),
                  ("weights_sha256", isinstance(entry.get("weights_sha256"), str)
                   and SHA256.match(entry["weights_sha256"])),
                  ("tensors_sha256", isinstance(entry.get("tensors_sha256"), str)
                   and SHA256.match(entry["tensors_sha256"])),
                  ("tensors", isinstance(entry.get("tensors"), dict)),
                  ("commit", entry.get("commit") is None or isinstance(entry.get("commit"), str)),
                  ("optimizer_state", entry.get("optimizer_state") is None or isinstance(entry["optimizer_state"], dict))]
        for key, ok in checks:
            if not ok:
                shown = "missing" if key not in entry else f"{entry[key]!r}"
                raise bad(f"{name}: {key} is {shown}" if key != "branch" else f"checkpoints[{i}] has no branch name")
        if name in seen:
            raise bad(f"branch {name} is listed twice")
        seen.add(name)
        if parse_step_name(name) not in (None, entry["step"]):
            raise bad(f"branch {name} is listed with step {entry['step']}")
        if entry["tokens"] != entry["step"] * tokens_per_step:
            raise bad(f"{name}: step {entry['step']} x {tokens_per_step:,} tokens per step is "
                      f"{entry['step'] * tokens_per_step:,} tokens, it lists {entry['tokens']:,}")
    return manifest
