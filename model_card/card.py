"""The model card: `ModelCardData` + `EvalResult` (YAML/model-index) rendered through `template.md.jinja`,
and its offline validation."""

import urllib.error
import urllib.request
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from gpt2_owt.core.errors import UserError

TEMPLATE = Path(__file__).parent / "template.md.jinja"
TAGS = ["gpt2", "text-generation", "causal-lm", "pretraining", "openwebtext", "reproducible"]
WIDGET = [
    {"text": "The meaning of life is"},
    {"text": "In a shocking finding, scientists discovered a herd of unicorns living in"},
    {"text": "The Transformer architecture"},
]
REQUIRED_METADATA = ("language", "license", "library_name", "pipeline_tag", "tags", "widget")


def eval_results(model_name: str, rows: list[dict]) -> list[EvalResult]:
    """model-index entries for every metric the eval produced (facts.eval_rows)."""
    return [
        EvalResult(
            task_type="text-generation", task_name="Language modelling",
            dataset_type=row["dataset_type"], dataset_name=row["label"], dataset_config=row["dataset_config"],
            dataset_split=row["split"], metric_type=row["metric_type"], metric_name=f"{row['task']} {row['metric']}",
            metric_value=row["value"],
        )
        for row in rows
    ]


def card_data(model_name: str, dataset_id: str | None, rows: list[dict]) -> ModelCardData:
    return ModelCardData(
        language="en", license="mit", library_name="transformers", pipeline_tag="text-generation",
        datasets=[dataset_id] if dataset_id else None, tags=TAGS, widget=WIDGET,
        model_name=model_name, eval_results=eval_results(model_name, rows) or None,
    )


def render(context: dict) -> ModelCard:
    """The card for `context` (everything facts.py derived; see build.py for the keys)."""
    data = card_data(context["model_name"], context.get("dataset_id"), context["eval_rows"])
    return ModelCard.from_template(data, template_path=str(TEMPLATE), **context)


def validate_offline(readme: Path, expected_rows: list[dict], dataset_id: str | None) -> None:
    """The README's YAML parses, required fields are present (`datasets` when the source is a Hub dataset), and
    `ModelCard.load` recovers every eval result."""
    text = readme.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        raise UserError(f"{readme}: no YAML metadata block")
    meta = yaml.safe_load(text.split("---\n", 2)[1])
    missing = [key for key in REQUIRED_METADATA if not meta.get(key)]
    if dataset_id is not None and meta.get("datasets") != [dataset_id]:
        missing.append("datasets")
    if missing:
        raise UserError(f"{readme}: metadata lacks {missing}")
    loaded = ModelCard.load(readme)
    got = {(r.dataset_type, r.metric_name): r.metric_value for r in (loaded.data.eval_results or [])}
    want = {(r["dataset_type"], f"{r['task']} {r['metric']}"): r["value"] for r in expected_rows}
    if got != want:
        raise UserError(f"{readme}: model-index does not round-trip: wrote {want}, read back {got}")


def hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """True if `endpoint` answers HTTP at all within `timeout` seconds (any status code counts)."""
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


def validate_online(readme: Path) -> str:
    """`ModelCard.validate()` (the Hub's metadata checker) when the Hub answers; otherwise say it was skipped."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or not hub_reachable(constants.ENDPOINT):
        return f"skipped: {constants.ENDPOINT} not reachable (offline); offline checks passed"
    ModelCard.load(readme).validate()
    return f"passed ({constants.ENDPOINT}/api/validate-yaml)"
