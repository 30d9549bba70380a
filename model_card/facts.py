"""Every number and table on the card, derived from the run's own files.

Nothing here is typed by hand or guessed: a value the inputs do not hold is left out (None / no row), and the
template omits what is None. Derived facts come from their one source: FLOPs per token and device power from
modeling/flops.py, the GPT-2 reference numbers from results.json (written by eval, eval/references.py).
"""

import json
import math
import shlex
from dataclasses import dataclass

from gpt2_owt.modeling.flops import FLOPS_FORMULA, flops_per_token, tdp_watts

# (task, metric, dataset label, model-index dataset type, config, split, metric type) in card order.
EVAL_METRICS = [
    ("wikitext", "word_perplexity", "WikiText-2 (raw, test)", "wikitext", "wikitext-2-raw-v1", "test", "perplexity"),
    ("wikitext", "bits_per_byte", "WikiText-2 (raw, test)", "wikitext", "wikitext-2-raw-v1", "test", "bits_per_byte"),
    ("wikitext_sliding", "perplexity", "WikiText-2 (raw, test), sliding window", "wikitext", "wikitext-2-raw-v1",
     "test", "perplexity"),
    ("lambada_openai", "acc", "LAMBADA (OpenAI)", "EleutherAI/lambada_openai", "default", "test", "accuracy"),
    ("lambada_openai", "acc_last_token", "LAMBADA (OpenAI)", "EleutherAI/lambada_openai", "default", "test",
     "accuracy"),
    ("lambada_openai", "perplexity", "LAMBADA (OpenAI)", "EleutherAI/lambada_openai", "default", "test", "perplexity"),
    ("owt_val", "loss", "OpenWebText held-out split", "Skylion007/openwebtext", "plain_text", "validation", "loss"),
    ("owt_val", "perplexity", "OpenWebText held-out split", "Skylion007/openwebtext", "plain_text", "validation",
     "perplexity"),
]

ARCHITECTURE_FIELDS = [
    ("n_layer", "Transformer layers"), ("n_head", "Attention heads"), ("n_embd", "Hidden size"),
    ("n_inner", "MLP inner size"), ("n_positions", "Context length (tokens)"), ("vocab_size", "Vocabulary size"),
    ("activation_function", "Activation"), ("layer_norm_epsilon", "LayerNorm epsilon"),
    ("tie_word_embeddings", "Tied input/output embeddings"), ("embd_pdrop", "Embedding dropout"),
    ("attn_pdrop", "Attention dropout"), ("resid_pdrop", "Residual dropout"),
    ("initializer_range", "Init std"), ("torch_dtype", "Stored dtype"), ("dtype", "Stored dtype"),
]

def fmt(value) -> str:
    """One table cell: plain text for str/number, JSON for the rest; pipes escaped for markdown."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, float):
        text = repr(value)  # exact: 6e-05, 0.95, 1.0
    else:
        text = json.dumps(value)
    return text.replace("|", "\\|").replace("\n", " ")


def find_key(tree, names: tuple[str, ...]):
    """First scalar value stored under any of `names`, searching nested dicts depth-first (None if absent)."""
    if isinstance(tree, dict):
        for name in names:
            if name in tree and not isinstance(tree[name], (dict, list)) and tree[name] is not None:
                return tree[name]
        for value in tree.values():
            found = find_key(value, names)
            if found is not None:
                return found
    return None


def hub_dataset_id(manifest: dict) -> str | None:
    """The source's Hub dataset id (`owner/name`), or None for a local builder such as `json` + data_files."""
    dataset = find_key(manifest.get("source", manifest), ("dataset", "dataset_id", "hub_id"))
    return dataset if isinstance(dataset, str) and dataset.count("/") == 1 else None


def params_label(num_parameters: int) -> str:
    """124M-style size label from the counted parameters."""
    return f"{num_parameters / 1e6:.0f}M" if num_parameters >= 1e7 else f"{num_parameters / 1e6:.1f}M"


