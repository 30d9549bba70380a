"""Training curves for the card, drawn headless (matplotlib Agg) from run_dir/metrics.jsonl."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)

LOSS_PLOT = "loss.png"
LR_PLOT = "lr.png"
# No timestamp or version in the PNG, so rebuilding a release gives identical bytes.
_PNG_METADATA = {"Software": None}


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata=_PNG_METADATA)
    plt.close(fig)


def plot_loss(metrics: list[dict], path: Path) -> bool:
    """Train and validation loss against tokens seen. False (nothing written) if metrics hold no loss."""
    train = [(m["tokens"], m["train_loss"]) for m in metrics if m.get("train_loss") is not None]
    val = [(m["tokens"], m["val_loss"]) for m in metrics if m.get("val_loss") is not None]
    if not train and not val:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
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
    fig, ax = plt.subplots(figsize=(7, 3))
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
