"""Atari preprocessing: rlkit's (screen read on the kept frames) against SB3's AtariWrapper.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_atari_preprocessing.py --repeats 20

Both stacks are built as ``envs.make_env`` builds a training env (``frameskip=1`` ALE env,
``Monitor``, no-op reset, frame skip 4 with max pooling, life loss ends an episode, FIRE reset,
84x84 grayscale) and stepped with the same random actions, alternating in one process: CPU time
per agent step, medians over the repeats, and the paired ratio of each repeat. The outputs are
the same (``tests/test_atari_preprocessing.py``). Prints one JSON line per env.
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

import gymnasium as gym
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stable_baselines3.common.atari_wrappers import AtariWrapper  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402

import envs  # noqa: E402,F401  (registers the ALE envs)
from envs.atari_preprocessing import atari_preprocessing  # noqa: E402
from rlkit.cli import whole_number_arg  # noqa: E402


def build(env_id: str, ours: bool) -> gym.Env:
    env = Monitor(gym.make(env_id, frameskip=1, repeat_action_probability=0.0))
    if ours:
        return atari_preprocessing(env, terminal_on_life_loss=True)
    return AtariWrapper(env, terminal_on_life_loss=True, clip_reward=False, frame_skip=4)


def cpu_per_step(env: gym.Env, actions: np.ndarray) -> float:
    """CPU seconds per agent step over ``actions``, resetting at episode ends."""
    start = time.process_time()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(int(a))
        if terminated or truncated:
            env.reset()
    return (time.process_time() - start) / len(actions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["ALE/Pong-v5", "ALE/Breakout-v5"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--steps", type=whole_number_arg, default=500, help="agent steps per repeat"
    )
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    for env_id in args.envs:
        stacks = {"rlkit": build(env_id, True), "sb3": build(env_id, False)}
        rng = np.random.default_rng(0)
        for env in stacks.values():
            env.reset(seed=0)
            cpu_per_step(env, rng.integers(0, env.action_space.n, 200))  # warm up
        times: dict[str, list[float]] = {name: [] for name in stacks}
        for _ in range(args.repeats):
            actions = rng.integers(0, stacks["sb3"].action_space.n, args.steps)
            for name, env in stacks.items():
                times[name].append(cpu_per_step(env, actions) * 1e6)
        paired = [s / r for s, r in zip(times["sb3"], times["rlkit"], strict=True)]
        record = {
            "bench": "atari_preprocessing",
            "env": env_id,
            "repeats": args.repeats,
            "steps_per_repeat": args.steps,
            "rlkit_us_per_step": round(statistics.median(times["rlkit"]), 1),
            "sb3_us_per_step": round(statistics.median(times["sb3"]), 1),
            "speedup": round(
                statistics.median(times["sb3"]) / statistics.median(times["rlkit"]), 3
            ),
            "paired_speedup_min_median_max": [
                round(min(paired), 3),
                round(statistics.median(paired), 3),
                round(max(paired), 3),
            ],
            "commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "load_avg_1m": os.getloadavg()[0],
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
