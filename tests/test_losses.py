"""`gpt2-owt trace losses` and `gpt2-owt data-order --run_dir` against the trainer's own records: the losses equal a
recomputation from the exported weights and average to the logged training loss, each row's window is the one the
trainer fed (fed_batches.jsonl sha256) and its text the decoded train.bin tokens; bad inputs are one line."""

import json
import shutil

import numpy as np
import pytest
import torch

from gpt2_owt import cli
from gpt2_owt.tracing.losses import sequence_losses
from gpt2_owt.training import data_order
from gpt2_owt.training.data_dir import WindowSampler, batch_sha256, open_split, read_windows
from gpt2_owt.training.run_dir import FED_BATCHES, SEQUENCE_LOSSES, read_rows
from gpt2_owt.training.runs import run_config
from helpers.tracing import run_cli
from helpers.training import SEED_RUN
from helpers.training import TINY_YAML, load_export, metric_rows

pytestmark = pytest.mark.slow  # its own recorded run: ~15 s here

STEPS, BATCH, SEQ_LEN = SEED_RUN["max_steps"], SEED_RUN["global_batch_size"], SEED_RUN["seq_len"]


@pytest.fixture(scope="module")
def run(trained_run):
    return trained_run(**SEED_RUN)  # data_seed 7 != seed 1337, fed batches recorded


def fed_windows(run, data_dir):
    split = open_split(data_dir, "train")
    sampler = WindowSampler.for_run(run_config(run), split)
    return split, [sampler.global_batch_windows(u) for u in range(STEPS)]


def test_losses_are_the_trainers_records(run, owt_data_dir, reference_tiktoken, capsys):
    split, windows = fed_windows(run, owt_data_dir)
    tokens = np.asarray(split.tokens, dtype=np.int64)
    fed = [r["tokens_sha256"] for r in read_rows(run / FED_BATCHES)]
    report = sequence_losses(run, 0, STEPS)
    rows = report["sequences"]
    assert [(r["update"], r["row"]) for r in rows] == [(u, b) for u in range(STEPS) for b in range(BATCH)]
    losses = np.array([r["loss"] for r in rows]).reshape(STEPS, BATCH)
    # the mean of an update's sequence losses is the training loss the trainer logged for it
    np.testing.assert_allclose(losses.mean(axis=1), [m["train_loss"] for m in metric_rows(run, "train_loss")],
                               atol=1e-5)
    # update 0's losses: the step-0 weights' cross entropy of the windows fed at update 0, recomputed plainly
    batch = torch.from_numpy(read_windows(split, windows[0], SEQ_LEN))
    with torch.no_grad():
        logits = load_export(run / "hf" / "step0")(batch[:, :-1]).logits
    plain = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none").mean(dim=1)
    np.testing.assert_allclose(losses[0], plain.numpy(), atol=1e-5)
    for r in rows:  # the window the trainer fed (its batches' sha256 recorded while training), and its text
        assert r["window"] == windows[r["update"]][r["row"]]
        assert (r["token_start"], r["token_end"]) == (r["window"] * SEQ_LEN, r["window"] * SEQ_LEN + SEQ_LEN + 1)
        assert r["text"] == reference_tiktoken.decode(tokens[r["token_start"]:r["token_end"]].tolist())
    assert [batch_sha256(read_windows(split, w, SEQ_LEN)) for w in windows] == fed

    # --highest / --lowest / --top_k: the same rows, sorted by loss
    flat = [(r["loss"], r["update"], r["row"]) for r in rows if 3 <= r["update"] < 7]
    cli.main(["trace", "losses", "--run_dir", str(run), "--updates", "3:7", "--highest", "--top_k", "5", "--json"])
    top = json.loads(capsys.readouterr().out)["sequences"]
    assert [(r["loss"], r["update"], r["row"]) for r in top] == sorted(flat, key=lambda t: -t[0])[:5]
    cli.main(["trace", "losses", "--run_dir", str(run), "--update", "5", "--lowest", "--json"])
    low = json.loads(capsys.readouterr().out)["sequences"]
    assert [r["loss"] for r in low] == sorted(losses[5].tolist())
    cli.main(["trace", "losses", "--run_dir", str(run), "--update", "5", "--lowest", "--text_chars", "20"])
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 2 + BATCH and f"{low[0]['loss']:.4f}" in table[2]
    assert json.dumps(low[0]["text"], ensure_ascii=False)[1:21] + "..." in table[2]


