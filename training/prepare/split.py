"""The train/val split: exactly `datasets.Dataset.train_test_split(test_size, seed=seed, shuffle=True)`.

One definition, used to write a data_dir (training/prepare_data.py) and to re-check it (training/manifest.py).
"""

import math

import numpy as np

from gpt2_owt.core.errors import UserError


def split_info(val_fraction: float, seed: int) -> dict:
    """The manifest's "split" record."""
    return {"method": "datasets.Dataset.train_test_split", "test_size": val_fraction, "seed": seed,
            "shuffle": True, "val_is": "test"}


def split_rows(num_documents: int, val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Source rows of each split, in split order: `Dataset.train_test_split(val_fraction, seed=seed, shuffle=True)`.

    n_val = ceil(val_fraction * n), permutation = np.random.default_rng(seed).permutation(n),
    val = permutation[:n_val], train = permutation[n_val:] ("test" is our "val").
    """
    n_val = math.ceil(val_fraction * num_documents)  # datasets: n_test = ceil(test_size * n_samples)
    if num_documents - n_val < 1:
        raise UserError(f"{num_documents} documents with --val_fraction {val_fraction} leave no training document")
    permutation = np.random.default_rng(seed).permutation(num_documents)
    return {"train": permutation[n_val:], "val": permutation[:n_val]}
