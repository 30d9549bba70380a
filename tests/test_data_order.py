"""The sampler (training/data_dir.py) and `gpt2-owt data-order`: global batch k is a pure function of k,
the same at any world size, and the lookup names exactly the tokens the trainer fed."""

import json

import numpy as np
import pytest

from gpt2_owt.modeling.tokenizer import tiktoken_encoding
from helpers.training import TINY_YAML, metric_rows, run_inprocess
from gpt2_owt.training.data_dir import WindowSampler, batch_sha256, open_split
from gpt2_owt.training.data_order import main as data_order_main

# 6 sequences of 48 tokens per step, micro batches of 3 (gradient accumulation 2 in one process)
RUN = dict(seq_len=48, global_batch_size=6, micro_batch_size=3, max_steps=3, warmup_steps=1, eval_iters=1,
           export_steps=[], export_interval=0, record_fed_batches="true", report_to="tensorboard")


def test_global_batches_do_not_depend_on_world_size():
    sampler = WindowSampler(num_tokens=10_001, seq_len=10, global_batch_size=8, seed=3)
    assert sampler.num_windows == 1000
    for step in (0, 7, 124, 125, 400):  # 125 steps per epoch: step 125 starts epoch 1
        full = sampler.global_batch_windows(step)
        for world in (1, 2, 4, 8):
            parts = [sampler.rank_windows(step, r, world) for r in range(world)]
            assert np.array_equal(np.concatenate(parts), full)
        again = WindowSampler(num_tokens=10_001, seq_len=10, global_batch_size=8, seed=3)
        assert np.array_equal(again.global_batch_windows(step), full)  # no iterator state
    epoch0 = np.concatenate([sampler.global_batch_windows(s) for s in range(125)])
    epoch1 = np.concatenate([sampler.global_batch_windows(s) for s in range(125, 250)])
    assert sorted(epoch0) == list(range(1000)) == sorted(epoch1)  # each window once per epoch
    assert not np.array_equal(epoch0, epoch1)  # reshuffled every epoch
    other_seed = WindowSampler(num_tokens=10_001, seq_len=10, global_batch_size=8, seed=4)
    assert not np.array_equal(other_seed.global_batch_windows(0), sampler.global_batch_windows(0))
    assert sampler.token_range(7) == (70, 81)
    with pytest.raises(Exception, match="not divisible by world size 3"):
        sampler.rank_windows(0, 0, 3)


def order_of(capsys, data_dir, step: int) -> dict:
    # the run's batch shape (micro_batch_size too: data-order refuses a recipe `train` would refuse)
    overrides = [x for k, v in RUN.items() if k in ("seq_len", "global_batch_size", "micro_batch_size")
                 for x in (f"--{k}", str(v))]
    data_order_main(["--data_dir", str(data_dir), "--config", str(TINY_YAML), "--update", str(step), "--json",
                     *overrides])
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow  # trains its own run: ~7 s
def test_data_order_names_the_tokens_the_trainer_fed(capsys, owt_data_dir, owt_documents, tmp_path):
    out = tmp_path / "run"
    assert run_inprocess(owt_data_dir, out, **RUN) == 0
    capsys.readouterr()
    fed = [json.loads(line) for line in (out / "fed_batches.jsonl").read_text().splitlines()]
    assert [r["update"] for r in fed] == [0, 1, 2]
    raw = np.fromfile(owt_data_dir / "train.bin", dtype=np.uint16)  # read independently of the sampler
    offsets = np.load(owt_data_dir / "train.docs.npy")
    rows = np.load(owt_data_dir / "train.rows.npy")
    enc = tiktoken_encoding()
    for step in range(3):
        order = order_of(capsys, owt_data_dir, step)
        seqs = order["sequences"]
        assert len(seqs) == 6 and all(s["token_end"] - s["token_start"] == 49 for s in seqs)
        tokens = np.stack([raw[s["token_start"] : s["token_end"]] for s in seqs])
        assert order["tokens_sha256"] == batch_sha256(tokens) == fed[step]["tokens_sha256"]
        for s in seqs:
            first = int(np.searchsorted(offsets, s["token_start"], side="right") - 1)
            last = int(np.searchsorted(offsets, s["token_end"] - 1, side="right") - 1)
            assert s["documents"] == list(range(first, last + 1))
            assert s["source_rows"] == [int(rows[d]) for d in s["documents"]]
            if len(s["documents"]) == 1:  # the decoded window is text of the named source document
                text = enc.decode_bytes(raw[s["token_start"] : s["token_end"]].tolist())  # bytes: may cut a char
                assert text in owt_documents[s["source_rows"][0]].encode() + b"<|endoftext|>"
    assert len(metric_rows(out, "train_loss")) == 3
    assert list((out / "logs").rglob("events.out.tfevents.*"))  # the tensorboard tracker wrote its log


def test_data_order_table_and_errors(capsys, owt_data_dir):
    data_order_main(["--data_dir", str(owt_data_dir), "--config", str(TINY_YAML), "--update", "5"])
    lines = capsys.readouterr().out.splitlines()
    split = open_split(owt_data_dir, "train")
    windows = WindowSampler(num_tokens=split.num_tokens, seq_len=64, global_batch_size=8, seed=1337).global_batch_windows(5)
    assert lines[0].startswith("update 5: 8 sequences of 64 + 1 tokens (data_seed 1337")
    assert [int(line.split()[1]) for line in lines[2:]] == windows.tolist()
    with pytest.raises(SystemExit) as exc:
        data_order_main(["--data_dir", str(owt_data_dir), "--config", str(TINY_YAML), "--update", "1", "--seq_lenn", "3"])
    assert exc.value.code == 2 and "unknown flag --seq_lenn: did you mean --seq_len?" in capsys.readouterr().err


@pytest.mark.slow  # an interpreter importing the verb: ~4 s
def test_a_reader_that_stops_early_ends_it_quietly(owt_data_dir):
    """`gpt2-owt data-order ... | head -1`: the reader closes the pipe early; the command ends as a Unix
    tool killed by SIGPIPE would (exit 141, nothing on stderr), not with a BrokenPipeError traceback (issue 33
    sweep)."""
    import subprocess
    import sys

    from helpers.training import REPO_ROOT, cli_env

    proc = subprocess.Popen([sys.executable, "-m", "gpt2_owt.training.data_order", "--config", str(TINY_YAML),
                             "--data_dir", str(owt_data_dir), "--update", "5", "--text"], cwd=REPO_ROOT,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before it writes: every write meets a pipe without a reader (EPIPE), deterministically
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and err == b"", err.decode()[-2000:]
