"""Exposures: token positions of train.bin -> every (epoch, update, row) at which the trainer fed a window holding
them whole, through the trainer's own sampler inverted per epoch (training/data_dir.py), never by a loop over steps.

An occurrence [p, p+n) is exposed in window w (tokens [w*seq_len, w*seq_len+seq_len+1)) when w*seq_len <= p and
p+n <= w*seq_len+seq_len+1; every global sequence g that read w is one exposure at update u = g // global_batch_size
(0-based: it trained the weights of step u into those of step u + 1, core/steps.py), row g % global_batch_size of
its global batch.
"""

from dataclasses import dataclass

import numpy as np

from gpt2_owt.training.config import TrainConfig
from gpt2_owt.training.data_dir import WindowSampler



def export_schedule(cfg: TrainConfig, total_steps: int) -> list[int]:
    """The steps exported to hf/stepN by a run of this config (and its last step, hf/final)."""
    every = range(cfg.export_interval, total_steps + 1, cfg.export_interval) if cfg.export_interval > 0 else []
    return sorted({s for s in cfg.export_steps if s <= total_steps} | set(every) | {total_steps})


@dataclass
class Exposures:
    """The exposures of a query's occurrences: the first `listed` occurrences' one by one, and all of them counted
    per global sequence (so a common id's millions of exposures are never built one by one)."""

    holders: np.ndarray  # windows holding each listed occurrence whole (0 = split)
    occurrence: np.ndarray  # listed exposures: index into the positions (< listed) ...
    sequence: np.ndarray  # ... and global sequence id g (sorted)
    counted_sequence: np.ndarray  # every g that read a window holding an occurrence (sorted, distinct) ...
    counted_weight: np.ndarray  # ... and how many occurrences that window holds
    sampler: WindowSampler

    def update(self) -> np.ndarray:
        return self.sequence // self.sampler.global_batch_size

    def row(self) -> np.ndarray:
        return self.sequence % self.sampler.global_batch_size

    def epoch(self) -> np.ndarray:
        return self.sequence // self.sampler.num_windows

    def total(self) -> int:
        return int(self.counted_weight.sum())

    def first_update(self) -> int | None:
        return int(self.counted_sequence[0]) // self.sampler.global_batch_size if self.counted_sequence.size else None

    def before(self, steps) -> np.ndarray:
        """Exposures at updates < N, for each N in `steps`."""
        ends = np.searchsorted(self.counted_sequence, np.asarray(steps, np.int64) * self.sampler.global_batch_size)
        return np.concatenate([[0], np.cumsum(self.counted_weight)])[ends]


def exposures_of(positions: np.ndarray, length: int, sampler: WindowSampler, until_step: int,
                 listed: int = 0) -> Exposures:
    """Exposures at updates < until_step of the occurrences at sorted `positions`, the first `listed` one by one."""
    which, windows = sampler.windows_holding(positions, positions + length)
    num_sequences = until_step * sampler.global_batch_size
    # Sorted positions give non-decreasing windows (a window shared by two occurrences comes twice, in a row), so
    # the distinct windows and their occurrence counts are runs: no sort of the (maybe millions of) pairs.
    run_starts = np.flatnonzero(np.r_[True, windows[1:] != windows[:-1]]) if windows.size else np.zeros(0, np.int64)
    held = np.diff(run_starts, append=windows.size)
    index, counted = sampler.sequences_reading(windows[run_starts], num_sequences)
    cut = int(np.searchsorted(which, listed))  # pairs come grouped by occurrence, in order
    listed_index, sequence = sampler.sequences_reading(windows[:cut], num_sequences)
    return Exposures(holders=np.bincount(which[:cut], minlength=min(listed, len(positions))),
                     occurrence=which[listed_index], sequence=sequence, counted_sequence=counted,
                     counted_weight=held[index], sampler=sampler)


def cumulative_exposures(exposures: Exposures, schedule: list[int]) -> list[dict]:
    """Exposures at updates < N for each export step N (the weights of hf/stepN have seen exactly these)."""
    return [{"step": int(s), "exposures": int(c)} for s, c in zip(schedule, exposures.before(schedule))]
