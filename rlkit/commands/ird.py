"""``rlkit ird lavaland``: Inverse Reward Design on Lavaland.

Infers the true reward from the designer's proxy on a lava-free training map, then plans on
``--maps`` random test maps with lava, for the one-hot and latent conditions, and reports
each planner's lava-entry rate and true-reward regret (a rich table, or ``--json``: one JSON
object per planner and condition a line). A PNG of the planners' paths on a few test maps
and ``results.jsonl`` go to ``--out-dir`` (an earlier run's are kept: ``results-2.jsonl``, ...).
"""

from __future__ import annotations

import dataclasses
import json as jsonlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from rlkit.core.errors import UserError, check_settings, check_types
from rlkit.core.rundir import first_unused, takes_new_files

if TYPE_CHECKING:
    from rlkit.rewards.ird.lavaland_eval import Example

CONDITION_CHOICES = ("onehot", "latent")
MAX_MAPS = 100_000
MAX_SAMPLES = 1_000_000
MAX_SCALE = 1e100
"""Largest --beta and --prior-std: their product stays far below float64's maximum."""


@dataclasses.dataclass
class LavalandConfig:
    """Inverse Reward Design on Lavaland: proxy vs posterior-mean vs risk-averse planners."""

    maps: int = 100
    """number of random test maps (each also scored without its lava)"""
    samples: int = 1000
    """posterior samples of the true reward w*"""
    seed: int = 0
    """seed of the maps, observations, proxies and samplers"""
    size: int = 10
    """map side in cells: 10 is the paper-like setting, 25 the large one"""
    beta: float = 3.0
    """designer rationality in P(proxy | w*) ∝ exp(beta w*^T phi~(proxy))"""
    prior_std: float = 1.0
    """standard deviation of the isotropic Gaussian prior over reward weights"""
    normalizer: Literal["sample", "maxent"] = "sample"
    """how Z(w) is approximated: Sample-Z (Monte Carlo over proxies) or MaxEnt-Z"""
    proxy_samples: int = 1000
    """proxy rewards drawn for Sample-Z"""
    sampler: Literal["mcmc", "importance"] = "mcmc"
    """posterior sampler: random-walk Metropolis chains, or importance sampling from the prior"""
    alpha: float = 0.1
    """CVaR level: the worst fraction of posterior samples the cvar planner averages"""
    normalize_scale: bool = True
    """risk-averse planners measure each posterior sample in units of its reward spread over
    the training map (rewards are defined up to scale as well as shift)"""
    conditions: tuple[Literal["onehot", "latent"], ...] = CONDITION_CHOICES
    """conditions to run: onehot (terrain seen) and/or latent (noisy observations + classifier)"""
    json: bool = False
    """print one JSON object per planner and condition (a line each) instead of a table"""
    out_dir: Path = Path("runs/ird-lavaland")
    """where the PNG of paths and results.jsonl are written"""
    plot_maps: int = 3
    """test maps drawn in the PNG (0: no PNG)"""


