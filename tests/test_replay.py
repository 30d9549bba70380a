"""Counterfactual replay (tracing/replay.py), on a real tiny run over a sample with a planted canary document:
nothing removed reproduces the run's own weights bit for bit (one process here, 2-process ZeRO-2 in the slow test);
removing nothing changes nothing; removing the canary's sequences raises the canary's loss, more than removing as
many other sequences; the query loss is the one an independent scorer gives the run's exports."""

import contextlib
import hashlib
import json
import random

import pytest
import torch

from gpt2_owt.tracing.replay import PLOT, REPORT, Query, Replayer, main as replay_main, replay, \
    sequences_holding_documents
from gpt2_owt.training.data_dir import WindowSampler, open_split
from gpt2_owt.training.run_dir import HF_EXPORTS
from gpt2_owt.training.runs import run_config
from helpers.training import accelerate_cmd, load_export, run_cli, run_inprocess, train_args

pytestmark = pytest.mark.slow  # a canary run and three replays of it: ~90 s here

CANARY = " Zorblax quintessence marmalade vortex hums beneath the violet lighthouse of Quillington."
RUN = dict(seq_len=32, global_batch_size=4, micro_batch_size=2, max_steps=12, warmup_steps=2, eval_interval=0,
           eval_iters=1, checkpoint_interval=4, keep_last_checkpoints=3, export_steps=[0, 4, 8], export_interval=0,
           record_sequence_losses="false")


@contextlib.contextmanager
def one_accelerator():
    """Accelerate keeps its state per process: reset it after an in-process replay (as run_inprocess does)."""
    from accelerate.state import AcceleratorState, GradientState

    try:
        yield
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


@pytest.fixture(scope="module")
def canary_data(original_files, tmp_path_factory):
    """8 genuine OpenWebText documents and 8 copies of a canary document (a unique sentence, repeated)."""
    from gpt2_owt.training.prepare_data import run as prepare

    root = tmp_path_factory.mktemp("canary")
    lines = (original_files / "openwebtext-sample" / "owt_first37_docs.jsonl").read_text().splitlines()[:8]
    lines += [json.dumps({"text": f"Canary {i}." + CANARY * 3}) for i in range(8)]
    (root / "docs.jsonl").write_text("\n".join(lines) + "\n")
    return prepare(["--dataset", "json", "--data_files", str(root / "docs.jsonl"), "--val_fraction", "0.1",
                    "--num_proc", "1", "--output_dir", str(root / "data"), "--cache_dir", str(root / "cache")])


