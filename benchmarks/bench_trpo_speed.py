"""The TRPO preset's per-step costs: with and without its two savings, side by side.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_trpo_speed.py --repeats 5

Two agents of the MuJoCo TRPO preset (same seed, 4 envs, observation normalization, as a
preference run and its baseline use it) learn in turns in one process: one as rlkit runs it
(``EntropyTRPO.learn``: torch.distributions' argument checks off; the observation normalizer's
mean and std kept between updates), one as before (sb3-contrib's ``TRPO.learn`` with the checks
torch has by default, and mean and std recomputed on every forward pass). CPU seconds per
``--steps`` env steps, medians over the repeats and the paired ratio of each repeat. Both
learn the same policy (tests/test_trpo_entropy.py, tests/test_obs_norm.py). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sb3_contrib import TRPO  # noqa: E402

from agents.presets import make_agent  # noqa: E402
from envs import make_vec_env  # noqa: E402
from rlkit.cli import whole_number_arg  # noqa: E402
from rlkit.loops.preference_config import PrefsConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--steps", type=whole_number_arg, default=16384, help="env steps per repeat"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = PrefsConfig(env=args.env)
    agents = {}
    for name in ("rlkit", "before"):
        agent = make_agent(cfg.policy, make_vec_env(cfg.env_spec(), 4, 0), "mujoco", 0)
        if name == "before":
            norm = agent.policy.features_extractor
            norm._mean_std = norm.compute_mean_std  # as before it kept them: every call
        agents[name] = agent
    learn = {"rlkit": lambda a, n: a.learn(n, reset_num_timesteps=False),
             "before": lambda a, n: TRPO.learn(a, n, reset_num_timesteps=False)}  # fmt: skip
    for name, agent in agents.items():
        learn[name](agent, 4096)  # warm up
    times: dict[str, list[float]] = {name: [] for name in agents}
    for _ in range(args.repeats):
        for name, agent in agents.items():
            start = time.process_time()
            learn[name](agent, args.steps)
            times[name].append(time.process_time() - start)
    paired = [b / r for b, r in zip(times["before"], times["rlkit"], strict=True)]
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(json.dumps({
        "bench": "trpo_speed", "env": args.env, "repeats": args.repeats, "steps": args.steps,
        "rlkit_cpu_s": round(statistics.median(times["rlkit"]), 3),
        "before_cpu_s": round(statistics.median(times["before"]), 3),
        "speedup": round(statistics.median(times["before"]) / statistics.median(times["rlkit"]), 3),
        "paired_speedup_min_median_max": [round(min(paired), 3),
                                          round(statistics.median(paired), 3),
                                          round(max(paired), 3)],
        "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_avg_1m": os.getloadavg()[0],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
