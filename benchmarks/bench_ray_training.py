"""Training throughput on Ray workers: the presets' TRPO (Hopper) and A2C (Pong) learning with
their envs in-process, on Ray workers stepped from the driver (one round trip per env step,
the policy on the driver), and on Ray workers that take each rollout themselves
(:mod:`agents.worker_rollouts`: one call per worker per rollout).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ray_training.py [--envs Hopper-v5 ALE/Pong-v5]

``--env-processes P`` adds one worker taking the rollouts with its envs in P env processes
(against ``--workers`` workers, one process each).

The three run side by side in one process (each ``learn`` call timed in turn, ``--repeats``
times, after a warm-up one), so that the machine's load affects them alike. Prints one JSON
line per env with the median env steps per second of each and their ratios, both for whole
``learn`` calls (policy updates, on the driver, included) and for the collection alone
(``collect_rollouts``); ``--out`` also appends it to a file.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

from agents.presets import PolicyConfig, make_agent  # noqa: E402
from envs import EnvSpec, env_kind, make_vec_env  # noqa: E402
from envs.factory import ATARI_FRAME_STACK  # noqa: E402
from envs.frame_stack import AtariFrameStack  # noqa: E402
from rlkit.distributed import RayVecEnv, connect, shutdown  # noqa: E402


def ray_vec_env(
    spec: EnvSpec,
    n_envs: int,
    workers: int,
    worker_rollouts: bool,
    env_processes: int = 1,
    num_cpus: float = 0.5,
):
    """``make_ray_vec_env``, with workers that reserve a part of a CPU (half by default): the
    Ray variants' workers all exist at once (each set idle while another is timed)."""
    venv = RayVecEnv(
        spec, n_envs, workers, 0, num_cpus=num_cpus, worker_rollouts=worker_rollouts,
        env_processes=env_processes,
    )  # fmt: skip
    return AtariFrameStack(venv, ATARI_FRAME_STACK) if env_kind(spec.env_id) == "atari" else venv


def time_collection(agent) -> list[float]:
    """Wrap ``agent.collect_rollouts`` to add each call's seconds to the returned cell."""
    spent = [0.0]
    collect = agent.collect_rollouts

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return collect(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    agent.collect_rollouts = timed
    return spent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--envs", nargs="+", default=["Hopper-v5", "ALE/Pong-v5"])
    p.add_argument("--n-envs", type=int, help="default: 4 (MuJoCo), 8 (Atari), as prefs train")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--steps", type=int, help="env steps per timed learn (default 16384; Atari 4000)"
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--env-processes",
        type=int,
        default=0,
        help="also time one worker taking the rollouts with its envs in this many env processes",
    )
    p.add_argument("--out", type=Path, help="append the JSON lines to this file")
    args = p.parse_args()
    torch.set_num_threads(1)
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    connect(None)
    # Every Ray variant's workers fit at once (the default, 2 x 2 workers, half a CPU each).
    actors = 2 * args.workers + (1 if args.env_processes else 0)
    share = min(0.5, len(os.sched_getaffinity(0)) / actors)
    try:
        for env_id in args.envs:
            kind = env_kind(env_id)
            n_envs = args.n_envs or (8 if kind == "atari" else 4)
            steps = args.steps or (4000 if kind == "atari" else 16384)
            spec = EnvSpec(env_id)
            venvs = {
                "in_process": make_vec_env(spec, n_envs, 0),
                "ray_steps": ray_vec_env(spec, n_envs, args.workers, False, num_cpus=share),
                "ray_rollouts": ray_vec_env(spec, n_envs, args.workers, True, num_cpus=share),
            }
            one_worker = f"ray_rollouts_1w_{args.env_processes}p"
            if args.env_processes:
                venvs[one_worker] = ray_vec_env(
                    spec, n_envs, 1, True, args.env_processes, num_cpus=share
                )
            agents = {name: make_agent(PolicyConfig(), v, kind, 0) for name, v in venvs.items()}
            for agent in agents.values():
                agent.learn(steps // 4)  # warm-up: first resets, workers' policy copies
            rates: dict[str, list[float]] = {name: [] for name in agents}
            collect_rates: dict[str, list[float]] = {name: [] for name in agents}
            spent = {name: time_collection(agent) for name, agent in agents.items()}
            for _ in range(args.repeats):
                for name, agent in agents.items():
                    start, collecting = time.perf_counter(), spent[name][0]
                    agent.learn(steps, reset_num_timesteps=False)
                    rates[name].append(steps / (time.perf_counter() - start))
                    collect_rates[name].append(steps / (spent[name][0] - collecting))
            for v in venvs.values():
                v.close()
            median = {name: statistics.median(r) for name, r in rates.items()}
            collect = {name: statistics.median(r) for name, r in collect_rates.items()}
            record = {
                "bench": "ray_training", "env": env_id, "algo": type(agents["in_process"]).__name__,
                "n_envs": n_envs, "workers": args.workers, "steps_per_learn": steps,
                "repeats": args.repeats, "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M"),
                "cpus": os.cpu_count(), "load_average": round(os.getloadavg()[0], 2),
                "steps_per_s": {k: round(v, 1) for k, v in median.items()},
                "all_steps_per_s": {k: [round(x, 1) for x in v] for k, v in rates.items()},
                "rollouts_vs_steps": round(median["ray_rollouts"] / median["ray_steps"], 3),
                "rollouts_vs_in_process": round(median["ray_rollouts"] / median["in_process"], 3),
                "collect_steps_per_s": {k: round(v, 1) for k, v in collect.items()},
                "collect_rollouts_vs_steps": round(collect["ray_rollouts"] / collect["ray_steps"], 3),
                "collect_rollouts_vs_in_process": round(
                    collect["ray_rollouts"] / collect["in_process"], 3
                ),
            }  # fmt: skip
            if args.env_processes:
                record["one_worker_env_processes_vs_rollouts"] = round(
                    median[one_worker] / median["ray_rollouts"], 3
                )
            line = json.dumps(record)
            print(line, flush=True)
            if args.out is not None:
                with args.out.open("a") as f:
                    f.write(line + "\n")
    finally:
        shutdown()


if __name__ == "__main__":
    main()
