"""The card's "Evaluation over training" section from an eval series (`gpt2-owt eval --checkpoints ...`).

`series.json` is a list of rows {"checkpoint", "step", "tokens", "metrics": {task: {metric: value}},
"counts": {task: {...}}} (eval/series.py). The release gets a copy (eval_series.json) and a plot; the card's
model-index stays the final checkpoint's results.json (--eval_results).
"""

import json
from pathlib import Path

from gpt2_owt.core.errors import UserError
from gpt2_owt.core.plots import EVAL_SERIES_PLOT, SERIES_PANELS, plot_eval_series
from gpt2_owt.core.readers import read_json

EVAL_SERIES = "eval_series.json"


def load_eval_series(path: str | None) -> list[dict] | None:
    if not path:
        return None
    rows = read_json(path, "eval series file", expect=list)
    if not isinstance(rows, list) or not rows or not all(
            isinstance(r, dict) and "checkpoint" in r and isinstance(r.get("metrics"), dict) for r in rows):
        raise UserError(f"{path} is not an eval series (expected the non-empty row list of eval.evaluate's "
                        "series.json)")
    return rows


def series_context(rows: list[dict] | None, out_dir: Path) -> dict | None:
    """Table columns and cells for the template; writes the plot and the series copy into `out_dir`."""
    if rows is None:
        return None
    columns = [(task, metric, label) for task, metric, label in SERIES_PANELS
               if any(metric in r["metrics"].get(task, {}) for r in rows)]
    (out_dir / EVAL_SERIES).write_text(json.dumps(rows, indent=2) + "\n")
    owt_tokens = sorted({(r.get("counts") or {}).get("owt_val", {}).get("tokens") for r in rows} - {None})
    return {
        "file": EVAL_SERIES,
        "plot": EVAL_SERIES_PLOT if plot_eval_series(rows, out_dir / EVAL_SERIES_PLOT) else None,
        "columns": [label for _, _, label in columns],
        "rows": [{"checkpoint": r["checkpoint"], "step": r.get("step"), "tokens": r.get("tokens"),
                  "values": [r["metrics"].get(task, {}).get(metric) for task, metric, _ in columns]} for r in rows],
        "owt_val_tokens": owt_tokens,
    }
