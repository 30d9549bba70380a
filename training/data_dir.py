"""The prepared-data folder (`data_dir/`): its layout, written down once, and the reader every stage uses.

    data_dir/
      manifest.json     what made this folder and hashes of every file below (training/manifest.py writes/checks it)
      train.bin         uint16 GPT-2 token ids, documents back to back, each followed by EOT 50256 (nanoGPT format)
      val.bin
      train.docs.npy    int64 [n_docs + 1]: token offset where each document starts; the last entry = len(train.bin)
      val.docs.npy
      train.rows.npy    int64 [n_docs]: the row of each document in the source dataset (before the split)
      val.rows.npy

Token files are read by memmap: nothing is loaded whole, so a 9B-token train.bin opens instantly.
"""

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpt2_owt.core.errors import UserError

SPLITS = ("train", "val")
TOKEN_DTYPE = np.uint16
MANIFEST = "manifest.json"


def tokens_file(split: str) -> str:
    return f"{split}.bin"


def doc_offsets_file(split: str) -> str:
    return f"{split}.docs.npy"


def doc_rows_file(split: str) -> str:
    return f"{split}.rows.npy"


def split_files(split: str) -> list[str]:
    return [tokens_file(split), doc_offsets_file(split), doc_rows_file(split)]


def all_files() -> list[str]:
    """Every file a complete data_dir holds besides the manifest."""
    return [name for split in SPLITS for name in split_files(split)]


