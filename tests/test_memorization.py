"""`gpt2-owt trace memorization` on a run built to memorize: a data_dir in which one short document repeats many
times, a tiny model trained on it until its loss is near zero. Its sequences are memorized at the late checkpoints
and not at step0, a never-seen sequence is not; every row's greedy tokens equal a plain argmax loop (ties
within 1e-4 allowed), its exposures equal a count over the batches the trainer fed; resumed per checkpoint; bad inputs are one line
with nothing written."""

import json
import shutil

import numpy as np
import pytest
import torch

from gpt2_owt.modeling.tokenizer import EOT_TOKEN_ID
from gpt2_owt.modeling.tokenizer import encode
from gpt2_owt import cli
from gpt2_owt.tracing.memorization import greedy_continuations, load_memorization, match_scores
from gpt2_owt.training.data_dir import WindowSampler, open_split, read_windows
from gpt2_owt.training.runs import run_config
from helpers.tracing import brute_positions, run_cli
from helpers.training import load_export, run_inprocess

pytestmark = pytest.mark.slow

SEQ_LEN, BATCH, STEPS, MID = 32, 8, 40, 20
PREFIX, SUFFIX = 8, 8
RUN = dict(seq_len=SEQ_LEN, global_batch_size=BATCH, micro_batch_size=BATCH, max_steps=STEPS, warmup_steps=2,
           learning_rate=3e-3, min_lr=3e-3, eval_interval=1000, eval_iters=1, export_steps=[0, MID], export_interval=0,
           checkpoint_interval=1000)


@pytest.fixture(scope="module")
def memorized(owt_documents, tmp_path_factory):
    """(data_dir, run_dir): one ~45-token document 60 times among 8 short others, indexed, trained STEPS updates."""
    from gpt2_owt.training.prepare_data import run as prepare

    root = tmp_path_factory.mktemp("memorize")
    with open(root / "docs.jsonl", "w") as f:
        for text in [owt_documents[0][:200]] * 60 + [d[:300] for d in owt_documents[1:9]]:
            f.write(json.dumps({"text": text}) + "\n")
    data_dir = prepare(["--dataset", "json", "--data_files", str(root / "docs.jsonl"), "--val_fraction", "0.1",
                        "--num_proc", "1", "--output_dir", str(root / "data"), "--cache_dir", str(root / "hf_cache")])
    cli.main(["trace", "index", "--data_dir", str(data_dir), "--num_proc", "1", "--mem_gb", "1"])
    assert run_inprocess(data_dir, root / "run", **RUN) == 0
    return data_dir, root / "run"


@pytest.fixture(scope="module")
def output(memorized, tmp_path_factory):
    data_dir, run = memorized
    out = tmp_path_factory.mktemp("memorization") / "out"
    cli.main(["trace", "memorization", "--run_dir", str(run), "--updates", f"{STEPS - 4}:{STEPS}", "--output_dir",
                    str(out), "--prefix_len", str(PREFIX), "--suffix_len", str(SUFFIX), "--batch_size", "5"])
    return out


def repeated_cycle(owt_documents) -> list[int]:
    """The repeated document and its EOT, twice: every window inside the repetition is a slice of it."""
    return (encode(owt_documents[0][:200]) + [EOT_TOKEN_ID]) * 2


def inside(cycle: list[int], ids: list[int]) -> bool:
    return brute_positions(np.asarray(cycle), ids).size > 0


def fed_exposures(data_dir, run, ids: list[int], step: int) -> tuple[int, int | None, int | None]:
    """(count, first, last update) of `ids` in the windows of updates < step, by a scan of each fed batch."""
    split = open_split(data_dir, "train")
    sampler = WindowSampler.for_run(run_config(run), split)
    updates = [u for u in range(step)
               for row in read_windows(split, sampler.global_batch_windows(u), SEQ_LEN)
               for _ in range(brute_positions(row, ids).size)]
    return len(updates), (updates[0] if updates else None), (updates[-1] if updates else None)


def test_memorized_at_late_checkpoints_not_at_step0(memorized, output, owt_documents):
    rows = load_memorization(output).to_list()
    cycle = repeated_cycle(owt_documents)
    assert sorted({r["checkpoint"] for r in rows}) == ["hf/final", "hf/step0", f"hf/step{MID}"]
    assert len(rows) == 3 * 4 * BATCH
    repeated = [r for r in rows if inside(cycle, r["prefix_ids"] + r["suffix_ids"])]
    assert len(repeated) > len(rows) // 2  # most of the run's sequences are the repeated document
    by_step = {s: [r for r in repeated if r["step"] == s] for s in (0, MID, STEPS)}
    assert not any(r["memorized"] for r in by_step[0])
    assert np.mean([r["memorized"] for r in by_step[STEPS]]) >= 0.9
    # a memorized sequence has been seen many times; so has almost every repeated one by the final step
    assert min(r["exposures"] for r in rows if r["memorized"]) > 5
    summary = json.loads((output / "summary.json").read_text())
    assert [c["step"] for c in summary["checkpoints"]] == [0, MID, STEPS]
    assert [c["memorized"] for c in summary["checkpoints"]] == [
        sum(r["memorized"] for r in rows if r["step"] == s) for s in (0, MID, STEPS)]
    for name in ("memorization.png", "README.md", "memorization.json"):
        assert (output / name).is_file()