def architecture_rows(config: dict, num_parameters: int | None) -> list[tuple[str, str]]:
    rows = [("Architecture", ", ".join(config.get("architectures") or [config.get("model_type", "?")]))]
    if num_parameters is not None:
        rows.append(("Parameters (unique, tied embeddings counted once)", f"{num_parameters:,}"))
    for key, label in ARCHITECTURE_FIELDS:
        if key not in config:
            continue
        value = config[key]
        if key == "n_inner" and value is None and "n_embd" in config:
            value = f"{4 * config['n_embd']} (4 × hidden size)"
        rows.append((label, fmt(value)))
    return rows


def hyperparameter_rows(training_config: dict) -> list[tuple[str, str]]:
    """Every field of the resolved training config, in file order."""
    return [(key, fmt(value)) for key, value in training_config.items()]


def flat_rows(tree: dict, skip: tuple[str, ...] = (), prefix: str = "") -> list[tuple[str, str]]:
    """Scalar leaves of a nested dict as (dotted.key, value) rows, skipping top-level `skip` keys."""
    rows = []
    for key, value in tree.items():
        if not prefix and key in skip:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(flat_rows(value, prefix=f"{name}."))
        elif value is not None:
            rows.append((name, fmt(value)))
    return rows


@dataclass
class CostInputs:
    """User-stated inputs for the cost and CO2 estimates (None = not estimated)."""

    gpu_hour_usd: float | None = None
    gpu_watts: float | None = None
    grid_kgco2_per_kwh: float | None = None


