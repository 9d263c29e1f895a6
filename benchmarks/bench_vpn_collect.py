"""VPN(1), VPN(3), VPN(5) and DQN on Collect at equal env steps, evaluated greedily.

Trains each agent on deterministic and stochastic Collect with ``rlkit vpn train``, then
evaluates it with ``rlkit vpn eval`` on the training variant and on the two generalization
splits (fewer goals, more walls), and draws learning curves (greedy evaluation during
training) to ``vpn_curves_<variant>.png`` in ``--curves-dir`` (default: ``--runs-dir``, so a
trial run leaves the committed curves alone; the recorded ones pass ``benchmarks/results``).
Runs live in ``--runs-dir`` (default ``runs/bench_vpn``); finished trainings and evaluations are reused, so an
interrupted benchmark picks up where it stopped. Prints one JSON line of results.

    nice -n 10 .venv/bin/python benchmarks/bench_vpn_collect.py --steps 20000 --curves-dir benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from rlkit.cli import whole_number_arg

AGENTS = {
    "DQN": ("dqn", None),  # the baseline does not plan
    "VPN(1)": ("vpn", "4"),
    "VPN(3)": ("vpn", "4,4,4"),
    "VPN(5)": ("vpn", "4,4,4,1,1"),
}
VARIANTS = {
    "deterministic": (
        "rlkit/Collect-v0",
        "rlkit/CollectFewerGoals-v0",
        "rlkit/CollectMoreWalls-v0",
    ),
    "stochastic": (
        "rlkit/CollectStochastic-v0",
        "rlkit/CollectStochasticFewerGoals-v0",
        "rlkit/CollectStochasticMoreWalls-v0",
    ),
}


def run_cli(args: list[str]) -> None:
    from rlkit.cli import main

    code = main(args)
    if code != 0:
        raise SystemExit(f"rlkit {' '.join(args)} failed with exit code {code}")


def train(name: str, env_id: str, run_dir: Path, steps: int, seed: int, extra: list[str]) -> float:
    """Train one agent unless ``run_dir`` holds a finished run; returns seconds spent."""
    algo, plan = AGENTS[name]
    if (run_dir / ("model_dqn.zip" if algo == "dqn" else "model.pt")).is_file():
        return 0.0
    resume = ["--resume"] if (run_dir / "checkpoints" / "latest").is_file() else []
    if not resume and run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)  # a run killed before its first checkpoint: start it again
    start = time.time()
    planning = ["--plan", plan] if plan is not None else []
    run_cli(["vpn", "train", "--algo", algo, "--env", env_id, *planning, "--steps", str(steps),
             "--seed", str(seed), "--run-dir", str(run_dir), *resume, *extra])  # fmt: skip
    return time.time() - start


def evaluate(run_dir: Path, env_id: str, episodes: int) -> dict:
    out = run_dir / f"eval_{env_id.replace('/', '-')}_{episodes}.json"
    if not out.is_file():
        run_cli(
            [
                "vpn",
                "eval",
                str(run_dir),
                "--episodes",
                str(episodes),
                "--env",
                env_id,
                "--output",
                str(out),
            ]
        )
    return json.loads(out.read_text())


def random_score(env_id: str, episodes: int) -> dict:
    """The uniformly random option policy on the same evaluation layouts."""
    import numpy as np

    from agents.vpn.evaluation import evaluate_episodes

    rng = np.random.default_rng(0)
    score = evaluate_episodes(
        lambda obs: rng.integers(0, 4, len(obs)), env_id, episodes, seed=10_000
    )
    return {k: round(score[k], 3) for k in ("mean", "stderr")} | {"episodes": score["episodes"]}


def plot_curves(out: Path, variant: str, run_dirs: dict[str, Path], steps: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlkit.core.metrics import read_metrics

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, run_dir in run_dirs.items():
        metrics = read_metrics(run_dir)
        for ax, key in zip(axes, ("charts/eval_reward", "charts/episode_reward"), strict=True):
            if metrics.get(key):
                xs, ys = zip(*metrics[key], strict=True)
                ax.plot(xs, ys, label=name)
    axes[0].set_title(f"Collect {variant}: greedy evaluation")
    axes[1].set_title(f"Collect {variant}: training episodes (epsilon-greedy)")
    for ax in axes:
        ax.set_xlabel("env steps (options)")
        ax.set_ylabel("episode reward")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / f"vpn_curves_{variant}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_dir_for(args: argparse.Namespace, variant: str, name: str) -> Path:
    return Path(args.runs_dir) / f"{variant}_{name.replace('(', '').replace(')', '')}_s{args.seed}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=whole_number_arg, default=20_000, help="env steps per training run"
    )
    parser.add_argument(
        "--episodes", type=int, default=2000, help="greedy episodes on the training variant"
    )
    parser.add_argument(
        "--split-episodes", type=int, default=2000, help="greedy episodes on each split"
    )
    parser.add_argument(
        "--curve-points", type=int, default=5, help="greedy evaluations during training"
    )
    parser.add_argument(
        "--curve-episodes", type=int, default=50, help="episodes per such evaluation"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default="deterministic,stochastic")
    parser.add_argument("--agents", default=",".join(AGENTS))
    parser.add_argument("--runs-dir", default="runs/bench_vpn")
    parser.add_argument(
        "--curves-dir",
        type=Path,
        default=None,
        help="where the curve PNGs go (default: --runs-dir; benchmarks/results for the record)",
    )
    parser.add_argument(
        "--extra", default="", help="further `rlkit vpn train` flags, space-separated"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    curves_dir = args.curves_dir or Path(args.runs_dir)
    curves_dir.mkdir(parents=True, exist_ok=True)
    extra = args.extra.split() + [
        "--eval-every", str(max(1, args.steps // args.curve_points)),
        "--eval-episodes", str(args.curve_episodes),
    ]  # fmt: skip
    results: dict = {"steps": args.steps, "episodes": args.episodes, "split_episodes": args.split_episodes,
                     "seed": args.seed, "scores": {}, "train_seconds": {}, "curves": {}}  # fmt: skip
    for variant in args.variants.split(","):
        train_env, *splits = VARIANTS[variant]
        for name in args.agents.split(","):
            run_dir = run_dir_for(args, variant, name)
            seconds = train(name, train_env, run_dir, args.steps, args.seed, extra)
            results["train_seconds"][f"{variant}/{name}"] = round(seconds, 1)
            for env_id, episodes in [(train_env, args.episodes)] + [
                (s, args.split_episodes) for s in splits
            ]:
                score = evaluate(run_dir, env_id, episodes)
                results["scores"][f"{variant}/{name}/{env_id}"] = {
                    k: round(score[k], 3) for k in ("mean", "stderr")
                } | {"episodes": score["episodes"]}
                print(
                    json.dumps({"variant": variant, "agent": name, "env": env_id, **score}),
                    file=sys.stderr,
                )
        for env_id in (train_env, *splits):
            results["scores"][f"{variant}/Random/{env_id}"] = random_score(env_id, args.episodes)
        # Curves of every agent trained so far for this variant (also from earlier invocations).
        all_runs = {name: run_dir_for(args, variant, name) for name in AGENTS}
        all_runs = {k: v for k, v in all_runs.items() if (v / "metrics.csv").is_file()}
        results["curves"][variant] = str(plot_curves(curves_dir, variant, all_runs, args.steps))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