@dataclass
class TokenSplit:
    """One split of a data_dir: the token memmap and its document index."""

    tokens: np.ndarray  # uint16 memmap
    doc_offsets: np.ndarray  # int64 [n_docs + 1]
    doc_rows: np.ndarray  # int64 [n_docs]

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def num_documents(self) -> int:
        return int(self.doc_rows.shape[0])

    def document_index(self, positions) -> np.ndarray:
        """Index (within this split) of the document holding each token position."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= self.num_tokens):
            raise IndexError(f"token position out of range [0, {self.num_tokens})")
        return np.searchsorted(self.doc_offsets, positions, side="right") - 1

    def source_row(self, positions) -> np.ndarray:
        """Source-dataset row of the document holding each token position."""
        return self.doc_rows[self.document_index(positions)]


def open_split(data_dir: str | Path, split: str) -> TokenSplit:
    """Open `split` of a prepared data_dir read-only; a missing file is a UserError."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {SPLITS}")
    data_dir = Path(data_dir)
    paths = [data_dir / name for name in split_files(split)]
    for path in paths:
        if not path.is_file():
            raise UserError(f"{path} not found: is {data_dir} a data_dir made by `gpt2-owt prepare`?")
    tokens_path, offsets_path, rows_path = paths
    size = tokens_path.stat().st_size
    if size % np.dtype(TOKEN_DTYPE).itemsize:
        raise UserError(f"{tokens_path} is truncated or damaged: {size} bytes is not a whole number of "
                        f"{np.dtype(TOKEN_DTYPE).itemsize}-byte token ids (re-run training.prepare_data)")
    tokens = np.memmap(tokens_path, dtype=TOKEN_DTYPE, mode="r") if size else np.zeros(0, TOKEN_DTYPE)
    try:
        offsets = np.load(offsets_path, mmap_mode="r")
        rows = np.load(rows_path, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise UserError(f"document index of {data_dir} split {split!r} is damaged: {e}") from None
    if offsets.shape[0] != rows.shape[0] + 1 or int(offsets[-1]) != tokens.shape[0]:
        raise UserError(f"{data_dir}: document index of split {split!r} does not match {tokens_path.name}")
    return TokenSplit(tokens=tokens, doc_offsets=offsets, doc_rows=rows)


# ---------------------------------------------------------------------------------------------------------------
# The sampler: which token windows make up each training step. One definition, used by the trainer and by
# `training/data_order.py`, so what the lookup prints is by construction what the trainer fed.
#
# A split of N tokens is cut into W = (N - 1) // seq_len fixed windows; window w holds tokens
# [w * seq_len, w * seq_len + seq_len + 1): seq_len inputs plus the next token as the last target, so consecutive
# windows share one token and every token after the first is a target exactly once per epoch.
# Training reads global sequence g = step * global_batch_size + j (j < global_batch_size) from window
# perm_e[g mod W], where e = g // W is the epoch and perm_e a seeded permutation of the windows. The data position
# is therefore a pure function of the step: resuming needs no iterator state, and global batch k holds the same
# sequences whatever the world size or micro-batch size. Rank r of a world of size R trains on rows
# [r * B/R, (r + 1) * B/R) of the global batch, split into micro batches in order.
# ---------------------------------------------------------------------------------------------------------------


def epoch_permutation(num_windows: int, seed: int, epoch: int) -> np.ndarray:
    """The window order of one epoch.

    Uses numpy's legacy `RandomState`, whose stream numpy keeps fixed across versions (NEP 19), so the data order
    of a run is reproducible with any numpy release.
    """
    return np.random.RandomState((seed + 1_000_003 * epoch) % 2**32).permutation(num_windows).astype(np.int64)


@functools.lru_cache(maxsize=4)  # a run's few epochs; 8 bytes per window each (70 MB for full OpenWebText)
def inverse_permutation(num_windows: int, seed: int, epoch: int) -> np.ndarray:
    """position of each window in its epoch's order: inverse[perm[i]] = i (read-only: it is shared by queries)."""
    inverse = np.empty(num_windows, dtype=np.int64)
    inverse[epoch_permutation(num_windows, seed, epoch)] = np.arange(num_windows)
    inverse.flags.writeable = False
    return inverse


# The recipe fields that fix which tokens every update trains on (the sampler's parameters, `WindowSampler.for_run`):
# the run identity a resume keeps, the data order a trace checks and the release's checkpoints.json all name them
# from here.
DATA_ORDER_FIELDS = ("seq_len", "global_batch_size", "data_seed")
# Seeds a recipe may leave unset: each is then `seed` (TrainConfig resolves them; read_recipe does for a saved
# training_config.json that lacks them).
SEEDS_DEFAULTING_TO_SEED = ("init_seed", "data_seed")


def read_recipe(config, keys=DATA_ORDER_FIELDS) -> dict:
    """{key: value} of a TrainConfig or a resolved training_config.json (a dict) for `keys`; a seed of
    SEEDS_DEFAULTING_TO_SEED the recipe leaves unset is its `seed`."""
    get = config.get if isinstance(config, dict) else lambda key: getattr(config, key, None)
    values = {key: get(key) for key in keys}
    return values | {key: get("seed") for key in keys if key in SEEDS_DEFAULTING_TO_SEED and values[key] is None}


@dataclass(kw_only=True)
class WindowSampler:
    """Update -> window ids of its global batch (see the comment above). A run's sampler is built one way:
    `WindowSampler.for_run(config, split)`; the keywords are for tests of the sampler itself."""

    num_tokens: int
    seq_len: int
    global_batch_size: int
    seed: int
    shuffle: bool = True

    @classmethod
    def for_run(cls, config, split: TokenSplit, validation: bool = False) -> "WindowSampler":
        """The sampler of a run on `split` (train, or with `validation` the fixed unshuffled val batches), from its
        TrainConfig or resolved training_config.json: seq_len, global_batch_size and data_seed (read_recipe)."""
        recipe = read_recipe(config)
        if recipe["data_seed"] is None:
            raise ValueError("the run's data_seed is unresolved (a TrainConfig resolves it from seed)")
        return cls(num_tokens=split.num_tokens, seq_len=int(recipe["seq_len"]),
                   global_batch_size=int(recipe["global_batch_size"]), seed=int(recipe["data_seed"]),
                   shuffle=not validation)

    def __post_init__(self):
        if self.seq_len < 1 or self.global_batch_size < 1:
            raise UserError("seq_len and global_batch_size must be positive")
        if self.num_windows < 1:
            raise UserError(f"split has {self.num_tokens} tokens: too few for one window of seq_len+1 = {self.seq_len + 1}")
        self._perms: dict[int, np.ndarray] = {}

    @property
    def num_windows(self) -> int:
        return max(0, (self.num_tokens - 1) // self.seq_len)

    def _window_of(self, sequence_ids: np.ndarray) -> np.ndarray:
        epochs, positions = np.divmod(sequence_ids, self.num_windows)
        if not self.shuffle:
            return positions
        out = np.empty_like(positions)
        for epoch in np.unique(epochs):
            if epoch not in self._perms:
                self._perms = {int(epoch): epoch_permutation(self.num_windows, self.seed, int(epoch))}  # keep one
            sel = epochs == epoch
            out[sel] = self._perms[int(epoch)][positions[sel]]
        return out

    def global_batch_windows(self, step: int) -> np.ndarray:
        """Window ids of the global batch of `step`, in global order (int64 [global_batch_size])."""
        first = step * self.global_batch_size
        return self._window_of(np.arange(first, first + self.global_batch_size, dtype=np.int64))

    def rank_windows(self, step: int, rank: int, world_size: int) -> np.ndarray:
        """The rows of the global batch that `rank` trains on at `step`."""
        if self.global_batch_size % world_size:
            raise UserError(f"global_batch_size {self.global_batch_size} is not divisible by world size {world_size}")
        per_rank = self.global_batch_size // world_size
        return self.global_batch_windows(step)[rank * per_rank : (rank + 1) * per_rank]

    def token_range(self, window: int) -> tuple[int, int]:
        """[start, end) token positions of `window` (seq_len + 1 tokens)."""
        start = int(window) * self.seq_len
        return start, start + self.seq_len + 1


    # ---- the inverse: which sequences (hence steps and rows) read a given token range. `tracing/exposures.py` uses it.
    def windows_holding(self, starts, ends) -> tuple[np.ndarray, np.ndarray]:
        """Every window holding a whole token range [start, end): w * seq_len <= start and
        end <= w * seq_len + seq_len + 1 (at most two: consecutive windows share one token). Returns (index into the
        ranges, window id) pairs, grouped by range in order; a range no window holds whole has no pair."""
        starts, ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
        first = np.maximum(0, -(-(ends - self.seq_len - 1) // self.seq_len))  # ceil((end - seq_len - 1) / seq_len)
        last = np.minimum(starts // self.seq_len, self.num_windows - 1)
        counts = np.maximum(0, last - first + 1)  # 0, 1 or 2
        which = np.repeat(np.arange(len(starts), dtype=np.int64), counts)
        windows = first[which]
        windows[1:][which[1:] == which[:-1]] += 1  # the second window of a pair
        return which, windows

    def sequences_reading(self, windows, num_sequences: int) -> tuple[np.ndarray, np.ndarray]:
        """Every global sequence id g < num_sequences that read one of `windows`, by inverting each epoch's
        permutation (no loop over steps). Returns (index into `windows`, g), sorted by g; step = g // global_batch_size,
        row in the global batch = g % global_batch_size, epoch = g // num_windows."""
        windows = np.asarray(windows, dtype=np.int64)
        if windows.size and (windows.min() < 0 or windows.max() >= self.num_windows):
            raise IndexError(f"window id out of range [0, {self.num_windows})")
        which, ids = [], []
        for epoch in range(-(-num_sequences // self.num_windows)):
            if self.shuffle:
                positions = inverse_permutation(self.num_windows, self.seed, epoch)[windows]
            else:
                positions = windows
            g = epoch * self.num_windows + positions
            keep = g < num_sequences
            which.append(np.flatnonzero(keep))
            ids.append(g[keep])
        which = np.concatenate(which) if which else np.zeros(0, np.int64)
        ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        order = np.argsort(ids, kind="stable")
        return which[order], ids[order]


def read_windows(split: TokenSplit, windows: np.ndarray, seq_len: int) -> np.ndarray:
    """int64 [len(windows), seq_len + 1] tokens of the given windows, read from the memmap."""
    starts = np.asarray(windows, dtype=np.int64) * seq_len
    out = np.empty((len(starts), seq_len + 1), dtype=np.int64)
    for i, start in enumerate(starts):
        out[i] = split.tokens[start : start + seq_len + 1]
    return out


def batch_sha256(tokens) -> str:
    """sha256 of a batch of token windows as little-endian uint16 (how train.bin stores them), row after row."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(tokens, dtype="<u2").tobytes()).hexdigest()
