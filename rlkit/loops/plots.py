"""The run's PNG: true return and reward-model accuracy over training."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rlkit.core.metrics import read_metrics  # noqa: E402


def _legend(ax: plt.Axes, empty: str) -> None:
    """A legend, or ``empty`` written across an axes that has nothing to show."""
    if ax.lines:
        ax.legend(loc="best")
    else:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, color="gray")


def plot_run(run_dir: str | Path, name: str = "progress.png") -> Path:
    """Plot ``charts/true_return`` and ``charts/reward_val_accuracy`` against steps."""
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key, label in (
        ("charts/true_return", "training episodes"),
        ("charts/true_return_eval", "evaluation"),
    ):
        if metrics.get(key):
            steps, values = zip(*metrics[key], strict=True)
            ax1.plot(steps, values, marker="o" if "eval" in key else None, label=label)
    ax1.set(title="true return", xlabel="policy steps")
    _legend(ax1, "no episode finished yet")
    for key, label in (
        ("charts/reward_val_accuracy", "held-out"),
        ("charts/reward_train_accuracy", "train"),
    ):
        if metrics.get(key):
            steps, values = zip(*metrics[key], strict=True)
            ax2.plot(steps, values, label=label)
    ax2.set(title="reward-model accuracy on labels", xlabel="policy steps", ylim=(0, 1.02))
    _legend(ax2, "no held-out labels yet")
    fig.tight_layout()
    path = run_dir / name
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
