"""A rollout worker's CPU per env step against the same envs stepped bare, in one process.

The Ray throughput target compares the sampler with "cores x one env's raw step rate", so every
microsecond a worker spends around ``env.step`` (the vector env, the policy call, cutting
fragments, pickling them for the object store) comes off that ratio. This times, interleaved
in one process, CPU time (``time.process_time``, so other load on the machine matters less):

- ``raw``: ``n_envs`` envs from ``envs.make_env``, stepped one after another with actions
  drawn beforehand, reset at episode ends; no vector env.
- ``vec_env``: the worker's vector env stepped with the worker's random policy (no recording).
- ``sample``: ``RolloutWorker.sample(fragment)``, as a FragmentSampler's worker runs it
  (Atari frames stacked in the worker).
- ``sample_pickled``: the same, plus pickling its fragments (protocol 5, as Ray does).
- ``sample_packed_pickled`` (Atari): the same with the frames sent instead of their stacks
  (``pack_frames``, what the FragmentSampler asks for).

Prints one JSON line per env: median microseconds per env step and each against ``raw``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_worker_overhead.py [--envs Hopper-v5 ALE/Pong-v5] [--render-state]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("MUJOCO_GL", "egl")

import rlkit  # noqa: E402
from envs.factory import EnvSpec, env_kind, make_env  # noqa: E402
from rlkit.distributed.policies import RandomPolicy  # noqa: E402
from rlkit.distributed.worker import RolloutWorker  # noqa: E402

#: The checkout whose rlkit is imported (a worktree of another commit runs it with PYTHONPATH).
ROOT = Path(rlkit.__file__).resolve().parents[1]


def steppers(spec: EnvSpec, n_envs: int, fragment: int) -> dict[str, Callable[[], None]]:
    """One call of each measure: ``fragment`` steps of all ``n_envs`` envs."""
    envs = [make_env(spec, 0, k)() for k in range(n_envs)]
    rng = np.random.default_rng(0)
    actions = [[env.action_space.sample() for env in envs] for _ in range(fragment)]

    def raw() -> None:
        for step_actions in actions:
            for env, action in zip(envs, step_actions, strict=True):
                _, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    env.reset()

    worker = RolloutWorker(spec, 0, 0, n_envs, frame_stack=True)
    policy = RandomPolicy(worker.spaces()[1])
    worker.set_policy(policy)
    worker.sample(fragment)  # first resets and allocations
    # The vector env alone: a second worker's, so that the first one's fragments stay whole.
    venv = RolloutWorker(spec, 0, 0, n_envs, frame_stack=True).venv
    obs = venv.reset()

    def vec_env() -> None:
        nonlocal obs
        for _ in range(fragment):
            obs = venv.step(policy(obs, rng))[0]

    def sample() -> None:
        worker.sample(fragment)

    def sample_pickled() -> None:
        pickle.dumps(worker.sample(fragment), protocol=5)

    def sample_packed_pickled() -> None:
        pickle.dumps(worker.sample(fragment, None, True), protocol=5)

    fns = {"raw": raw, "vec_env": vec_env, "sample": sample, "sample_pickled": sample_pickled}
    if worker.stacks_frames:
        fns["sample_packed_pickled"] = sample_packed_pickled
    return fns


def cpu_us_per_step(fn: Callable[[], None], steps: int, seconds: float) -> float:
    """Median over calls within ``seconds`` of CPU time per env step, in microseconds."""
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        start = time.process_time()
        fn()
        times.append((time.process_time() - start) / steps * 1e6)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--envs", nargs="+", default=["Hopper-v5", "ALE/Pong-v5"])
    p.add_argument("--n-envs", type=int, default=8)
    p.add_argument("--fragment", type=int, help="steps per call (default 100; Atari 25)")
    p.add_argument("--seconds", type=float, default=1.0, help="per measure and repeat")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument(
        "--render-state", action="store_true", help="keep render states, as prefs train does"
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    for env_id in args.envs:
        spec = EnvSpec(env_id, render_state=args.render_state)
        fragment = args.fragment or (25 if env_kind(env_id) == "atari" else 100)
        fns = steppers(spec, args.n_envs, fragment)
        runs: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(args.repeats):
            for name, fn in fns.items():
                runs[name].append(cpu_us_per_step(fn, args.n_envs * fragment, args.seconds))
        median = {name: statistics.median(v) for name, v in runs.items()}
        print(json.dumps({
            "bench": "worker_overhead", "env": env_id, "n_envs": args.n_envs,
            "fragment": fragment, "render_state": args.render_state, "repeats": args.repeats,
            "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M"),
            "load_average": round(os.getloadavg()[0], 2),
            "cpu_us_per_step": {k: round(v, 2) for k, v in median.items()},
            "vs_raw": {k: round(v / median["raw"], 3) for k, v in median.items()},
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
