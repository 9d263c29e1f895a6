"""Where the CPU goes while the FragmentSampler runs: steps/s against the limit, and the
cores used by the rollout workers, the driver, Ray's own processes and everything else.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ray_cpu_share.py --seconds 8

For each env and worker count it measures, in one run: one raw env's step rate and its CPU
time per step (this process, no vector env), then the sampler (random actions, prefetch) with
every process's CPU time read from ``/proc`` before and after the timing window, then as many
raw envs as workers, one per process, all at once (what busy cores give plain stepping). A worker
that is never idle uses one core; the gap between the sampler and the limit (workers x the raw
rate) splits into workers' idle time (``worker_busy`` < 1) and their extra CPU per step
(``worker_cpu_per_step / raw_cpu_per_step`` > 1: recording, pickling, Ray's threads).
Prints one JSON line per measurement (Linux only: it reads ``/proc``).

On a shared VM one raw env's rate can move by a third within a minute, so one such run says
little about a fraction of the limit near its target. ``--rounds R`` repeats the three
measurements R times on one sampler, each sampler window between its own two raw ones, and adds
a summary line with the median fraction over the rounds:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ray_cpu_share.py --seconds 10 --rounds 8 --workers 2 --envs ALE/Pong-v5 --n-envs 32 --fragment-length 100
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")

from bench_ray_throughput import parallel_raw, raw_rate_and_cpu, timed_fragments  # noqa: E402

from envs import EnvSpec  # noqa: E402
from rlkit.distributed import FragmentSampler, RandomPolicy, connect  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> dict[int, tuple[float, str, int]]:
    """``pid -> (user + system CPU seconds so far, command line, minor page faults so far)``
    for every process."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(entry.name)] = ((int(fields[11]) + int(fields[12])) / TICKS, cmd, int(fields[7]))
    return out


def group(pid: int, cmd: str) -> str:
    if pid == os.getpid():
        return "driver"
    if cmd.startswith("ray::RolloutWorker"):
        return "workers"
    if "/ray/" in cmd or cmd.startswith("ray::"):
        return "ray_daemons"
    return "other"


def started_sampler(spec: EnvSpec, n_envs: int, workers: int, fragment_length: int):
    """A FragmentSampler (random actions, prefetch) past its first few calls."""
    sampler = FragmentSampler(
        spec, n_envs, workers, seed=0, fragment_length=fragment_length, prefetch=True
    )
    sampler.sample(RandomPolicy(sampler.action_space))
    for _ in range(3):
        sampler.sample()
    return sampler


def measure(sampler: FragmentSampler, steps_per_call: int, seconds: float) -> dict:
    """The FragmentSampler's steps/s over ``seconds``, and the cores each group of processes
    (:func:`group`) used meanwhile. Nothing is left in flight after it."""
    snapshot: list[dict] = []
    steps, wall = timed_fragments(
        sampler, steps_per_call, seconds, lambda: snapshot.append(cpu_seconds())
    )
    before, after = snapshot[0], cpu_seconds()
    workers = sampler.pool.n_workers
    used: dict[str, float] = {"workers": 0.0, "driver": 0.0, "ray_daemons": 0.0, "other": 0.0}
    worker_faults = 0
    for pid, (t, cmd, faults) in after.items():
        if pid in before:
            kind = group(pid, cmd)
            used[kind] += t - before[pid][0]
            if kind == "workers":
                worker_faults += faults - before[pid][2]
    return {
        "steps_per_s": steps / wall,
        "cores_used": {k: round(v / wall, 3) for k, v in used.items()},
        "worker_busy": used["workers"] / wall / workers,
        "worker_cpu_per_step_us": used["workers"] / steps * 1e6,
        "worker_page_faults_per_step": worker_faults / steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="timing window")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--envs", nargs="+", default=["Hopper-v5", "ALE/Pong-v5"])
    parser.add_argument(
        "--fragment-length", type=int, help="env steps per env per call (default 100; Atari 25)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternations of raw env, sampler and raw env again on one sampler; with more "
        "than one, a summary line gives the median fraction of the limit over the rounds",
    )
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    torch.set_num_threads(1)
    connect(None)
    for env_id in args.envs:
        spec = EnvSpec(env_id)
        length = args.fragment_length or (100 if "ALE" not in env_id else 25)
        for workers in args.workers:
            sampler = started_sampler(spec, args.n_envs, workers, length)
            fractions = []
            for r in range(args.rounds):
                record = one_round(spec, sampler, args, workers, length)
                record["round"] = r
                fractions.append(record["fraction_of_limit"])
                emit(record, args.out)
            sampler.close()
            if args.rounds > 1:
                emit(
                    {
                        "bench": "ray_cpu_share_summary",
                        "env": env_id,
                        "workers": workers,
                        "n_envs": args.n_envs,
                        "fragment_length": length,
                        "rounds": args.rounds,
                        "seconds": args.seconds,
                        "fraction_of_limit_median": statistics.median(fractions),
                        "fraction_of_limit_min": min(fractions),
                        "fraction_of_limit_max": max(fractions),
                        "fractions_of_limit": [round(f, 3) for f in fractions],
                        "date": time.strftime("%Y-%m-%d"),
                    },
                    args.out,
                )


def one_round(
    spec: EnvSpec, sampler: FragmentSampler, args: argparse.Namespace, workers: int, length: int
) -> dict:
    """One raw env, the sampler, one raw env again, then as many raw envs as workers at once:
    the sampler's rate against the limit measured on either side of it."""
    raw, raw_cpu = raw_rate_and_cpu(spec, args.seconds / 2)
    row = measure(sampler, args.n_envs * length, args.seconds)
    raw_again, raw_cpu_again = raw_rate_and_cpu(spec, args.seconds / 2)
    raw, raw_cpu = (raw + raw_again) / 2, (raw_cpu + raw_cpu_again) / 2
    together, together_cpu = parallel_raw(spec, workers, args.seconds / 2)
    return {
        "bench": "ray_cpu_share",
        "env": spec.env_id,
        "workers": workers,
        "n_envs": args.n_envs,
        "fragment_length": length,
        "cores": len(os.sched_getaffinity(0)),
        "raw_steps_per_s": raw,
        "raw_cpu_per_step_us": raw_cpu * 1e6,
        **row,
        "fraction_of_limit": row["steps_per_s"] / (workers * raw),
        "worker_cpu_vs_raw": row["worker_cpu_per_step_us"] / (raw_cpu * 1e6),
        "raw_processes_steps_per_s": together,
        "raw_processes_cpu_per_step_us": together_cpu * 1e6,
        "fraction_of_raw_processes": row["steps_per_s"] / together,
        "worker_cpu_vs_raw_processes": row["worker_cpu_per_step_us"] / (together_cpu * 1e6),
        "load_avg_1m": os.getloadavg()[0],
    }


def emit(record: dict, out: Path | None) -> None:
    """Print ``record`` as a JSON line, and append it to ``out``."""
    print(json.dumps(record), flush=True)
    if out:
        with out.open("a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
