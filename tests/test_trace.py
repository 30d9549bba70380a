"""`gpt2-owt trace index|find`: the infini-gram index of train.bin and the exposures of an occurrence,
against brute force (a scan of train.bin and the batches `training.data_order` lists, step by step)."""

import json
import shutil

import numpy as np
import pytest

from gpt2_owt.modeling.tokenizer import EOT_TOKEN_ID
from gpt2_owt import cli
from gpt2_owt.tracing import index as trace_index_module
from gpt2_owt.tracing.exposures import export_schedule
from gpt2_owt.tracing.find import find
from gpt2_owt.tracing.index import INDEX_DIR, INDEX_INFO, SCAN_SHARE, TraceIndex, build_folder
from gpt2_owt.training.config import parse_config
from gpt2_owt.training.data_dir import WindowSampler, open_split, read_windows
from gpt2_owt.training.data_order import batch_order
from helpers.tracing import brute_positions, run_cli
from helpers.training import SEED_RUN, TINY_YAML

# ~2.5 epochs of the 33-document sample: exposures repeat across epochs and windows
SEQ_LEN, BATCH, STEPS = 32, 8, 400
CONFIG_ARGS = ["--seq_len", str(SEQ_LEN), "--global_batch_size", str(BATCH), "--micro_batch_size", "4",
               "--max_steps", str(STEPS), "--warmup_steps", "2"]


@pytest.fixture(scope="module")
def data_dir(indexed_data_dir):
    """The session's sample data_dir with its trace index, built by the CLI (conftest; read-only)."""
    return indexed_data_dir


@pytest.fixture(scope="module")
def cfg():
    return parse_config(["--config", str(TINY_YAML), *CONFIG_ARGS], validate=False)


@pytest.fixture(scope="module")
def all_batches(data_dir, cfg):
    """Every step's batch as `training.data_order` lists it: (step, row, token_start, token_end)."""
    split = open_split(data_dir, "train")
    sampler = WindowSampler.for_run(cfg, split)
    rows = []
    for step in range(STEPS):
        for s in batch_order(split, sampler, step)["sequences"]:
            rows.append((step, s["index"], s["token_start"], s["token_end"]))
    return np.array(rows, dtype=np.int64)


