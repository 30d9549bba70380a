"""`gpt2-owt attribute` (tracing/attribute.py): Bergson's TrackStar, EK-FAC and SOURCE over a run's own sequences.

The canary run: a tiny data_dir where one unique sentence is planted as three documents among real OpenWebText
ones, trained by the real trainer for a little more than an epoch. Oracles independent of the code under test: the
canary's positions found by brute force in train.bin, each candidate's window recomputed from the sampler's
definition (the seeded epoch permutation) and compared with what `gpt2-owt data-order --json` lists, the
learning rates the trainer logged in metrics.jsonl, and the trainer's own loss on a window.
"""

import json
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from helpers.training import TINY_YAML, accelerate_cmd, run_cli, run_inprocess, train_args

CANARY = "Quibbleton's zephyr-glass orchestra tuned forty-one marimbas beneath the violet aqueduct of Snorvik."
OWT_DOCS = (10, 27, 32, 17, 11, 35)  # six short OpenWebText documents (180-290 tokens)
CANARY_COPIES = 3
# One epoch is 21 windows of 64 + 1 tokens; 6 updates of 4 rows (24 sequences) feed every window once and then
# start the next epoch. Checkpoints at steps 3 and 6 (SOURCE's two segments), exports at 0, 3 and final.
RUN = dict(max_steps=6, seq_len=64, global_batch_size=4, micro_batch_size=4, warmup_steps=2, checkpoint_interval=3,
           keep_last_checkpoints=5, eval_interval=6, eval_iters=1, export_steps=[0, 3], export_interval=0)
ATTRIBUTE = [sys.executable, "-m", "gpt2_owt.tracing.attribute"]


