"""Per-sequence training losses: the mean next-token loss of every sequence of every global batch, at the update
that trained on it (written by training/trainer.py, read by `gpt2-owt trace find --run_dir`).

    run_dir/sequence_losses/
      info.json            {"global_batch_size": B, "steps_per_shard": K, "dtype": "float32"}
      steps_00000000.f32   raw little-endian float32, row-major [K, B]: row i = update step (0-based) s = start + i,
      steps_00001000.f32   column j = row j of that step's global batch (the sampler's global order)
      ...

Row s holds the losses of update s (0-based, the sampler's step), computed with the weights before that update
(= hf/step_s). A shard is appended one row per step, so a killed run leaves at most a partial last row; the reader
ignores it and the writer, on resume from checkpoint step S, keeps exactly the rows of updates < S (the shared
row-index rule), so after a kill and resume no step is missing or duplicated.
"""

import json
import os
from pathlib import Path

import numpy as np

from gpt2_owt.core.errors import UserError
from gpt2_owt.core.readers import DamagedFile, read_json
from gpt2_owt.training.run_dir import SEQUENCE_LOSSES

INFO = "info.json"
DTYPE = np.dtype("<f4")
STEPS_PER_SHARD = 1000


def shard_name(start: int) -> str:
    return f"steps_{start:08d}.f32"


def _shards(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for path in folder.glob("steps_*.f32"):
        try:
            found.append((int(path.stem.split("_", 1)[1]), path))
        except ValueError:
            continue
    return sorted(found)


def read_info(folder: Path) -> dict:
    """info.json through the one reader of JSON records: damaged (not JSON, or without positive integer
    global_batch_size and steps_per_shard) is one line naming the file, for the trainer resuming and the readers."""
    info = read_json(folder / INFO, "sequence losses info")
    for key in ("global_batch_size", "steps_per_shard"):
        value = info.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DamagedFile(f"sequence losses info {folder / INFO} is damaged ({key} {value!r}, expected a "
                              "positive integer)")
    return info


class SequenceLossWriter:
    """Appends one [global_batch_size] float32 row per update; opened at `start_step` (0, or the resumed step S),
    it first drops every row of updates >= S a killed run may have left."""

    def __init__(self, run_dir: str | Path, global_batch_size: int, start_step: int,
                 steps_per_shard: int = STEPS_PER_SHARD):
        self.folder = Path(run_dir) / SEQUENCE_LOSSES
        self.folder.mkdir(parents=True, exist_ok=True)
        info_path = self.folder / INFO
        if info_path.is_file():
            info = read_info(self.folder)
            if info["global_batch_size"] != global_batch_size:
                raise UserError(f"{self.folder} holds losses of global_batch_size {info['global_batch_size']}, "
                                f"this run has {global_batch_size}")
            steps_per_shard = info["steps_per_shard"]
        else:
            info_path.write_text(json.dumps({"global_batch_size": global_batch_size,
                                             "steps_per_shard": steps_per_shard, "dtype": "float32"}) + "\n")
        self.batch, self.per_shard = global_batch_size, steps_per_shard
        self.row_bytes = global_batch_size * DTYPE.itemsize
        self._truncate(start_step)
        self.next_step = start_step
        self._file = None

    def _truncate(self, step: int) -> None:
        """Keep exactly the rows of updates < step: later rows go, never-recorded earlier ones become NaN rows
        (a run that turned recording on at a resume), so row s of the shards is always update s."""
        for start, path in _shards(self.folder):
            if start >= step:
                path.unlink()
        for start in range(0, step, self.per_shard):
            rows = min(self.per_shard, step - start)
            path = self.folder / shard_name(start)
            path.touch()
            keep = min(path.stat().st_size // self.row_bytes, rows)  # whole rows only: a kill may leave half a row
            os.truncate(path, keep * self.row_bytes)
            with open(path, "ab") as f:
                f.write(np.full((rows - keep) * self.batch, np.nan, DTYPE).tobytes())

    def append(self, step: int, losses) -> None:
        losses = np.asarray(losses, dtype=DTYPE)
        if step != self.next_step or losses.shape != (self.batch,):
            raise ValueError(f"expected step {self.next_step} with {self.batch} losses, got step {step} {losses.shape}")
        if self._file is None or step % self.per_shard == 0:
            self.close()
            self._file = open(self.folder / shard_name(step - step % self.per_shard), "ab")
        self._file.write(losses.tobytes())
        self._file.flush()  # a killed process loses at most this row (the OS keeps what was written)
        self.next_step += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_sequence_losses(run_dir: str | Path, global_batch_size: int | None = None) -> np.ndarray:
    """float32 [steps recorded, global_batch_size]: row s = the losses of update s (NaN where never recorded).
    `global_batch_size`: the run's, which the recorded rows must have (a column is a row of the global batch)."""
    folder = Path(run_dir) / SEQUENCE_LOSSES
    if not (folder / INFO).is_file():
        raise UserError(f"{run_dir} has no {SEQUENCE_LOSSES}/ (trained with record_sequence_losses false?)")
    info = read_info(folder)
    batch, per_shard = info["global_batch_size"], info["steps_per_shard"]
    if global_batch_size is not None and batch != global_batch_size:
        raise DamagedFile(f"sequence losses info {folder / INFO} records global_batch_size {batch}, the run trained "
                          f"{global_batch_size}: these are not this run's losses")
    rows = []
    for expected, (start, path) in zip(range(0, 1 << 62, per_shard), _shards(folder)):
        if start != expected:
            raise UserError(f"{folder}: shard {path.name} found where {shard_name(expected)} was expected")
        data = np.fromfile(path, dtype=DTYPE)
        rows.append(data[: data.size - data.size % batch].reshape(-1, batch))
        if rows[-1].shape[0] < per_shard:
            break  # the last (partly written) shard
    return np.concatenate(rows) if rows else np.zeros((0, batch), DTYPE)