def test_a_never_seen_sequence_is_not_memorized(memorized, output, owt_documents):
    data_dir, run = memorized
    from gpt2_owt.tracing.index import TraceIndex

    ids = encode(owt_documents[20])[:PREFIX + SUFFIX]
    assert TraceIndex(data_dir).positions(ids).size == 0
    model = load_export(run / "hf" / "final")
    seen = np.asarray([next(r["prefix_ids"] + r["suffix_ids"] for r in load_memorization(output).to_list()
                            if r["step"] == STEPS and r["memorized"])])
    both = np.concatenate([np.asarray([ids]), seen])
    memorized_flags, fraction, _ = match_scores(greedy_continuations(model, both[:, :PREFIX], both[:, PREFIX:], 2),
                                                both[:, PREFIX:])
    assert memorized_flags.tolist() == [False, True] and fraction[0] < 0.5


def test_rows_equal_a_plain_generate_loop_and_the_fed_batches(memorized, output):
    data_dir, run = memorized
    rows = load_memorization(output).to_list()
    split = open_split(data_dir, "train")
    sampler = WindowSampler.for_run(run_config(run), split)
    tokens = np.asarray(split.tokens, dtype=np.int64)
    models, ties = {}, []
    for r in rows:
        # where the trainer read it: the sampler's window of that update and row, its first tokens
        assert (r["update"], r["row"]) == divmod(r["sequence"], BATCH)
        assert r["window"] == sampler.global_batch_windows(r["update"])[r["row"]]
        assert r["token_position"] == r["window"] * SEQ_LEN
        assert r["prefix_ids"] + r["suffix_ids"] == tokens[r["token_position"]:][:PREFIX + SUFFIX].tolist()
        assert r["trained"] == (r["update"] < r["step"])
        # the greedy tokens: a plain argmax loop, one sequence at a time, no KV cache (no stop at EOT, as the rows'
        # definition says); batched float32 sums may differ from it in the last bits, so a different token is allowed
        # only where the two tokens' logits tie within 1e-4 (step0's random weights give near-uniform logits)
        model = models.get(r["checkpoint"]) or models.setdefault(r["checkpoint"], load_export(run / r["checkpoint"]))
        ids = list(r["prefix_ids"])
        with torch.no_grad():
            for _ in range(SUFFIX):
                logits = model(torch.tensor([ids])).logits[0, -1]
                if int(logits.argmax()) != r["generated_ids"][len(ids) - PREFIX]:
                    break
                ids.append(int(logits.argmax()))
        if len(ids) < PREFIX + SUFFIX:
            mine = r["generated_ids"][len(ids) - PREFIX]
            assert abs(float(logits.max() - logits[mine])) < 1e-4, (r["sequence"], r["checkpoint"])
            ties.append(r["checkpoint"])
        same = np.asarray(r["generated_ids"]) == np.asarray(r["suffix_ids"])
        assert r["memorized"] == same.all() and r["match_fraction"] == pytest.approx(same.mean())
    assert len(ties) <= len(rows) // 20 and "hf/final" not in ties, ties
    # exposures: the fed batches of updates < step scanned for the prefix + suffix
    for r in rows[::7]:
        count, first, last = fed_exposures(data_dir, run, r["prefix_ids"] + r["suffix_ids"], r["step"])
        assert (r["exposures"], r["first_exposure_update"], r["last_exposure_update"]) == (count, first, last)
        assert r["steps_since_last_exposure"] == (None if last is None else r["step"] - last - 1)
    assert any(r["exposures"] > 10 for r in rows) and any(r["exposures"] == 0 for r in rows)