def brute_exposures(all_batches, p: int, n: int, num_windows: int, until: int) -> list[dict]:
    step, row, start, end = all_batches.T
    hit = (start <= p) & (p + n <= end) & (step < until)
    return [{"epoch": int((s * BATCH + r) // num_windows), "update": int(s), "row": int(r)}
            for s, r in zip(step[hit], row[hit])]


def query_set(split) -> list[list[int]]:
    """n-grams of 1-12 tokens: random, at window boundaries, across document boundaries, common and absent."""
    rng = np.random.default_rng(0)
    tokens = np.asarray(split.tokens, dtype=np.int64)
    starts = list(rng.integers(0, split.num_tokens - 12, 40))
    starts += [w * SEQ_LEN + d for w in rng.integers(1, split.num_tokens // SEQ_LEN - 1, 12) for d in (-3, -1, 0, 1)]
    starts += [int(o) - d for o in split.doc_offsets[1:6] for d in (1, 2, 4)]  # the EOT and the next document
    queries = [tokens[s : s + n].tolist() for i, s in enumerate(starts) for n in (1 + i % 12,)]
    queries += [[262], [13], [EOT_TOKEN_ID], [11, 262], [50000, 50001, 50002]]  # common, EOT alone, absent
    return queries


def test_index_layout_and_manifest(data_dir):
    split = open_split(data_dir, "train")
    index_dir = data_dir / INDEX_DIR
    info = json.loads((index_dir / INDEX_INFO).read_text())
    assert info["num_tokens"] == split.num_tokens and info["num_documents"] == split.num_documents == 33
    from gpt2_owt.core.records import sha256_file

    assert info["data_manifest_sha256"] == sha256_file(data_dir / "manifest.json")
    assert info["shards"] == [{"dir": "shard_00000", "first_document": 0, "num_documents": 33, "first_token": 0,
                               "num_tokens": split.num_tokens}]
    raw = np.fromfile(index_dir / "shard_00000" / "tokenized.0", dtype="<u2")
    offsets = np.fromfile(index_dir / "shard_00000" / "offset.0", dtype="<u8")
    assert raw.size == split.num_tokens + split.num_documents and offsets.size == split.num_documents
    for d in (0, 7, 32):
        a, b = int(split.doc_offsets[d]), int(split.doc_offsets[d + 1])
        at = offsets[d] // 2
        assert raw[at] == 0xFFFF and np.array_equal(raw[at + 1 : at + 1 + b - a], split.tokens[a:b])
    assert not [p for p in data_dir.iterdir() if p.name.startswith(".tmp")]


@pytest.mark.parametrize("scan_share", [1.0, SCAN_SHARE], ids=["suffix_array_only", "scan_for_common_ids"])
def test_positions_equal_a_scan_of_train_bin(data_dir, scan_share, monkeypatch):
    monkeypatch.setattr(trace_index_module, "SCAN_SHARE", scan_share)
    index = TraceIndex(data_dir)
    split = index.split
    straddling = scanned = 0
    for ids in query_set(split):
        want = brute_positions(split.tokens, ids)
        got = index.positions(ids)
        assert np.array_equal(got, want), ids
        straddling += EOT_TOKEN_ID in ids[:-1] and want.size > 0
        if EOT_TOKEN_ID not in ids[:-1]:
            assert index.count(ids) == want.size
            scanned += want.size > scan_share * split.num_tokens
    assert straddling >= 5  # the set really has n-grams across documents
    assert (scanned > 0) == (scan_share < 1)  # the fallback really ran (or really did not)
    # the rank -> document mapping of infini-gram's own API agrees with ours
    found = index.engine.find(input_ids=[262])
    start, _ = found["segment_by_shard"][0]
    doc = index.engine.get_doc_by_rank(s=0, rank=start, max_disp_len=10)["doc_ix"]
    assert doc in set(split.document_index(index.positions([262])).tolist())


def test_sharded_index_built_in_parts_answers_like_one_shard(data_dir, tmp_path, capsys):
    """--shards 3 built as a multi-machine build would be: shards 0 and 2 on one "machine", then the finishing run
    builds shard 1 and puts the index in place; every query answers as the one-shard index does."""
    data = tmp_path / "data"
    shutil.copytree(data_dir, data, ignore=shutil.ignore_patterns(INDEX_DIR))
    build = build_folder(data / INDEX_DIR)
    cli.main(["trace", "index", "--data_dir", str(data), "--num_proc", "1", "--mem_gb", "1", "--shards", "3",
                "--shard_ids", "0", "2"])
    assert "run `gpt2-owt trace index` with the same --shards" in capsys.readouterr().out
    assert sorted(p.name for p in build.iterdir()) == ["shard_00000", "shard_00002"]
    assert not (data / INDEX_DIR).exists()
    kept = (build / "shard_00000" / "table.0").stat().st_mtime_ns
    cli.main(["trace", "index", "--data_dir", str(data), "--num_proc", "1", "--mem_gb", "1", "--shards", "3"])
    assert not build.exists()
    index_dir = data / INDEX_DIR
    assert (index_dir / "shard_00000" / "table.0").stat().st_mtime_ns == kept  # a finished shard is not rebuilt
    shards = json.loads((index_dir / INDEX_INFO).read_text())["shards"]
    split = open_split(data, "train")
    assert len(shards) == 3 and shards[0]["first_document"] == 0
    for before, after in zip(shards, shards[1:]):  # contiguous whole documents
        assert after["first_document"] == before["first_document"] + before["num_documents"]
    for s in shards:
        assert s["first_token"] == split.doc_offsets[s["first_document"]]
        assert s["num_tokens"] == split.doc_offsets[s["first_document"] + s["num_documents"]] - s["first_token"]
    assert sum(s["num_documents"] for s in shards) == 33 and sum(s["num_tokens"] for s in shards) == split.num_tokens
    assert max(s["num_tokens"] for s in shards) < 0.5 * split.num_tokens  # about equal shares
    one, three = TraceIndex(data_dir), TraceIndex(data)
    assert len(three.engine.find(input_ids=[262])["segment_by_shard"]) == 3
    for ids in query_set(split):
        want = brute_positions(split.tokens, ids)
        assert np.array_equal(three.positions(ids), want) and np.array_equal(one.positions(ids), want), ids
    # an occurrence inside the last shard is found at its train.bin position
    last_doc = shards[2]["first_document"] + 1
    start = int(split.doc_offsets[last_doc]) + 3
    ids = np.asarray(split.tokens[start : start + 8]).tolist()
    assert start in three.positions(ids).tolist()


def test_find_exposures_equal_brute_force(data_dir, cfg, all_batches):
    index = TraceIndex(data_dir)
    split = index.split
    sampler = WindowSampler.for_run(cfg, split)
    saw_split = saw_two_windows = 0
    for k, ids in enumerate(query_set(split)):
        until = STEPS if k % 3 else 150
        report = find(index, cfg, ids, until_step=until, limit=10**6, context=3)
        positions = brute_positions(split.tokens, ids)
        assert report["count"] == positions.size
        assert [o["token_position"] for o in report["occurrences"]] == positions.tolist()
        every = []
        for occ, p in zip(report["occurrences"], positions):
            want = brute_exposures(all_batches, int(p), len(ids), sampler.num_windows, until)
            assert occ["exposures"] == want, (ids, p)
            assert occ["split"] == (sampler.windows_holding([p], [p + len(ids)])[1].size == 0)
            assert occ["document"] == int(np.searchsorted(split.doc_offsets, p, side="right") - 1)
            assert occ["source_row"] == int(split.doc_rows[occ["document"]])
            saw_split += occ["split"]
            saw_two_windows += sampler.windows_holding([p], [p + len(ids)])[1].size == 2
            every += [e["update"] for e in want]
        assert report["first_update"] == (min(every) if every else None)
        assert report["num_exposures"] == len(every)
        schedule = [s for s in export_schedule(cfg, STEPS) if s <= until]
        assert report["exposures_by_step"] == [{"step": s, "exposures": sum(e < s for e in every)} for s in schedule]
        # the totals count every occurrence, not only the --limit listed ones
        short = find(index, cfg, ids, until_step=until, limit=2, context=3)
        assert short == {**report, "occurrences": report["occurrences"][:2]}
    assert saw_split > 0 and saw_two_windows > 0


def test_exposed_rows_hold_the_occurrence(data_dir, cfg):
    """Each exposure's (step, row) of the trainer's batch really holds the occurrence whole."""
    index = TraceIndex(data_dir)
    split = index.split
    sampler = WindowSampler.for_run(cfg, split)
    ids = split.tokens[1000:1006].tolist()
    report = find(index, cfg, ids, limit=100)
    assert report["num_exposures"] > 0
    for occ in report["occurrences"]:
        for e in occ["exposures"]:
            window = sampler.global_batch_windows(e["update"])[e["row"]]
            row = read_windows(split, [window], SEQ_LEN)[0]
            offset = occ["token_position"] - window * SEQ_LEN
            assert row[offset : offset + len(ids)].tolist() == ids


def test_answers_do_not_depend_on_world_size_or_micro_batch(data_dir, cfg):
    """find reads only the recipe's global batch: micro-batch 2 or 4 give the same report, and each exposure's row
    is what the trainer's rank (row // per-rank rows) reads at 1 or 2 processes (gathered in rank order)."""
    index = TraceIndex(data_dir)
    split = index.split
    ids = split.tokens[2000:2004].tolist()
    reports = [find(index, parse_config(["--config", str(TINY_YAML), *CONFIG_ARGS[:4], "--micro_batch_size",
                                               str(micro), *CONFIG_ARGS[6:]], validate=False), ids, limit=100)
               for micro in (2, 4)]
    assert reports[0] == reports[1] and reports[0]["num_exposures"] > 0
    sampler = WindowSampler.for_run(cfg, split)
    for world in (1, 2):
        per_rank = BATCH // world
        for occ in reports[0]["occurrences"]:
            for e in occ["exposures"]:
                rank, local = divmod(e["row"], per_rank)
                window = int(sampler.rank_windows(e["update"], rank, world)[local])
                row = read_windows(split, [window], SEQ_LEN)[0]
                offset = occ["token_position"] - window * SEQ_LEN
                assert row[offset : offset + len(ids)].tolist() == ids


@pytest.mark.parametrize("steps, interval, total", [([0, 1, 2, 4, 8], 10, 45), ([], 0, 7), ([3, 50], 5, 20), ([0], 1, 3)])
def test_export_schedule_is_the_trainers(steps, interval, total):
    """trace's export schedule (computed, not looped over every step) lists exactly the steps the trainer exports."""
    cfg = parse_config(["--config", str(TINY_YAML), "--export_steps", *map(str, steps), "--export_interval",
                        str(interval)], validate=False)
    assert export_schedule(cfg, total) == [s for s in range(total + 1) if cfg.is_export_step(s) or s == total]


def test_sampler_inverse_round_trips():
    sampler = WindowSampler(num_tokens=10_001, seq_len=10, global_batch_size=7, seed=3)
    windows = np.arange(sampler.num_windows)
    total = 3 * sampler.num_windows + 123  # three epochs and a partial one
    which, g = sampler.sequences_reading(windows, total)
    assert np.array_equal(g, np.arange(total))  # every sequence read exactly one window
    step, row = np.divmod(g, 7)
    for s in (0, 1, 300, total // 7 - 1):
        sel = step == s
        assert np.array_equal(windows[which[sel]][np.argsort(row[sel])], sampler.global_batch_windows(s))
    unshuffled = WindowSampler(num_tokens=10_001, seq_len=10, global_batch_size=7, seed=3, shuffle=False)
    assert np.array_equal(unshuffled.sequences_reading([5], 2500)[1], [5, 1005, 2005])
    which, w = sampler.windows_holding([0, 10, 10, 15, 995], [1, 11, 12, 26, 1001])
    assert which.tolist() == [0, 1, 1, 2, 4] and w.tolist() == [0, 0, 1, 1, 99]  # [15, 26) fits no window


def test_find_cli_json_and_text(data_dir, capsys):
    common = ["find", "--data_dir", str(data_dir), "--config", str(TINY_YAML), *CONFIG_ARGS]
    cli.main(["trace", *common, "--text", "the", "--json", "--limit", "2"])
    report = json.loads(capsys.readouterr().out)
    assert report["token_ids"] == [1169] and report["text"] == "the"
    assert len(report["occurrences"]) == 2 and report["leading_space_variant"]["token_ids"] == [262]
    split = open_split(data_dir, "train")
    assert report["leading_space_variant"]["count"] == brute_positions(split.tokens, [262]).size
    assert {"count", "first_update", "occurrences", "exposures_by_step"} <= report.keys()
    assert {"token_position", "document", "source_row", "exposures", "split", "context"} <= \
        report["occurrences"][0].keys()
    cli.main(["trace", *common, "--text", "zzqxv never in the sample qqqzz"])
    out = capsys.readouterr().out
    assert out.startswith("0 occurrences of 'zzqxv never in the sample qqqzz'")


def test_bad_inputs_are_one_error_line(data_dir, owt_data_dir, tmp_path, capsys):
    common = ["--config", str(TINY_YAML), *CONFIG_ARGS]
    cases = {
        "no trace index at": ["find", "--data_dir", str(owt_data_dir), *common, "--text", "the"],
        "the text is empty": ["find", "--data_dir", str(data_dir), *common, "--text", ""],
        "longer than a training window": ["find", "--data_dir", str(data_dir), *common, "--text", "word " * 40],
        "beyond the run's 400 steps": ["find", "--data_dir", str(data_dir), *common, "--text", "the",
                                       "--until_step", "401"],
        "does not exist": ["find", "--data_dir", str(data_dir), "--run_dir", str(tmp_path / "nope"), "--text", "a"],
        "unknown trace verb": ["frobnicate"],
        "is not a data_dir": ["index", "--data_dir", str(tmp_path)],
        "--shards must be >= 1": ["index", "--data_dir", str(owt_data_dir), "--shards", "0"],
        "cannot fill that many shards": ["index", "--data_dir", str(owt_data_dir), "--shards", "34"],
        "--shard_ids must be shard numbers in [0, 3)": ["index", "--data_dir", str(owt_data_dir), "--shards", "3",
                                                        "--shard_ids", "3"],
    }
    for message, argv in cases.items():
        code, captured = run_cli(capsys, *argv)
        lines = captured.err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (message,
                                                                                                           lines)
    assert not [p for p in owt_data_dir.iterdir() if p.name.startswith(".tmp")]  # the refusals wrote nothing


def test_index_of_another_data_dir_is_refused(data_dir, tmp_path, capsys):
    """A stale index (the data_dir re-prepared: its manifest changed) and one copied next to another data_dir."""
    other = tmp_path / "other"
    shutil.copytree(data_dir, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["note"] = "re-prepared"
    (other / "manifest.json").write_text(json.dumps(manifest))
    code, captured = run_cli(capsys, "find", "--data_dir", str(other), "--config", str(TINY_YAML), *CONFIG_ARGS,
                             "--text", "the")
    assert code == 2 and "was built from another data_dir" in captured.err


# ------------------------------------------------------------------------------------ a run's own data order


def rows_holding(batches: list[np.ndarray], ids: list[int]) -> list[tuple[int, int]]:
    """(update, row) once per occurrence of `ids` inside each row of each fed batch: the exposures, by brute force."""
    return sorted((u, r) for u, batch in enumerate(batches) for r, row in enumerate(batch)
                  for _ in range(brute_positions(row, ids).size))


def test_find_follows_the_runs_data_seed_and_its_fed_batches(trained_run, data_dir, capsys):
    from gpt2_owt.training.data_dir import batch_sha256
    from gpt2_owt.training.run_dir import FED_BATCHES, read_rows
    from gpt2_owt.training.runs import run_config

    run = trained_run(**SEED_RUN)
    cfg = run_config(run)
    assert (cfg.seed, cfg.data_seed) == (1337, 7)
    split = open_split(data_dir, "train")
    seq_len, steps = SEED_RUN["seq_len"], SEED_RUN["max_steps"]
    sampler = WindowSampler.for_run(cfg, split)
    batches = [read_windows(split, sampler.global_batch_windows(u), seq_len) for u in range(steps)]
    fed = [row["tokens_sha256"] for row in read_rows(run / FED_BATCHES)]
    assert [batch_sha256(b) for b in batches] == fed  # the sampler find inverts is the one the trainer fed from
    from_seed = WindowSampler(num_tokens=split.num_tokens, seq_len=seq_len, global_batch_size=4, seed=cfg.seed)
    wrong = [read_windows(split, from_seed.global_batch_windows(u), seq_len) for u in range(steps)]
    ids = batches[5][2][3:9].tolist()  # a 6-gram the trainer fed at update 5, row 2
    assert rows_holding(wrong, ids) != rows_holding(batches, ids)  # the old bug would fail this test

    capsys.readouterr()
    cli.main(["trace", "find", "--data_dir", str(data_dir), "--run_dir", str(run), "--token_ids", *map(str, ids),
                    "--json", "--limit", "1000"])
    report = json.loads(capsys.readouterr().out)
    got = sorted((e["update"], e["row"]) for occ in report["occurrences"] for e in occ["exposures"])
    assert (5, 2) in got and got == rows_holding(batches, ids)
    assert report["num_exposures"] == len(got) and report["first_update"] == got[0][0]
    assert (report["until_step"], report["steps_done"], report["total_steps"]) == (steps, steps, steps)

    # --config next to --run_dir: the run's data order or one error naming each difference
    recipe = ["find", "--data_dir", str(data_dir), "--run_dir", str(run), "--config", str(TINY_YAML),
              "--token_ids", *map(str, ids), "--json", "--limit", "1000"]
    code, captured = run_cli(capsys, *recipe)
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    for difference in ("seq_len 64 (the run: 32)", "global_batch_size 8 (the run: 4)", "data_seed 1337 (the run: 7)",
                       "steps 60 (the run: 12)"):
        assert difference in lines[0]
    for seed in (["--data_seed", "7"], ["--seed", "7"]):  # data_seed follows seed when the YAML leaves it unset
        cli.main(["trace", *recipe, "--seq_len", "32", "--global_batch_size", "4", "--max_steps", "12", *seed])
        assert json.loads(capsys.readouterr().out) == report


def test_find_on_an_interrupted_run_stops_at_its_steps_done(trained_run, data_dir, tmp_path, capsys):
    """run_info.json says how far a run got (the trainer writes steps_done and status "interrupted" when stopped):
    exposures after it were never trained on. A run that changed its data order on a resume is refused."""
    run = shutil.copytree(trained_run(**SEED_RUN), tmp_path / "run")
    info = json.loads((run / "run_info.json").read_text())
    (run / "run_info.json").write_text(json.dumps(info | {"steps_done": 6, "status": "interrupted"}))
    split = open_split(data_dir, "train")
    sampler = WindowSampler.for_run(json.loads((run / "training_config.json").read_text()), split)
    batches = [read_windows(split, sampler.global_batch_windows(u), 32) for u in range(12)]
    ids = batches[9][1][0:5].tolist()
    common = ["find", "--data_dir", str(data_dir), "--run_dir", str(run), "--token_ids", *map(str, ids)]
    capsys.readouterr()
    cli.main(["trace", *common, "--json", "--limit", "1000"])
    report = json.loads(capsys.readouterr().out)
    got = sorted((e["update"], e["row"]) for occ in report["occurrences"] for e in occ["exposures"])
    assert got == rows_holding(batches[:6], ids) and all(u < 6 for u, _ in got)
    assert (report["until_step"], report["steps_done"], report["total_steps"]) == (6, 6, 12)
    cli.main(["trace", *common])
    assert "the run was interrupted after 6 of its 12 steps: exposures stop at update 5" in capsys.readouterr().out
    code, captured = run_cli(capsys, *common, "--until_step", "8")
    assert code == 2 and "--until_step 8 is beyond the run's 6 steps (interrupted: 6 of 12 steps done)" in captured.err
    segment = {"from_step": 6, "changes": {"data_seed": {"old": 7, "new": 8}}}
    (run / "run_info.json").write_text(json.dumps(info | {"segments": [segment]}))
    code, captured = run_cli(capsys, *common)
    assert code == 2 and "changed its data order when it resumed at step 6 (data_seed" in captured.err
