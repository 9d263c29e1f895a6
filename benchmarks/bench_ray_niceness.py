"""Rollout throughput with Ray's default worker niceness (15) against rlkit's (0), side by side.

Ray starts its worker processes ``worker_niceness`` steps nicer than the raylet (15 by
default), so any other busy process on the node, the driver included, takes the CPU from the
rollouts. rlkit's local instance uses 0 (``rlkit.distributed.connection.WORKER_NICENESS``).
This alternates the two settings (a fresh local Ray instance each time) and times a
FragmentSampler and a RayVecEnv (random actions) with ``--workers`` workers, with nothing else
running and with ``--load`` busy-looping processes at niceness ``--load-nice`` beside them (a
second job on the node). The load starts after the workers are up and warmed: at niceness 15
under load, a worker takes minutes just to import its modules. One JSON line per
measurement, then a summary line per load level.

    .venv/bin/python benchmarks/bench_ray_niceness.py [--env Hopper-v5] [--load 0 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable

import torch
from bench_ray_throughput import timed, vec_stepper

from envs.factory import EnvSpec
from rlkit.distributed import FragmentSampler, RandomPolicy, make_ray_vec_env, shutdown
from rlkit.distributed.connection import start_local


def _busy(nice: int) -> None:
    os.nice(nice)
    while True:
        pass


def _under_load(step: Callable[[], int], args: argparse.Namespace, load: int) -> float:
    """Warm ``step`` up, start ``load`` busy processes, then time it."""
    for _ in range(3):
        step()
    ctx = mp.get_context("spawn")
    busy = [ctx.Process(target=_busy, args=(args.load_nice,), daemon=True) for _ in range(load)]
    for p in busy:
        p.start()
    try:
        time.sleep(0.5 if load else 0.0)
        return timed(step, args.seconds, warmup=0)
    finally:
        for p in busy:
            p.kill()
            p.join()


def measure(args: argparse.Namespace, niceness: int, load: int) -> dict[str, float]:
    """Steps/s of both samplers, one after the other, in a fresh local instance (rlkit's, but
    with ``worker_niceness``)."""
    start_local(worker_niceness=niceness)
    spec = EnvSpec(args.env)
    out = {}
    try:
        sampler = FragmentSampler(
            spec, args.n_envs, args.workers, seed=0, fragment_length=args.fragment_length,
            prefetch=True,
        )  # fmt: skip
        sampler.sample(RandomPolicy(sampler.action_space))

        def frag_step() -> int:
            sampler.sample()
            return args.n_envs * args.fragment_length

        try:
            out["fragments"] = _under_load(frag_step, args, load)
        finally:
            sampler.close()
        venv = make_ray_vec_env(spec, args.n_envs, args.workers, seed=0)
        try:
            out["vec_env"] = _under_load(vec_stepper(venv, args.n_envs), args, load)
        finally:
            venv.close()
    finally:
        shutdown()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--n-envs", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--fragment-length", type=int, default=100)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--load", type=int, nargs="+", default=[0, 2], help="busy processes beside")
    p.add_argument("--load-nice", type=int, default=0, help="their niceness (added to ours)")
    p.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = p.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    lines = []
    for load in args.load:
        got: dict[tuple[int, str], list[float]] = {}
        for repeat in range(args.repeats):
            for niceness in (15, 0):
                for method, steps in measure(args, niceness, load).items():
                    got.setdefault((niceness, method), []).append(steps)
                    lines.append({
                        "bench": "ray_niceness", "env": args.env, "load": load,
                        "load_nice": args.load_nice, "repeat": repeat,
                        "worker_niceness": niceness, "method": method,
                        "workers": args.workers, "n_envs": args.n_envs,
                        "steps_per_s": round(steps),
                    })  # fmt: skip
                    print(json.dumps(lines[-1]), flush=True)
        for method in ("fragments", "vec_env"):
            slow, fast = (statistics.median(got[(n, method)]) for n in (15, 0))
            lines.append({
                "bench": "ray_niceness_summary", "env": args.env, "load": load,
                "load_nice": args.load_nice, "method": method, "workers": args.workers,
                "median_steps_per_s_niceness_15": round(slow),
                "median_steps_per_s_niceness_0": round(fast),
                "speedup": round(fast / slow, 3),
            })  # fmt: skip
            print(json.dumps(lines[-1]), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.writelines(json.dumps(line) + "\n" for line in lines)


if __name__ == "__main__":
    main()
