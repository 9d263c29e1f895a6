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


def plot_run(run_dir: str | Path, name: str = "progress.png", title: str | None = None) -> Path:
    """Plot ``charts/true_return`` (SB3's mean over the last 100 training episodes) and the
    evaluations (``charts/true_return_eval``, points: there are few, at step 0 and the end),
    and ``charts/reward_val_accuracy`` / ``charts/reward_train_accuracy`` against policy
    steps; ``title`` (e.g. env, seed and label budget) goes above both."""
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    if metrics.get("charts/true_return"):
        steps, values = zip(*metrics["charts/true_return"], strict=True)
        ax1.plot(steps, values, label="training episodes (mean of the last 100)")
    if metrics.get("charts/true_return_eval"):
        steps, values = zip(*metrics["charts/true_return_eval"], strict=True)
        ax1.plot(steps, values, "o", label="evaluation (deterministic policy)")
    ax1.set(title="true return", xlabel="policy steps", ylabel="return per episode")
    _legend(ax1, "no episode finished yet")
    for key, label in (
        ("charts/reward_val_accuracy", "held-out"),
        ("charts/reward_train_accuracy", "train"),
    ):
        if metrics.get(key):
            steps, values = zip(*metrics[key], strict=True)
            ax2.plot(steps, values, label=label)
    ax2.set(
        title="reward-model accuracy on labels", xlabel="policy steps",
        ylabel="share of labels predicted", ylim=(0, 1.02),
    )  # fmt: skip
    _legend(ax2, "no held-out labels yet")
    for ax in (ax1, ax2):
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = run_dir / name
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
