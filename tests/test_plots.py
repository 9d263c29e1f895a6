"""The run's PNG, with and without data to show."""

import warnings

import matplotlib.image
import numpy as np

from rlkit.core.metrics import MetricsLogger
from rlkit.loops.plots import plot_run


def curve_pixels(path) -> int:
    """Pixels in matplotlib's first line colour (C0, #1f77b4)."""
    rgb = (matplotlib.image.imread(path)[..., :3] * 255).round()
    return int((np.abs(rgb - [31, 119, 180]).max(axis=-1) <= 8).sum())


def test_plot_of_a_run_without_episodes_says_so_without_warnings(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,name,value\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. matplotlib's "no artists with labels"
        path = plot_run(tmp_path)
    assert path == tmp_path / "progress.png" and curve_pixels(path) == 0


def test_plot_draws_the_logged_curves(tmp_path):
    log = MetricsLogger(tmp_path)
    for step in range(0, 10_000, 1000):
        log.log(step, **{"charts/true_return": step / 10, "charts/reward_val_accuracy": 0.8})
    log.close()
    assert curve_pixels(plot_run(tmp_path)) > 500  # a rising return and a flat accuracy
