"""Atari frame stacking: rlkit's AtariFrameStack against SB3's VecFrameStack, side by side.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_frame_stack.py --repeats 40

Two measurements, interleaved in one process (medians over the repeats): the stack update
alone (4 envs of 84x84 frames), and a rollout worker's whole sample call (4 Pong envs, 25 steps,
random actions) with each stack, next to one raw env stepped alone (CPU time per env step).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gymnasium import spaces  # noqa: E402
from stable_baselines3.common.vec_env import VecFrameStack  # noqa: E402
from stable_baselines3.common.vec_env.stacked_observations import StackedObservations  # noqa: E402

import rlkit.distributed.worker as worker_module  # noqa: E402
from envs import EnvSpec, make_env  # noqa: E402
from envs.frame_stack import PackedStackedObservations  # noqa: E402
from rlkit.distributed.policies import RandomPolicy  # noqa: E402


def cpu_per_call(fn, calls: int) -> float:
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    n, space = 4, spaces.Box(0, 255, (84, 84, 1), np.uint8)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (n, 84, 84, 1), dtype=np.uint8)
    dones, infos = np.zeros(n, dtype=bool), [{} for _ in range(n)]
    stacks = {"packed": PackedStackedObservations(n, 4, space)}
    stacks["sb3"] = StackedObservations(n, 4, space, "last")
    for stack in stacks.values():
        stack.reset(frames)

    spec = EnvSpec("ALE/Pong-v5")
    workers = {"packed": worker_module.RolloutWorker(spec, 0, 0, n, frame_stack=True)}
    packed_class = worker_module.AtariFrameStack
    worker_module.AtariFrameStack = VecFrameStack  # the same worker with SB3's stack
    workers["sb3"] = worker_module.RolloutWorker(spec, 0, 0, n, frame_stack=True)
    worker_module.AtariFrameStack = packed_class
    for w in workers.values():
        w.set_policy(RandomPolicy(w.spaces()[1]))
        w.sample(25)
    env = make_env(spec, seed=0)()
    env.reset(seed=0)
    actions = [env.action_space.sample() for _ in range(1000)]

    def raw_steps() -> None:
        for i in range(n * 25):
            _, _, terminated, truncated, _ = env.step(actions[i % 1000])
            if terminated or truncated:
                env.reset()

    times: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for name, stack in stacks.items():
            t = cpu_per_call(lambda s=stack: s.update(frames, dones, infos), 200)
            times.setdefault(f"update_{name}_us", []).append(t * 1e6)
        for name, w in workers.items():
            t = cpu_per_call(lambda w=w: w.sample(25), 1) / (n * 25)
            times.setdefault(f"worker_{name}_us_per_step", []).append(t * 1e6)
        times.setdefault("raw_env_us_per_step", []).append(
            cpu_per_call(raw_steps, 1) / (n * 25) * 1e6
        )
    med = {k: statistics.median(v) for k, v in times.items()}
    raw = med["raw_env_us_per_step"]
    record = {
        "bench": "frame_stack",
        "repeats": args.repeats,
        **{k: round(v, 2) for k, v in med.items()},
        "update_speedup": med["update_sb3_us"] / med["update_packed_us"],
        "worker_packed_vs_raw": med["worker_packed_us_per_step"] / raw,
        "worker_sb3_vs_raw": med["worker_sb3_us_per_step"] / raw,
        "load_avg_1m": os.getloadavg()[0],
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