@pytest.fixture(scope="module")
def canary_run(owt_documents, tmp_path_factory):
    """(data_dir, run_dir) of the canary run. The canary documents sit at rows the seeded split sends to train."""
    from gpt2_owt.training.prepare.split import split_rows
    from gpt2_owt.training.prepare_data import run as prepare

    root = tmp_path_factory.mktemp("canary")
    n = len(OWT_DOCS) + CANARY_COPIES
    val = {int(r) for r in split_rows(n, 0.1, 2357)["val"]}
    train_rows = [r for r in range(n) if r not in val]
    canary_rows = set(train_rows[1::2][:CANARY_COPIES])
    owt = iter(owt_documents[i] for i in OWT_DOCS)
    texts = [CANARY if r in canary_rows else next(owt) for r in range(n)]
    (root / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    data = prepare(["--dataset", "json", "--data_files", str(root / "docs.jsonl"), "--val_fraction", "0.1",
                    "--num_proc", "1", "--output_dir", str(root / "data"), "--cache_dir", str(root / "hf_cache")])
    assert run_inprocess(data, root / "run", **RUN) == 0
    return data, root / "run"


def canary_positions(data_dir) -> list[int]:
    """Where the canary's ids start in train.bin, by brute force over every position."""
    from gpt2_owt.modeling.tokenizer import encode
    from gpt2_owt.training.data_dir import open_split

    ids, tokens = np.array(encode(CANARY)), np.asarray(open_split(data_dir, "train").tokens)
    return [p for p in range(len(tokens) - len(ids) + 1) if np.array_equal(tokens[p : p + len(ids)], ids)]


def attribute_json(run_dir, *flags: str) -> dict:
    done = run_cli([*ATTRIBUTE, "--run_dir", str(run_dir), *flags, "--json"], timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def canary_reports(canary_run):
    """method -> the `attribute --json` report of the canary query (each method run once per module)."""
    cache = {}

    def get(method: str) -> dict:
        if method not in cache:
            cache[method] = attribute_json(canary_run[1], "--query", CANARY, "--method", method, "--top_k", "5")
        return cache[method]

    return get


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("method", ["trackstar", "ekfac", "source"])
def test_canary_sequences_rank_first(method, canary_run, canary_reports):
    data_dir, _ = canary_run
    report = canary_reports(method)
    positions, length, seq_len = canary_positions(data_dir), len(report["query"]["token_ids"]) - 1, RUN["seq_len"]
    assert len(positions) == CANARY_COPIES
    sequences = report["sequences"]
    assert [s["rank"] for s in sequences] == list(range(1, RUN["max_steps"] * RUN["global_batch_size"] + 1))
    assert report["steps"] == ([3, 6] if method == "source" else [6])

    def span(s):
        return s["window"] * seq_len, s["window"] * seq_len + seq_len + 1

    whole = [s["rank"] for s in sequences if any(span(s)[0] <= p and p + length <= span(s)[1] for p in positions)]
    clean = [s["rank"] for s in sequences if not any(span(s)[0] < p + length and p < span(s)[1] for p in positions)]
    assert whole, "no sequence of the run held the canary whole"
    assert max(whole) < min(clean), f"{method}: canary sequences at ranks {whole}, a clean one at {min(clean)}"
    assert sequences[0]["effect"] > 0 and CANARY in sequences[0]["context"]


@pytest.mark.slow  # a Bergson run in a subprocess: ~40 s
@pytest.mark.timeout(1800)
def test_every_candidate_is_what_data_order_lists(canary_run, canary_reports, capsys):
    """(update, row) -> the window of the seeded epoch permutation (the sampler's definition, recomputed here), the
    documents and source rows `gpt2-owt data-order --json` lists, and the decoded text of that window."""
    from gpt2_owt.modeling.tokenizer import decode
    from gpt2_owt.training.data_dir import open_split
    from gpt2_owt.training.data_order import main as data_order

    data_dir, run_dir = canary_run
    config = json.loads((run_dir / "training_config.json").read_text())
    split = open_split(data_dir, "train")
    windows = (split.num_tokens - 1) // RUN["seq_len"]
    sequences = canary_reports("trackstar")["sequences"]
    assert sorted((s["update"], s["row"]) for s in sequences) == \
        [(u, r) for u in range(RUN["max_steps"]) for r in range(RUN["global_batch_size"])]
    listed = {}
    for update in range(RUN["max_steps"]):
        data_order(["--config", str(TINY_YAML), "--data_dir", str(data_dir), "--update", str(update), "--json",
                    "--seq_len", str(RUN["seq_len"]), "--global_batch_size", str(RUN["global_batch_size"])])
        listed[update] = json.loads(capsys.readouterr().out)["sequences"]
    for s in sequences:
        g = s["update"] * RUN["global_batch_size"] + s["row"]
        epoch, position = divmod(g, windows)
        window = np.random.RandomState((config["data_seed"] + 1_000_003 * epoch) % 2**32).permutation(windows)[position]
        assert s["window"] == window
        row = listed[s["update"]][s["row"]]
        assert (row["window"], row["documents"], row["source_rows"]) == (s["window"], s["documents"], s["source_rows"])
        if "context" in s:
            start = window * RUN["seq_len"]
            assert s["context"] == decode(split.tokens[start : start + RUN["seq_len"] + 1])


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_candidates_from_trace_find(canary_run, tmp_path, capsys):
    """`--candidates FIND.json` scores exactly the exposures `trace find --json` lists."""
    import shutil

    from gpt2_owt.tracing.find import main as find
    from gpt2_owt.tracing.index import INDEX_DIR, build_index

    data_dir, run_dir = canary_run
    indexed = shutil.copytree(data_dir, tmp_path / "data")
    build_index(indexed, indexed / INDEX_DIR, num_proc=1, mem_gb=1)
    find(["--data_dir", str(indexed), "--run_dir", str(run_dir), "--text", CANARY, "--json"])
    found = json.loads(capsys.readouterr().out)
    (tmp_path / "find.json").write_text(json.dumps(found))
    exposures = {(e["update"], e["row"]) for o in found["occurrences"] for e in o["exposures"]}
    assert exposures
    report = attribute_json(run_dir, "--query", CANARY, "--method", "trackstar", "--data_dir", str(indexed),
                            "--candidates", str(tmp_path / "find.json"))
    assert {(s["update"], s["row"]) for s in report["sequences"]} == exposures
    assert report["candidates"]["count"] == len(exposures)


def test_sample_is_a_seeded_subset(canary_run):
    from gpt2_owt.tracing.attribute import Run, choose_candidates

    run = Run.open(canary_run[1])
    every = choose_candidates(["updates", "1:5"], None, 0, run.split, run.sampler, 6)
    picked = [choose_candidates(["updates", "1:5"], 7, seed, run.split, run.sampler, 6) for seed in (3, 3, 4)]
    pairs = [set(zip(c.update.tolist(), c.row.tolist())) for c in picked]
    assert len(every) == 16 and all(len(p) == 7 for p in pairs)
    assert pairs[0] == pairs[1] != pairs[2] and pairs[0] <= set(zip(every.update.tolist(), every.row.tolist()))


def test_learning_rates_are_the_logged_ones(canary_run):
    """learning_rates(u) is the rate the trainer logged with the row of step u + 1 (metrics.jsonl)."""
    from gpt2_owt.tracing.attribute import learning_rates
    from gpt2_owt.training.runs import run_config

    run_dir = canary_run[1]
    logged = {row["step"]: row["lr"] for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
              if "lr" in row}
    rates = learning_rates(run_config(run_dir), RUN["max_steps"])
    assert len(logged) == RUN["max_steps"]
    assert rates.tolist() == [logged[u + 1] for u in range(RUN["max_steps"])]


def test_checkpoint_export_and_adam_state(canary_run, tmp_path):
    """checkpoints/stepN -> a from_pretrained folder equal to the trainer's export of the same step, and Bergson's
    optimizer.pt: every parameter's second moment by name, with the parameter's shape and the step count."""
    from gpt2_owt.tracing.attribute import Run, model_folder

    run = Run.open(canary_run[1])
    folder = model_folder(run, 3, tmp_path / "step3", with_optimizer=True)
    exported, written = load_file(run.run_dir / "hf" / "step3" / "model.safetensors"), load_file(folder / "model.safetensors")
    assert written.keys() == exported.keys() and all(torch.equal(written[k], exported[k]) for k in exported)
    state = torch.load(folder / "optimizer.pt", weights_only=False)
    shapes = {k: v.shape for k, v in exported.items()}
    assert {e["param_name"] for e in state["state"].values()} == set(shapes)
    for entry in state["state"].values():
        assert entry["exp_avg_sq"].shape == shapes[entry["param_name"]] and int(entry["step"]) == 3
        assert (entry["exp_avg_sq"] >= 0).all() and entry["exp_avg_sq"].abs().sum() > 0
    assert state["param_groups"][0]["betas"] == (0.9, 0.95) and state["param_groups"][0]["eps"] == 1e-8


def test_one_more_position_keeps_every_loss(tmp_path):
    """A model whose context is exactly seq_len gets one more (zero) position so Bergson can read a whole seq_len + 1
    window; its losses on the window's seq_len targets are the trainer's, to the bit."""
    from gpt2_owt.modeling.config import load_config
    from gpt2_owt.modeling.model import build_model
    from gpt2_owt.tracing.attribute import with_context
    from gpt2_owt.training.trainer import lm_token_losses

    config = load_config("tiny")
    config.n_positions = 16
    model = build_model(config, seed=0).eval()
    window = torch.randint(0, config.vocab_size, (3, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        trainer = lm_token_losses(model, window, config.vocab_size)
        longer = with_context(model, seq_len=16)
        logits = longer(input_ids=window).logits[:, :-1]
        bergson = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), window[:, 1:].reshape(-1),
                                                    reduction="none").view(3, 16)
    assert longer.config.n_positions == 17 and torch.equal(bergson, trainer)


@pytest.mark.multiprocess
@pytest.mark.timeout(1800)
def test_deepspeed_state_merged_per_parameter(canary_run, tmp_path):
    """A ZeRO-2 checkpoint (its state partitioned over 2 processes) read through DeepSpeed's universal-checkpoint
    conversion: the weights are the ZeRO run's own export of that step, to the bit, and each second moment is the
    one-process run's (same data and init; they differ by the reduction order only)."""
    from gpt2_owt.tracing.attribute import Run, model_folder

    data_dir, one_process = canary_run
    cmd = accelerate_cmd("cpu_zero2.yaml", 2, "-m", "gpt2_owt.training.train",
                         *train_args(data_dir, tmp_path / "zero2", **{**RUN, "micro_batch_size": 2}))
    done = run_cli(cmd, timeout=1200, OMP_NUM_THREADS="1")
    assert done.returncode == 0, done.stderr[-3000:]
    zero2 = Run.open(tmp_path / "zero2")
    folder = model_folder(zero2, 3, tmp_path / "step3", with_optimizer=True)
    exported = load_file(tmp_path / "zero2" / "hf" / "step3" / "model.safetensors")
    written = load_file(folder / "model.safetensors")
    assert written.keys() == exported.keys() and all(torch.equal(written[k], exported[k]) for k in exported)
    reference = model_folder(Run.open(one_process), 3, tmp_path / "reference", with_optimizer=True)
    moments = [{e["param_name"]: e for e in torch.load(f / "optimizer.pt", weights_only=False)["state"].values()}
               for f in (folder, reference)]
    assert moments[0].keys() == moments[1].keys() == exported.keys()
    for name, entry in moments[0].items():
        expected = moments[1][name]["exp_avg_sq"]
        assert int(entry["step"]) == 3 and entry["exp_avg_sq"].shape == expected.shape
        assert (entry["exp_avg_sq"] - expected).abs().max() <= 1e-2 * expected.abs().max(), name