def compute_facts(run_info: dict, training_config: dict, config: dict, metrics: list[dict],
                  cost: CostInputs) -> dict:
    """Tokens, steps, time, hardware, device-hours, FLOPs, energy/cost/CO2: only what the inputs support."""
    facts: dict = {}
    train_rows = [m for m in metrics if "train_loss" in m]
    val_rows = [m for m in metrics if "val_loss" in m]
    facts["steps"] = run_info.get("steps_done", metrics[-1]["step"] if metrics else None)
    facts["tokens"] = run_info.get("tokens_seen", metrics[-1].get("tokens") if metrics else None)
    facts["final_train_loss"] = train_rows[-1]["train_loss"] if train_rows else None
    facts["final_val_loss"] = val_rows[-1]["val_loss"] if val_rows else None
    speeds = [m["tokens_per_sec"] for m in train_rows if m.get("tokens_per_sec")]
    facts["tokens_per_sec"] = sorted(speeds)[len(speeds) // 2] if speeds else None
    facts["started_at"], facts["finished_at"] = run_info.get("started_at"), run_info.get("finished_at")
    facts["status"] = run_info.get("status")
    wall = run_info.get("wall_time_seconds")
    facts["wall_time_hours"] = wall / 3600 if wall is not None else None

    hw = run_info.get("hardware") or {}
    facts["hardware"] = hw or None
    on_gpu = hw.get("device_type") == "cuda"
    world = hw.get("num_processes")
    device_hours = wall / 3600 * world if wall is not None and world else None
    facts["device_hours"] = device_hours
    facts["device_hours_label"] = "GPU-hours" if on_gpu else "CPU process-hours"

    seq_len = training_config.get("seq_len")
    if run_info.get("flops_per_token") is not None:
        facts["flops_per_token"] = float(run_info["flops_per_token"])
        facts["flops_source"] = f"run_info.json `flops_per_token`, the trainer's estimate {FLOPS_FORMULA}"
    elif seq_len is not None and all(k in config for k in ("n_layer", "n_embd", "vocab_size")):
        facts["flops_per_token"] = flops_per_token(config, seq_len)
        facts["flops_source"] = f"{FLOPS_FORMULA}, from config.json with seq_len = {seq_len}"
    else:
        facts["flops_per_token"] = None
    facts["training_flops"] = (facts["flops_per_token"] * facts["tokens"]
                               if facts["flops_per_token"] is not None and facts["tokens"] is not None else None)

    # Energy/cost/CO2: on GPU runs the board power defaults to the GPU's published TDP; never guessed on CPU.
    watts = cost.gpu_watts
    if watts is None and on_gpu:
        watts = tdp_watts(hw.get("device_name"))
    facts["watts"] = watts
    facts["watts_source"] = "--gpu_watts" if cost.gpu_watts is not None else "published TDP of the GPU"
    facts["energy_kwh"] = device_hours * watts / 1000 if device_hours is not None and watts is not None else None
    facts["cost_usd"] = (device_hours * cost.gpu_hour_usd
                         if device_hours is not None and cost.gpu_hour_usd is not None else None)
    facts["gpu_hour_usd"] = cost.gpu_hour_usd
    facts["co2_kg"] = (facts["energy_kwh"] * cost.grid_kgco2_per_kwh
                       if facts["energy_kwh"] is not None and cost.grid_kgco2_per_kwh is not None else None)
    facts["grid_kgco2_per_kwh"] = cost.grid_kgco2_per_kwh
    return facts


def eval_rows(results: dict | None) -> list[dict]:
    """One row per metric the eval run produced, with the labelled GPT-2 reference values results.json carries
    for that metric (eval/references.py)."""
    if not results:
        return []
    tasks = results.get("tasks", {})
    rows = []
    for task, metric, label, dtype, dconfig, split, mtype in EVAL_METRICS:
        block = tasks.get(task, {})
        value = block.get("metrics", {}).get(metric)
        if value is None:
            continue
        references = [(r["value"], r["source"]) for r in (block.get("references") or {}).get(metric, [])]
        rows.append({"task": task, "metric": metric, "label": label, "value": float(value),
                     "dataset_type": dtype, "dataset_config": dconfig, "split": split, "metric_type": mtype,
                     "references": references})
    return rows


def eval_notes(results: dict | None) -> list[tuple[str, str]]:
    """(task, note) for every task whose results carry a `notes` text (caveats written by the eval stage)."""
    tasks = (results or {}).get("tasks", {})
    return [(task, body["notes"]) for task, body in tasks.items() if isinstance(body, dict) and body.get("notes")]


def command_line(argv) -> str | None:
    return shlex.join(argv) if argv else None


OPENWEBTEXT_ID = "Skylion007/openwebtext"


def training_data_context(manifest: dict, repo_id: str) -> dict:
    """What the card says the model was trained on, and the trace commands for this release's own data.

    A run on the Hub OpenWebText dataset is "trained on OpenWebText"; any other source (the bundled sample, a local
    file) is a sample run and the card says so, with its document count and files. The trace commands prepare the
    data again with the manifest's own `gpt2-owt prepare` command line (into data/<repo name>), index it, and query
    the release by --repo_id (its training_config.json and manifest.json are read from the repo)."""
    source = manifest.get("source") or {}
    documents = source.get("documents")
    dataset = hub_dataset_id(manifest)
    sample = dataset != OPENWEBTEXT_ID or bool(source.get("allow_partial"))
    files = ", ".join(f"`{str(f).rsplit('/', 1)[-1]}`" for f in source.get("data_files") or [])
    if not sample:
        trained_on = "OpenWebText"
    else:
        count = f"{documents:,}-document " if isinstance(documents, int) else ""
        what = f"`{dataset}`" if dataset else "local"
        trained_on = f"a {count}{what} sample{f' ({files})' if files else ''}, not the full OpenWebText"
    data_dir = f"data/{repo_id.split('/')[-1]}"
    argv = list(manifest.get("command") or [])
    if "--output_dir" in argv[:-1]:
        argv[argv.index("--output_dir") + 1] = data_dir
    train = (manifest.get("splits") or {}).get("train") or {}
    index_bytes = None
    if isinstance(train.get("tokens"), int) and isinstance(train.get("documents"), int):
        # infini-gram: tokenized.0 (2 bytes per token + a 2-byte separator per document) and the suffix array
        # (one pointer of ceil(log2(bytes of tokenized.0) / 8) bytes per token of tokenized.0)
        items = train["tokens"] + train["documents"]
        index_bytes = items * (2 + math.ceil(math.log2(2 * items) / 8))
    return {"trained_on": trained_on, "sample_run": sample,
            "sample_documents": documents if isinstance(documents, int) else None,
            "trace_data_dir": data_dir, "trace_prepare": command_line(argv) if argv else None,
            "trace_index_bytes": None if index_bytes is None else
            f"{index_bytes / 1e9:.1f} GB" if index_bytes >= 1e9 else f"{index_bytes / 1e6:.1f} MB"}
