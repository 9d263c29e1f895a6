"""A rollout worker's own stepping, without Ray: SB3's DummyVecEnv vs ShallowDummyVecEnv inside.

SB3's DummyVecEnv deep-copies every step's infos; with render states in them (the segment pool
needs MuJoCo qpos/qvel to draw clips) that copy is a noticeable share of a cheap MuJoCo step.
The worker's infos are pickled to the driver anyway, so it uses ShallowDummyVecEnv. This times
``RolloutWorker.sample`` (random policy, fragments of ``--fragment`` steps) with each vector env
class, interleaved, in one process. Prints one JSON line.

    .venv/bin/python benchmarks/bench_worker_vecenv.py [--env Hopper-v5] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from stable_baselines3.common.vec_env import DummyVecEnv

import rlkit.distributed.worker as worker_module
from envs.factory import EnvSpec
from envs.shallow_dummy_vec_env import ShallowDummyVecEnv
from rlkit.distributed.policies import RandomPolicy


def steps_per_second(spec: EnvSpec, n_envs: int, fragment: int, seconds: float) -> float:
    worker = worker_module.RolloutWorker(spec, 0, 0, n_envs)
    worker.set_policy(RandomPolicy(worker.spaces()[1]))
    worker.sample(fragment)  # warm-up: first resets, allocations
    t0, steps = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        worker.sample(fragment)
        steps += fragment * n_envs
    return steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--n-envs", type=int, default=8)
    p.add_argument("--fragment", type=int, default=100)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    spec = EnvSpec(args.env, render_state=True, terminate_when_unhealthy=False)
    rates: dict[str, list[float]] = {"DummyVecEnv": [], "ShallowDummyVecEnv": []}
    for _ in range(args.repeats):
        for name, cls in (("DummyVecEnv", DummyVecEnv), ("ShallowDummyVecEnv", ShallowDummyVecEnv)):
            worker_module.ShallowDummyVecEnv = cls  # the class the worker builds its envs with
            rates[name].append(steps_per_second(spec, args.n_envs, args.fragment, args.seconds))
    worker_module.ShallowDummyVecEnv = ShallowDummyVecEnv
    median = {k: statistics.median(v) for k, v in rates.items()}
    print(json.dumps({
        "bench": "worker_vecenv", "env": args.env, "n_envs": args.n_envs,
        "fragment": args.fragment, "repeats": args.repeats,
        "steps_per_s": {k: [round(x) for x in v] for k, v in rates.items()},
        "median_steps_per_s": {k: round(v) for k, v in median.items()},
        "speedup": round(median["ShallowDummyVecEnv"] / median["DummyVecEnv"], 3),
    }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