def test_resumed_per_checkpoint(memorized, output, tmp_path, capsys):
    data_dir, run = memorized
    out = shutil.copytree(output, tmp_path / "out")
    before = {p.name: p.read_bytes() for p in (out / "data").iterdir()}
    (out / "data" / f"step{MID}.parquet").unlink()
    argv = ["memorization", "--run_dir", str(run), "--updates", f"{STEPS - 4}:{STEPS}", "--output_dir", str(out),
            "--prefix_len", str(PREFIX), "--suffix_len", str(SUFFIX)]
    cli.main(["trace", *argv])
    assert {p.name: p.read_bytes() for p in (out / "data").iterdir()} == before
    info = json.loads((out / "memorization.json").read_text())
    assert sorted(c["step"] for c in info["checkpoints"].values()) == [0, MID, STEPS]
    # other settings in the same folder: refused, unless --overwrite
    other = [a if a != str(PREFIX) else "4" for a in argv]
    code, captured = run_cli(capsys, *other)
    assert code == 2 and "holds a memorization of other settings" in captured.err
    cli.main(["trace", *other, "--overwrite", "--checkpoints", "final"])
    assert sorted(p.name for p in (out / "data").iterdir()) == [f"step{STEPS}.parquet"]
    assert {len(r["prefix_ids"]) for r in load_memorization(out).to_list()} == {4}


@pytest.mark.timeout(600)
def test_pushed_to_a_hub_dataset_repo_and_read_back(memorized, output, tmp_path):
    """--push_to_hub after the work is done only uploads: the dataset repo (on the local test Hub) holds OUT's published
    files byte for byte, and the rows read back from a snapshot of it equal the local ones."""
    from helpers.hub_server import alice_hub, run_with_hub

    data_dir, run = memorized
    argv = ["-m", "gpt2_owt.cli", "trace", "memorization", "--run_dir", str(run), "--updates", f"{STEPS - 4}:{STEPS}",
            "--output_dir", str(output), "--prefix_len", str(PREFIX), "--suffix_len", str(SUFFIX), "--push_to_hub",
            "alice/memorization"]
    with alice_hub(tmp_path / "hf_home") as hub:
        proc = run_with_hub(hub.env, *argv)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"dataset -> {hub.url}/datasets/alice/memorization" in proc.stdout, proc.stdout
        assert hub.state.repos.get("alice/memorization") is None  # a dataset repo, not a model repo
        local = tmp_path / "download"
        download = run_with_hub(hub.env, "-c", "import sys; from huggingface_hub import snapshot_download; "
                                "snapshot_download('alice/memorization', repo_type='dataset', local_dir=sys.argv[1])",
                                str(local))
        assert download.returncode == 0, download.stderr[-3000:]
    published = sorted(p.relative_to(output).as_posix() for p in output.rglob("*") if p.is_file())
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*")
                  if p.is_file() and ".cache" not in p.parts and p.name != ".gitattributes") == published
    for name in published:
        assert (local / name).read_bytes() == (output / name).read_bytes(), name
    assert load_memorization(local).to_list() == load_memorization(output).to_list()
    card = (local / "README.md").read_text()
    assert card.startswith("---\n") and "memorized" in card


def test_bad_inputs_are_one_line_and_write_nothing(memorized, owt_data_dir, indexed_data_dir, tmp_path, capsys):
    data_dir, run = memorized
    unindexed = shutil.copytree(data_dir, tmp_path / "unindexed", ignore=shutil.ignore_patterns("trace_index"))
    out = tmp_path / "out"
    base = ["memorization", "--run_dir", str(run), "--prefix_len", "8", "--suffix_len", "8", "--output_dir", str(out)]
    cases = {
        "no trace index at": [*base, "--updates", "0:1", "--data_dir", str(unindexed)],
        f"has no checkpoint of step 7; available: step0, step{MID}, step{STEPS} (final)": [
            *base, "--updates", "0:1", "--checkpoints", "step7"],
        "is longer than a training sequence of this run (32 + 1 tokens)": [
            *base, "--updates", "0:1", "--prefix_len", "20", "--suffix_len", "14"],
        "was not trained on": [*base, "--updates", "0:1", "--data_dir", str(owt_data_dir)],
        "was built from another data_dir": [*base, "--updates", "0:1", "--index_dir",
                                            str(indexed_data_dir / "trace_index")],
        "give exactly one of --updates A:B and --sample N": [*base],
        f"the run did updates 0..{STEPS - 1}": [*base, "--updates", f"0:{STEPS + 1}"],
        "expected A:B": [*base, "--updates", "3"],
        f"the run trained {STEPS * BATCH} sequences": [*base, "--sample", str(STEPS * BATCH + 1)],
        "run_dir": ["memorization", "--run_dir", str(tmp_path / "nope"), "--output_dir", str(out), "--updates", "0:1"],
        "--output_dir": [*base[:-1], str(data_dir), "--updates", "0:1"],
    }
    for message, argv in cases.items():
        code, captured = run_cli(capsys, *argv)
        lines = [line for line in captured.err.strip().splitlines() if line.strip()]  # a progress bar may come first
        errors = [line for line in lines if "error: " in line]
        assert code == 2 and len(errors) == 1 and errors[0] == lines[-1] and message in lines[-1], (message, lines)
        assert not out.exists()
