"""CPU per env step with 1, 4, 16 envs stepped in turn in one process, in CPU time.

Whether many envs in one process (a Ray worker's, an env process's block) cost more per step
than one env alone: each vector env (rlkit's ShallowDummyVecEnv over ``make_env``'s envs,
random actions) steps for ``--seconds`` of wall-clock in turn, ``--repeats`` times, and its
steps per second of this process's CPU time are compared with the one-env vector env's in the
same round. CPU time, not wall-clock, so that the VM's speed drifting between windows and
other processes' load count less. Prints one JSON line.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_envs_per_process.py --env ALE/Pong-v5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from envs.factory import EnvSpec, make_env
from envs.shallow_dummy_vec_env import ShallowDummyVecEnv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="ALE/Pong-v5")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16], help="envs per process")
    p.add_argument("--seconds", type=float, default=2.0, help="one window")
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    spec = EnvSpec(args.env)
    venvs = {}
    for n in args.sizes:
        venv = ShallowDummyVecEnv([make_env(spec, 0, k) for k in range(n)])
        venv.seed(0)
        venv.reset()
        venvs[n] = venv
    rates: dict[int, list[float]] = {n: [] for n in venvs}
    for _ in range(args.repeats):
        for n, venv in venvs.items():
            t0, c0, steps = time.perf_counter(), time.process_time(), 0
            while time.perf_counter() - t0 < args.seconds:
                venv.step(np.array([venv.action_space.sample() for _ in range(n)]))
                steps += n
            rates[n].append(steps / (time.process_time() - c0))
    first = rates[args.sizes[0]]
    print(
        json.dumps(
            {
                "bench": "envs_per_process",
                "env": args.env,
                "repeats": args.repeats,
                "steps_per_cpu_s_median": {
                    n: round(statistics.median(r)) for n, r in rates.items()
                },
                "vs_first_median": {
                    n: round(statistics.median(a / b for a, b in zip(r, first, strict=True)), 3)
                    for n, r in rates.items()
                },
                "date": time.strftime("%Y-%m-%d"),
            }
        )
    )


if __name__ == "__main__":
    main()
