"""Where a preference run's wall-clock overhead goes, next to plain TRPO for the same steps.

In one process: the TRPO preset on the true reward for ``--steps``, then a preference run
(synthetic teacher, ``--labels``) for the same steps. The preference run's wall-clock is split
with the times it logs in ``metrics.csv``:

- ``random_segments_s``: the random-policy segments for the initial labels;
- ``pretrain_s``: the initial queries and the reward pretraining on them;
- ``policy_s``: SB3's ``learn`` in the rounds (rollouts through the segment recorder, the
  learned reward, the TRPO updates), to set against ``trpo_s``, while reward training runs on
  the background thread;
- ``wait_s``: the main thread waiting for reward training at round boundaries;
- ``other_s``: the rest (queries, the store, logs, the final checkpoint and plot).

``rounds_vs_trpo`` = ``policy_s / trpo_s`` is what sharing the CPU with the reward learner
costs the policy. Prints one JSON line; evaluation is switched off in both runs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_prefs_overhead.py --steps 131072 --labels 700
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from bench_prefs import run_true_reward
from rich.console import Console

from rlkit.cli import whole_number_arg
from rlkit.core.allocator import keep_freed_memory
from rlkit.core.metrics import read_metrics
from rlkit.loops.preference import PreferenceLoop
from rlkit.loops.preference_config import PrefsConfig


def total(metrics: dict[str, list[tuple[int, float]]], name: str) -> float:
    return sum(v for _, v in metrics.get(name, []))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--steps", type=whole_number_arg, default=131_072)
    p.add_argument("--labels", type=whole_number_arg, default=700)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reward-learner", choices=["process", "thread"], default="process")
    p.add_argument(
        "--malloc",
        choices=["tuned", "glibc"],
        default="tuned",
        help="tuned: as the rlkit command runs (rlkit.core.allocator); glibc: its defaults",
    )
    args = p.parse_args()
    if args.malloc == "tuned":
        keep_freed_memory()
    cfg = PrefsConfig(
        env=args.env, steps=args.steps, labels=args.labels, seed=args.seed, eval_episodes=0,
        checkpoint_every=10**9, reward_learner=args.reward_learner,
    )  # fmt: skip
    _, trpo_s = run_true_reward(cfg, cfg.vec_envs("mujoco"))
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        loop = PreferenceLoop(dataclasses.replace(cfg, run_dir=run), run, Console(quiet=True))
        t0 = time.perf_counter()
        loop.run()
        prefs_s = time.perf_counter() - t0
        loop.close()
        m = read_metrics(run)
    parts = {
        "random_segments_s": total(m, "time/random_segments_seconds"),
        "pretrain_s": total(m, "time/initial_labels_and_pretrain_seconds"),
        "policy_s": total(m, "time/policy_seconds"),
        "wait_s": total(m, "time/reward_wait_seconds"),
    }
    parts["other_s"] = prefs_s - sum(parts.values())
    row = {
        "bench": "prefs_overhead_parts",
        "env": args.env,
        "seed": args.seed,
        "steps": args.steps,
        "labels": args.labels,
        "malloc": args.malloc,
        "reward_learner": args.reward_learner,
        "trpo_s": round(trpo_s, 1),
        "prefs_s": round(prefs_s, 1),
        "overhead": round(prefs_s / trpo_s, 3),
        **{k: round(v, 1) for k, v in parts.items()},
        "rounds_vs_trpo": round(parts["policy_s"] / trpo_s, 3),
    }
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
