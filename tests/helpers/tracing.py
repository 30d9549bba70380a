"""Brute-force oracles and the in-process CLI runner of the tracing tests."""

import numpy as np
import pytest

from gpt2_owt import cli


def brute_positions(tokens: np.ndarray, ids: list[int]) -> np.ndarray:
    """Every position where `ids` starts in `tokens`, by comparing every window."""
    n = len(ids)
    view = np.lib.stride_tricks.sliding_window_view(np.asarray(tokens, dtype=np.int64), n)
    return np.flatnonzero((view == np.asarray(ids)).all(axis=1))


def run_cli(capsys, *argv):
    """`gpt2-owt trace ARGV` in this process: (exit code, captured output). Every call must exit (SystemExit)."""
    with pytest.raises(SystemExit) as e:
        cli.main(["trace", *argv])
    return e.value.code, capsys.readouterr()
