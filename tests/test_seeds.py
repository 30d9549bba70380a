"""Separate seeds: `init_seed` fixes the initial weights (hf/step0), `data_seed` fixes the data order
(fed_batches.jsonl); both default to `seed` and are recorded in training_config.json and every checkpoint."""

import json

import pytest

from gpt2_owt.core.records import sha256_file
from helpers.training import run_inprocess
from gpt2_owt.core.readers import read_json
from gpt2_owt.training.config import parse_config
from gpt2_owt.training.data_order import main as data_order_main
from gpt2_owt.training.run_dir import CHECKPOINTS, HF_EXPORTS, TRAINING_CONFIG

RUN = dict(seq_len=32, global_batch_size=4, micro_batch_size=4, max_steps=3, warmup_steps=1, eval_interval=0,
           eval_iters=1, checkpoint_interval=3, export_steps=[0], record_fed_batches="true")


def test_seeds_default_to_seed_and_override_separately():
    base = parse_config(["--data_dir", "d", "--output_dir", "o", "--max_steps", "10", "--warmup_steps", "1",
                         "--seed", "7"])
    assert (base.seed, base.init_seed, base.data_seed) == (7, 7, 7)
    split = parse_config(["--data_dir", "d", "--output_dir", "o", "--max_steps", "10", "--warmup_steps", "1",
                          "--seed", "7", "--init_seed", "1", "--data_seed", "2"])
    assert (split.seed, split.init_seed, split.data_seed) == (7, 1, 2)
    from helpers.training import TINY_YAML  # a YAML `seed:` with a `--seed` flag over it: the flag sets both seeds

    flag = parse_config(["--config", str(TINY_YAML), "--data_dir", "d", "--output_dir", "o", "--seed", "7",
                         "--data_seed", "3"])
    assert (flag.seed, flag.init_seed, flag.data_seed) == (7, 7, 3)


@pytest.fixture(scope="module")
def seed_runs(owt_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    runs = {}
    for name, seeds in (("base", {}), ("data", {"data_seed": 99}), ("init", {"init_seed": 99})):
        assert run_inprocess(owt_data_dir, root / name, seed=5, **seeds, **RUN) == 0
        runs[name] = root / name
    return runs


def step0_sha(run) -> str:
    return sha256_file(run / HF_EXPORTS / "step0" / "model.safetensors")


def batch_hashes(run) -> list[str]:
    return [json.loads(line)["tokens_sha256"] for line in (run / "fed_batches.jsonl").read_text().splitlines()]


@pytest.mark.timeout(600)
def test_data_seed_changes_batches_not_init_and_init_seed_the_reverse(seed_runs):
    base, data, init = seed_runs["base"], seed_runs["data"], seed_runs["init"]
    assert len(batch_hashes(base)) == 3
    assert step0_sha(data) == step0_sha(base)
    assert all(a != b for a, b in zip(batch_hashes(data), batch_hashes(base)))
    assert step0_sha(init) != step0_sha(base)
    assert batch_hashes(init) == batch_hashes(base)
    for run, (init_seed, data_seed) in ((base, (5, 5)), (data, (5, 99)), (init, (99, 5))):
        cfg = read_json(run / TRAINING_CONFIG)
        assert (cfg["seed"], cfg["init_seed"], cfg["data_seed"]) == (5, init_seed, data_seed)
        ckpt = read_json(run / CHECKPOINTS / "step3" / "checkpoint_info.json")
        assert (ckpt["identity"]["init_seed"], ckpt["identity"]["data_seed"]) == (init_seed, data_seed)


@pytest.mark.timeout(600)
def test_data_order_uses_data_seed(seed_runs, owt_data_dir, capsys, tmp_path):
    from helpers.training import TINY_YAML

    for name in ("base", "data"):
        data_order_main(["--config", str(TINY_YAML), "--data_dir", str(owt_data_dir), "--update", "2", "--json",
                         "--seq_len", "32", "--global_batch_size", "4", "--micro_batch_size", "4", "--seed", "5",
                         *(["--data_seed", "99"] if name == "data" else [])])
        order = json.loads(capsys.readouterr().out)
        assert order["data_seed"] == (99 if name == "data" else 5)
        assert order["tokens_sha256"] == batch_hashes(seed_runs[name])[2]