@pytest.fixture(scope="module")
def canary_run(canary_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("canary_run") / "run"
    assert run_inprocess(canary_data, out, **RUN) == 0
    return out


def canary_documents(data_dir) -> list[int]:
    from gpt2_owt.modeling.tokenizer import decode

    split = open_split(data_dir, "train")
    docs = [d for d in range(split.num_documents)
            if CANARY.strip() in decode(split.tokens[split.doc_offsets[d]:split.doc_offsets[d + 1]])]
    assert len(docs) >= 4
    return docs


def snapshot(folder) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.timeout(900)
def test_nothing_removed_is_the_run_bit_for_bit(canary_run):
    before = snapshot(canary_run)
    queries = [Query(CANARY), Query(" lighthouse", prefix="the violet")]
    with one_accelerator():
        result = replay(canary_run, 4, 12, [], queries, progress=False)
    assert result.exact == {"reference": f"{HF_EXPORTS}/final", "bitwise_equal": True}
    assert result.counterfactual == result.original and result.difference_at_to_step == [0.0, 0.0]
    assert result.steps == list(range(4, 13)) and result.removed["count"] == 0
    assert result.layout["same_as_run"]
    # the replay's query loss is what an independent scorer (transformers' model from the export, plain
    # cross-entropy) gives the run's own exported weights at steps 4, 8 and 12
    for step, name in ((4, "step4"), (8, "step8"), (12, "final")):
        model = load_export(canary_run / HF_EXPORTS / name)
        for q, losses in zip(queries, result.original):
            context, ids = q.ids()
            whole = torch.tensor([context + ids])
            with torch.no_grad():
                logits = model(whole[:, :-1]).logits[0, -len(ids):]
            want = torch.nn.functional.cross_entropy(logits, whole[0, -len(ids):]).item()
            assert losses[result.steps.index(step)] == pytest.approx(want, abs=2e-4), (step, q)
    assert snapshot(canary_run) == before  # the run is never written


@pytest.mark.timeout(1200)
def test_removing_the_canary_raises_its_loss_more_than_removing_others(canary_run, canary_data):
    cfg = run_config(canary_run)
    split = open_split(canary_data, "train")
    removed = sequences_holding_documents(split, WindowSampler.for_run(cfg, split), canary_documents(canary_data), 4, 12)
    assert 4 <= len(removed) <= 24  # some canary rows in most updates, and other rows left
    others = sorted(set((u, r) for u in range(4, 12) for r in range(4)) - set(removed))
    random_removed = random.Random(0).sample(others, len(removed))
    queries = [Query(CANARY)]
    with one_accelerator(), Replayer(canary_run, 4, 12) as replayer:
        original = replayer.original(queries, every=2, progress=False)
        canary = replayer.counterfactual(removed, queries, every=2, progress=False)
        other = replayer.counterfactual(random_removed, queries, every=2, progress=False)
        nothing = replayer.counterfactual([], queries, every=2, progress=False)
        assert replayer.exact["bitwise_equal"] is True
    assert original.steps == [4, 6, 8, 10, 12]
    assert (nothing.losses == original.losses).all()  # removing nothing changes nothing, after other replays too
    assert canary.losses[0, 0] == original.losses[0, 0]  # the same start
    raised, raised_by_others = canary.losses[0, -1] - original.losses[0, -1], other.losses[0, -1] - original.losses[0, -1]
    assert raised > 0.05 and raised > raised_by_others, (raised, raised_by_others)


@pytest.mark.timeout(900)
def test_cli_writes_its_report_and_plot_and_never_the_run(canary_run, canary_data, tmp_path, capsys):
    before = snapshot(canary_run)
    out = tmp_path / "out"
    docs = [str(d) for d in canary_documents(canary_data)]
    with one_accelerator():
        replay_main(["--run_dir", str(canary_run), "--from_step", "8", "--to_step", "12", "--remove_documents", *docs,
                     "--query", CANARY, "--every", "2", "--output_dir", str(out), "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / REPORT).read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted([REPORT, PLOT])  # the lock file is gone
    assert (out / PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert printed["steps"] == [8, 10, 12] and printed["removed"]["how"] == "documents"
    assert printed["exact"] == {"reference": "hf/final", "bitwise_equal": True}
    assert printed["difference_at_to_step"][0] > 0 and "mean over the remaining rows" in printed["rule"]
    assert all(8 <= s["update"] < 12 for s in printed["removed"]["sequences"])
    assert snapshot(canary_run) == before


@pytest.mark.multiprocess  # two 2-process DeepSpeed launches: ~3 min on 2 shared cores
@pytest.mark.timeout(1800)
def test_nothing_removed_is_the_run_bit_for_bit_under_two_process_zero2(canary_data, tmp_path):
    run = tmp_path / "zero2"
    proc = run_cli([*accelerate_cmd("cpu_zero2.yaml", 2), "-m", "gpt2_owt.cli", "train",
                    *train_args(canary_data, run, **RUN)], timeout=1500, OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the CLI refuses an empty removal ("nothing to remove"): leave one row out; the original trajectory, replayed
    # beside it, must still be the run's own weights bit for bit
    one_row = tmp_path / "one_row.jsonl"
    one_row.write_text(json.dumps({"update": 4, "row": 0}) + "\n")
    proc = run_cli([*accelerate_cmd("cpu_zero2.yaml", 2), "-m", "gpt2_owt.cli", "replay", "--run_dir", str(run),
                    "--from_step", "4", "--to_step", "12", "--remove", str(one_row), "--query", CANARY, "--json"],
                   timeout=1500, OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout[proc.stdout.index("{\n"):])  # after anything DeepSpeed printed
    assert report["layout"] == {"world_size": 2, "zero_stage": 2, "mixed_precision": "no", "same_as_run": True}
    assert report["exact"] == {"reference": "hf/final", "bitwise_equal": True}
    assert report["removed"]["count"] == 1 and report["counterfactual"] != report["original"]
