"""Every shipped recipe (training/configs/*.yaml) and every Accelerate/DeepSpeed config (accelerate_configs/*) loads
and means what it says, as litgpt's test_config_hub.py does for its recipes."""

import json
import subprocess
import typing
from pathlib import Path

import pytest
import yaml

from gpt2_owt.core.errors import UserError
from gpt2_owt.training.config import TrainConfig, parse_config

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO_ROOT / "training" / "configs").glob("*.yaml"))
ACCELERATE_YAMLS = sorted((REPO_ROOT / "accelerate_configs").glob("*.yaml"))
DEEPSPEED_JSONS = sorted((REPO_ROOT / "accelerate_configs").glob("*.json"))


def test_the_shipped_configs_are_found():
    assert {p.name for p in RECIPES} >= {"gpt2-124m-owt.yaml", "tiny.yaml"}
    assert len(ACCELERATE_YAMLS) >= 5 and len(DEEPSPEED_JSONS) >= 4


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads_with_its_values_typed(recipe):
    cfg = parse_config(["--config", str(recipe), "--data_dir", "d", "--output_dir", "o"])  # validates
    hints = typing.get_type_hints(TrainConfig)
    for key, value in (yaml.safe_load(recipe.read_text()) or {}).items():
        if value is None:
            continue
        got = getattr(cfg, key)
        assert got == (float(value) if hints[key] is float else value), key
        if hints[key] in (int, float, bool, str):
            assert type(got) is hints[key], key
    assert cfg.warmup_steps < cfg.total_steps()


def test_the_command_line_overrides_only_the_flags_it_names(tmp_path):
    recipe = tmp_path / "r.yaml"
    # `6e-4` is a string to YAML 1.1 (no dot); `1` where a float is due; `[]` for no early exports.
    recipe.write_text("model_config: tiny\nlearning_rate: 6e-4\nmin_lr: 0\nmax_steps: 10\nwarmup_steps: 1\n"
                      "export_steps: []\nrecord_fed_batches: true\n")
    cfg = parse_config(["--config", str(recipe), "--data_dir", "d", "--output_dir", "o"])
    assert (cfg.learning_rate, cfg.min_lr, cfg.export_steps, cfg.record_fed_batches) == (6e-4, 0.0, [], True)
    assert type(cfg.min_lr) is float
    cfg = parse_config(["--config", str(recipe), "--data_dir", "d", "--output_dir", "o", "--max_steps", "20",
                        "--export_steps", "0", "5", "--no_verify_data_hashes"])
    assert (cfg.max_steps, cfg.export_steps, cfg.verify_data_hashes, cfg.learning_rate) == (20, [0, 5], False, 6e-4)
    assert cfg.record_fed_batches is True  # from the YAML, untouched by the command line


@pytest.mark.parametrize("text, message", [
    ("max_steps: ten\n", "max_steps must be int, got 'ten'"),
    ("learning_rate: fast\n", "learning_rate must be float, got 'fast'"),
    ("record_fed_batches: maybe\n", "record_fed_batches must be bool, got 'maybe'"),
    ("export_steps: 5\n", "export_steps must be a list, got 5"),
    ("export_steps: [1, x]\n", "export_steps[1] must be int, got 'x'"),
    ("seq_len: 2.5\n", "seq_len must be int, got 2.5"),
])
def test_a_badly_typed_yaml_value_is_one_error_naming_the_file(tmp_path, text, message):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("max_steps: 10\nwarmup_steps: 1\n" + text if not text.startswith("max_steps") else text)
    with pytest.raises(UserError) as e:
        parse_config(["--config", str(recipe), "--data_dir", "d", "--output_dir", "o"])
    assert str(e.value) == f"{recipe}: {message}"


@pytest.mark.parametrize("config_file", ACCELERATE_YAMLS, ids=lambda p: p.name)
def test_every_accelerate_config_loads(config_file):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(config_file))
    assert cfg.num_processes >= 1 and cfg.num_machines >= 1
    ds_file = (cfg.deepspeed_config or {}).get("deepspeed_config_file")
    if cfg.distributed_type.value == "DEEPSPEED":
        assert ds_file and (REPO_ROOT / ds_file).is_file(), f"{config_file.name} names a missing {ds_file}"
    else:
        assert ds_file is None


@pytest.mark.parametrize("ds_file", DEEPSPEED_JSONS, ids=lambda p: p.name)
def test_every_deepspeed_config_loads_and_leaves_batch_and_optimizer_to_the_trainer(ds_file, monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    from accelerate.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin(hf_ds_config=str(ds_file))
    ds = plugin.deepspeed_config
    assert plugin.zero_stage in (0, 1, 2, 3)
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping"):
        assert ds.get(key, "auto") == "auto", f"{ds_file.name}: {key} must be 'auto' (the trainer fills it)"
    assert "optimizer" not in ds and "scheduler" not in ds  # the trainer builds AdamW and its schedule
    assert any(ds_file.name in p.read_text() for p in ACCELERATE_YAMLS), f"{ds_file.name} is used by no config"


def test_the_slurm_script_parses():
    for script in (REPO_ROOT / "accelerate_configs").glob("*.sh"):
        subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)


def test_a_runs_own_training_config_is_a_recipe(release_run, tmp_path):
    """`train --config RUN/training_config.json` (issue 33): the resolved file the trainer wrote is accepted, every
    setting taken as it is, and its derived fields (RESOLVED_KEYS) checked against the settings, not rejected."""
    from dataclasses import asdict

    from gpt2_owt.training.run_dir import RESOLVED_KEYS, TRAINING_CONFIG

    saved = json.loads((release_run / TRAINING_CONFIG).read_text())
    cfg = parse_config(["--config", str(release_run / TRAINING_CONFIG), "--output_dir", str(tmp_path / "o")])
    assert asdict(cfg) == {k: v for k, v in saved.items() if k not in RESOLVED_KEYS} | {"output_dir": str(tmp_path / "o")}
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(saved | {"max_steps": saved["max_steps"] + 5}))  # one place edited, not the other
    with pytest.raises(UserError) as e:
        parse_config(["--config", str(edited), "--output_dir", str(tmp_path / "o")])
    assert str(e.value).startswith(f"{edited}: derived total_steps {saved['total_steps']} (its settings give "
                                   f"{saved['max_steps'] + 5})")