def test_data_order_from_the_run_dir(run, owt_data_dir, capsys):
    split, windows = fed_windows(run, owt_data_dir)
    fed = [r["tokens_sha256"] for r in read_rows(run / FED_BATCHES)]
    for update in (0, 7):
        data_order.main(["--run_dir", str(run), "--update", str(update), "--text", "--json"])
        order = json.loads(capsys.readouterr().out)
        assert order["tokens_sha256"] == fed[update] and order["data_seed"] == 7
        assert [s["window"] for s in order["sequences"]] == windows[update].tolist()
        assert [s["text"] for s in order["sequences"]] == [
            hf_decode(split, s["token_start"], s["token_end"]) for s in order["sequences"]]
    # the same as the recipe given by hand
    data_order.main(["--config", str(TINY_YAML), "--data_dir", str(owt_data_dir), "--update", "7", "--json",
                     *[f"--{k}={SEED_RUN[k]}" for k in ("seq_len", "global_batch_size", "data_seed", "max_steps")]])
    by_hand = json.loads(capsys.readouterr().out)
    data_order.main(["--run_dir", str(run), "--update", "7", "--json"])
    assert json.loads(capsys.readouterr().out) == by_hand
    data_order.main(["--run_dir", str(run), "--update", "7", "--text"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 2 * BATCH and lines[3].strip() == json.dumps(order["sequences"][0]["text"],
                                                                          ensure_ascii=False)


def hf_decode(split, start, end) -> str:
    from gpt2_owt.modeling.tokenizer import load_tokenizer

    return load_tokenizer().decode(np.asarray(split.tokens[start:end]).tolist())


def test_bad_inputs_are_one_line(run, tmp_path, capsys):
    unrecorded = shutil.copytree(run, tmp_path / "unrecorded")
    shutil.rmtree(unrecorded / SEQUENCE_LOSSES)
    base = ["losses", "--run_dir", str(run)]
    cases = {
        "give exactly one of --update N and --updates A:B": [*base],
        "give exactly one of --update N and --updates A:B ": [*base, "--update", "1", "--updates", "0:2"],
        f"--update {STEPS}: the run did updates 0..{STEPS - 1}": [*base, "--update", str(STEPS)],
        f"the run did updates 0..{STEPS - 1}": [*base, "--updates", f"2:{STEPS + 1}"],
        "expected A:B": [*base, "--updates", "2-4"],
        "give at most one of --highest and --lowest": [*base, "--update", "1", "--highest", "--lowest"],
        "--top_k must be > 0": [*base, "--update", "1", "--top_k", "0"],
        "has no sequence_losses/": ["losses", "--run_dir", str(unrecorded), "--update", "1"],
        "run_dir": ["losses", "--run_dir", str(tmp_path / "nope"), "--update", "1"],
    }
    for message, argv in cases.items():
        code, captured = run_cli(capsys, *argv)
        lines = captured.err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message.strip() in lines[0], \
            (message, lines)
    order_cases = {
        "gives another data order": ["--run_dir", str(run), "--config", str(TINY_YAML), "--update", "1"],
        "--config RECIPE.yaml (or --run_dir) is required": ["--update", "1"],
        "config overrides": ["--run_dir", str(run), "--update", "1", "--seq_len", "16"],
    }
    for message, argv in order_cases.items():
        with pytest.raises(SystemExit) as e:
            data_order.main(argv)
        lines = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(lines) == 1 and message in lines[0], (message, lines)