def _validate(cfg: LavalandConfig) -> None:
    checks = [
        (cfg.maps >= 1, f"--maps must be >= 1, got {cfg.maps}"),
        (cfg.samples >= 2, f"--samples must be >= 2, got {cfg.samples}"),
        (0 <= cfg.seed < 2**32, f"--seed must lie in 0..2**32-1, got {cfg.seed}"),
        (6 <= cfg.size <= 64, f"--size must lie in 6..64, got {cfg.size}"),
        (cfg.beta > 0, f"--beta must be > 0, got {cfg.beta}"),
        (cfg.prior_std > 0, f"--prior-std must be > 0, got {cfg.prior_std}"),
        (cfg.proxy_samples >= 1, f"--proxy-samples must be >= 1, got {cfg.proxy_samples}"),
        (0 < cfg.alpha <= 1, f"--alpha must lie in (0, 1], got {cfg.alpha}"),
        (len(cfg.conditions) >= 1, "--conditions needs at least one of onehot, latent"),
        (cfg.plot_maps >= 0, f"--plot-maps must be >= 0, got {cfg.plot_maps}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    # Far past the paper's settings a run does not fail, it just never ends: say so at once.
    for flag, value, cap, usual in (
        ("--maps", cfg.maps, MAX_MAPS, 100),
        ("--samples", cfg.samples, MAX_SAMPLES, 1000),
        ("--proxy-samples", cfg.proxy_samples, MAX_SAMPLES, 1000),
    ):
        if value > cap:
            raise UserError(
                f"{flag} {value:,} is over {cap:,}, hours of work (the default is {usual:,})"
            )
    check_types(cfg)
    check_settings(cfg, {})  # every float setting finite (--beta inf is no rationality)
    # beta w^T phi with w ~ N(0, prior_std^2) must stay far inside float64 (~1.8e308): past
    # ~1e150 each, the likelihoods overflow to inf and NaN and the results mean nothing.
    for flag, value, usual in (("--beta", cfg.beta, 3.0), ("--prior-std", cfg.prior_std, 1.0)):
        if value > MAX_SCALE:
            raise UserError(
                f"{flag} {value:g} is over {MAX_SCALE:g}: the likelihoods would overflow"
                f" float64 (the default is {usual:g})"
            )


def lavaland(argv: list[str]) -> int:
    """Entry point of ``rlkit ird lavaland``."""
    from rlkit.cli import run_tyro

    cfg = run_tyro(LavalandConfig, argv, prog="rlkit ird lavaland")
    _validate(cfg)
    if (cfg.out_dir / "config.json").is_file():
        raise UserError(
            f"--out-dir {cfg.out_dir} holds a run (its config.json); choose another --out-dir"
        )
    try:
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create --out-dir {cfg.out_dir}: {exc.strerror}") from exc
    if not takes_new_files(cfg.out_dir):  # found now, not after the work
        raise UserError(f"cannot write to --out-dir {cfg.out_dir}: permission denied")

    import torch

    from rlkit.core.progress import make_progress
    from rlkit.core.seeding import seed_everything
    from rlkit.rewards.ird.lavaland_eval import LavalandEvalSettings, run_lavaland_eval

    seed_everything(cfg.seed)
    # Each tensor op here is small (one map, a few thousand rewards): extra threads only add
    # synchronisation, which on a shared machine costs far more than it saves.
    torch.set_num_threads(1)
    settings = LavalandEvalSettings(
        size=cfg.size,
        n_maps=cfg.maps,
        n_samples=cfg.samples,
        n_proxy=cfg.proxy_samples,
        beta=cfg.beta,
        prior_std=cfg.prior_std,
        normalizer=cfg.normalizer,
        sampler=cfg.sampler,
        alpha=cfg.alpha,
        conditions=tuple(dict.fromkeys(cfg.conditions)),
        n_examples=min(cfg.plot_maps, cfg.maps),
        normalize_scale=cfg.normalize_scale,
    )
    with make_progress() as progress:
        task = progress.add_task(
            "IRD on Lavaland", total=cfg.maps * len(settings.conditions), status=""
        )
        result = run_lavaland_eval(
            settings, cfg.seed, on_map=lambda: progress.update(task, advance=1)
        )

    records = [  # + 0.0: a regret of -1e-15 is shown as 0.0, not -0.0
        {
            k: round(v, 4) + 0.0 if isinstance(v, float) else v
            for k, v in dataclasses.asdict(r).items()
        }
        for r in result.rows
    ]
    # An earlier run's files in --out-dir are kept: this one's get the next free suffix.
    results = first_unused(cfg.out_dir / "results.jsonl")
    with open(results, "w") as fh:
        fh.writelines(jsonlib.dumps(r) + "\n" for r in records)
    png = None
    if cfg.plot_maps > 0:
        png = first_unused(results.with_name(results.stem.replace("results", "paths") + ".png"))
        plot_paths(result.examples, settings.conditions, png)
    if cfg.json:
        for r in records:
            print(jsonlib.dumps(r))
    else:
        _print_table(records, cfg)
        print(f"results: {results}")
        if png is not None:
            print(f"paths: {png}")
    return 0


def _print_table(records: list[dict], cfg: LavalandConfig) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"IRD on Lavaland: {cfg.maps} test maps, {cfg.size}x{cfg.size}, "
        f"{cfg.samples} posterior samples ({cfg.normalizer}-Z, {cfg.sampler}), seed {cfg.seed}"
    )
    for col in ("condition", "planner", "lava rate", "regret", "regret (lava-free)"):
        table.add_column(col, justify="left" if col in ("condition", "planner") else "right")
    for r in records:
        table.add_row(
            r["condition"],
            r["planner"],
            f"{r['lava_rate']:.0%}",
            f"{r['regret']:.2f}",
            f"{r['regret_lava_free']:.2f}",
        )
    Console(file=sys.stdout, width=100).print(table)


PLANNER_COLOURS = {
    "proxy": "#ffffff",
    "mean": "#00bcd4",
    "maxmin-traj": "#9c27b0",
    "maxmin-traj-base": "#2196f3",
    "maxmin-feat": "#ff9800",
    "maxmin-feat-base": "#e91e63",
    "cvar": "#000000",
}


def plot_paths(examples: list[Example], conditions: tuple[str, ...], path: Path) -> None:
    """One panel per (test map, condition): terrain plus every planner's path, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D

    if not examples:
        return
    cmap = ListedColormap(["#9c6b3c", "#5aa845", "#f2c12e", "#d8341e"])
    n_rows, n_cols = len(examples), len(conditions)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4 * n_cols, 4 * n_rows), squeeze=False)
    for i, ex in enumerate(examples):
        h, w = ex.lavaland_map.shape
        for j, cond in enumerate(conditions):
            ax = axes[i][j]
            ax.imshow(ex.lavaland_map.terrain, cmap=cmap, vmin=0, vmax=3)
            paths = ex.paths.get(cond, {})
            for k, (name, states) in enumerate(paths.items()):
                rows, cols = np.divmod(states, w)
                offset = (k - len(paths) / 2) * 0.06  # keeps overlapping paths visible
                ax.plot(cols + offset, rows + offset, color=PLANNER_COLOURS.get(name, "grey"), lw=2)
            ax.plot(ex.lavaland_map.start[1], ex.lavaland_map.start[0], "ws", ms=8, mec="k")
            ax.set_title(f"test map {i + 1}, {cond}", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [Line2D([], [], color=c, lw=2, label=n) for n, c in PLANNER_COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=9, facecolor="#dddddd")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
