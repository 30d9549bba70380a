"""The pipeline's plots, drawn headless (matplotlib Agg): training curves from run_dir/metrics.jsonl (the card) and
evaluation metrics over a checkpoint series (eval series, the card).

matplotlib loads on the first plot drawn, not on import: the commands that import this module parse their flags and
check their inputs without it.
"""

import functools
from pathlib import Path

LOSS_PLOT = "loss.png"
LR_PLOT = "lr.png"
# No timestamp or version in the PNG, so rebuilding a release gives identical bytes.
_PNG_METADATA = {"Software": None}


@functools.cache
def pyplot():
    """matplotlib.pyplot on the Agg backend (chosen before pyplot loads)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata=_PNG_METADATA)
    pyplot().close(fig)


def plot_loss(metrics: list[dict], path: Path) -> bool:
    """Train and validation loss against tokens seen. False (nothing written) if metrics hold no loss."""
    train = [(m["tokens"], m["train_loss"]) for m in metrics if m.get("train_loss") is not None]
    val = [(m["tokens"], m["val_loss"]) for m in metrics if m.get("val_loss") is not None]
    if not train and not val:
        return False
    fig, ax = pyplot().subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="val loss", markersize=3)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
    return True


def plot_lr(metrics: list[dict], path: Path) -> bool:
    """Learning rate against optimizer step. False (nothing written) if metrics hold no lr."""
    points = [(m["step"], m["lr"]) for m in metrics if m.get("lr") is not None]
    if not points:
        return False
    fig, ax = pyplot().subplots(figsize=(7, 3))
    ax.plot(*zip(*points))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def write_plots(metrics: list[dict], out_dir: Path) -> list[str]:
    """Write every plot the metrics support into `out_dir`; return the file names written."""
    written = []
    for name, plot in ((LOSS_PLOT, plot_loss), (LR_PLOT, plot_lr)):
        if plot(metrics, out_dir / name):
            written.append(name)
    return written


EVAL_SERIES_PLOT = "eval_series.png"
# (task, metric, axis label) panels of the checkpoint-series plot; a panel is drawn if any row has the metric.
SERIES_PANELS = (
    ("wikitext", "word_perplexity", "WikiText-2 word perplexity"),
    ("lambada_openai", "acc", "LAMBADA accuracy"),
    ("lambada_openai", "perplexity", "LAMBADA perplexity"),
    ("owt_val", "loss", "OpenWebText val loss (nats/token)"),
)


def plot_eval_series(rows: list[dict], path: Path) -> bool:
    """Evaluation metrics against tokens seen, one panel per metric, log x (eval/series.py rows).

    Rows without a token count (a Hub revision with no metadata) are left out; the tokens-0 checkpoint sits at
    the linear part of a symlog axis. False (nothing written) if no row has a plotted metric and a token count."""
    panels = []
    for task, metric, label in SERIES_PANELS:
        points = sorted((r["tokens"], r["metrics"][task][metric]) for r in rows
                        if r.get("tokens") is not None and metric in r["metrics"].get(task, {}))
        if points:
            panels.append((label, points))
    if not panels:
        return False
    fig, axes = pyplot().subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    positive = [t for _, points in panels for t, _ in points if t > 0]
    for ax, (label, points) in zip(axes[0], panels):
        ax.plot(*zip(*points), "o-", markersize=3)
        if positive:
            ax.set_xscale("symlog", linthresh=min(positive))
        ax.set_xlabel("tokens seen")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    _save(fig, path)
    return True
