"""Env steps per second of rlkit.distributed against SB3's SubprocVecEnv, Gymnasium's
AsyncVectorEnv and the limit (cores x one env's raw single-process step rate), plus the
measured cost of one actor call and the throughput it predicts for bigger clusters.

    nice -n 10 .venv/bin/python benchmarks/bench_ray_throughput.py

One worker whose envs step in one helper process per core (``--env-processes-rounds``):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ray_throughput.py --envs ALE/Pong-v5 --n-envs 32 --fragment-length 100 --seconds 8 --env-processes-rounds 4 --out benchmarks/results/ray_env_processes_pong.jsonl

Prints one JSON line per measurement and a final summary line; also writes them to
benchmarks/results/ray_throughput_{N}envs.jsonl. All runs use random actions (drawn up front, so
the policy costs nothing) and a local Ray instance started by rlkit.distributed.connect.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import ray  # noqa: E402

from envs import EnvSpec, make_env, make_vec_env  # noqa: E402
from rlkit.distributed import FragmentSampler, RandomPolicy, connect, make_ray_vec_env  # noqa: E402

RESULTS_DIR = ROOT / "benchmarks" / "results"


def emit(record: dict, sink: list[dict]) -> None:
    sink.append(record)
    print(json.dumps(record), flush=True)


def timed(step: Callable[[], int], seconds: float, warmup: int = 3) -> float:
    """Steps per second of ``step`` (which returns how many env steps it did) over ``seconds``."""
    for _ in range(warmup):
        step()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += step()
    return n / (time.perf_counter() - start)


def raw_rate_and_cpu(spec: EnvSpec, seconds: float) -> tuple[float, float]:
    """One env, stepped in this process with no vector env around it: ``(steps per second,
    CPU seconds per step)``."""
    env = make_env(spec, seed=0)()
    acts = [env.action_space.sample() for _ in range(1000)]
    i = 0

    def step() -> int:
        nonlocal i
        _, _, term, trunc, _ = env.step(acts[i % 1000])
        i += 1
        if term or trunc:
            env.reset()
        return 1

    cpu_start = time.process_time()
    rate = timed(step, seconds)
    cpu_per_step = (time.process_time() - cpu_start) / i
    env.close()
    return rate, cpu_per_step


def _raw_child(env_id: str, seconds: float, barrier, results) -> None:
    torch.set_num_threads(1)
    spec = EnvSpec(env_id)
    barrier.wait()
    results.put(raw_rate_and_cpu(spec, seconds))


def parallel_raw(spec: EnvSpec, processes: int, seconds: float) -> tuple[float, float]:
    """``processes`` independent processes each stepping one raw env at the same time:
    ``(total steps per second, mean CPU seconds per step)``, what this machine's cores deliver
    right now, other users' load included."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(target=_raw_child, args=(spec.env_id, seconds, barrier, results))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    rates = [results.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(r for r, _ in rates), sum(c for _, c in rates) / processes


def vec_stepper(venv, n_envs: int, gym_api: bool = False) -> Callable[[], int]:
    """Resets ``venv``; returns one batched step with pre-drawn actions (counted as ``n_envs``)."""
    acts = np.stack([[venv.action_space.sample() for _ in range(n_envs)] for _ in range(64)])
    if gym_api:  # a Gymnasium vector env samples batches itself
        acts = np.stack([venv.action_space.sample() for _ in range(64)])
    venv.reset()
    i = 0

    def step() -> int:
        nonlocal i
        venv.step(acts[i % 64])
        i += 1
        return n_envs

    return step


def vec_rate(venv, n_envs: int, seconds: float, gym_api: bool = False) -> float:
    """A vector env stepped with pre-drawn batched actions; closes it."""
    rate = timed(vec_stepper(venv, n_envs, gym_api), seconds)
    venv.close()
    return rate


def timed_fragments(
    sampler: FragmentSampler,
    steps_per_call: int,
    seconds: float,
    at_start: Callable[[], object] = lambda: None,
) -> tuple[int, float]:
    """``(env steps, wall seconds)`` of :meth:`FragmentSampler.sample` calls over about
    ``seconds``. The window starts with no fragment in flight and ends when the last one is
    back: with ``prefetch`` a fragment in flight at the start would have been partly stepped
    before it (a fragment of 16 envs x 400 Hopper steps takes about a second). ``at_start``
    runs just before the clock starts (a CPU-time snapshot)."""
    prefetch = sampler.prefetch

    def drain() -> None:  # the fragment in flight comes back; nothing new is sent
        sampler.prefetch = False
        sampler.sample()
        sampler.prefetch = prefetch

    drain()
    at_start()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sampler.sample()
        steps += steps_per_call
    if prefetch:
        drain()
        steps += steps_per_call
    return steps, time.perf_counter() - start


def call_overhead(n_calls: int = 300) -> dict[str, float]:
    """Round trip of a no-op actor method (latency), and the driver's cost per call when
    many are in flight at once (pipelined), in microseconds."""
    from rlkit.distributed.worker import RolloutWorker

    actor = ray.remote(RolloutWorker).options(num_cpus=1).remote(EnvSpec("Hopper-v5"), 0, 0, 1)
    ray.get(actor.ready.remote())
    for _ in range(20):
        ray.get(actor.ready.remote())
    lat = []
    for _ in range(n_calls):
        t = time.perf_counter()
        ray.get(actor.ready.remote())
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    ray.get([actor.ready.remote() for _ in range(n_calls)])
    pipelined = (time.perf_counter() - t) / n_calls
    # The same small method (an attribute of one env) as an actor call and through a
    # compiled graph (what RayVecEnv steps through), side by side.
    from ray.dag import InputNode

    with InputNode() as inp:
        graph = actor.get_attr.bind(inp[0], inp[1]).experimental_compile()
    calls = {
        "attr_call_latency_us": lambda: ray.get(actor.get_attr.remote("render_mode", [0])),
        "attr_graph_latency_us": lambda: ray.get(graph.execute("render_mode", [0])),
    }
    medians = {}
    for name, call in calls.items():
        for _ in range(20):
            call()
        times = []
        for _ in range(n_calls):
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
        medians[name] = 1e6 * statistics.median(times)
    graph.teardown()
    ray.kill(actor)
    return {
        "latency_us": 1e6 * statistics.median(lat),
        "pipelined_us": 1e6 * pipelined,
        **medians,
    }


def predict(raw: float, overhead: dict[str, float], workers: int) -> dict[str, float]:
    """Steps/s of ``workers`` actors whose calls each carry F env steps, with F the smallest
    that keeps the overhead under 5%: the call's latency under 5% of its stepping time, and
    the driver's time for one round of calls under 5% of it too."""
    t_step = 1.0 / raw
    latency = overhead["latency_us"] * 1e-6
    driver = overhead["pipelined_us"] * 1e-6
    steps = math.ceil(max(latency, workers * driver) / (0.05 * t_step))
    efficiency = steps * t_step / (steps * t_step + latency)
    return {"workers": workers, "fragment_steps": steps, "steps_per_s": workers * raw * efficiency}


def run(env_id: str, n_envs: int, fragment_length: int, seconds: float, out: list[dict]) -> None:
    spec = EnvSpec(env_id)
    cores = len(os.sched_getaffinity(0))
    raw_before = raw_rate_and_cpu(spec, seconds)[0]
    emit({"env": env_id, "method": "raw_single_env", "steps_per_s": raw_before}, out)
    rows = {}
    for workers in (1, 2):
        for compiled in (True, False):
            venv = make_ray_vec_env(spec, n_envs, workers, seed=0, compiled=compiled)
            name = f"ray_vec_env{'' if compiled else '_actor_calls'}_{workers}w"
            rows[name] = vec_rate(venv, n_envs, seconds)
        for prefetch in (False, True):
            sampler = FragmentSampler(
                spec, n_envs, workers, seed=0, fragment_length=fragment_length, prefetch=prefetch
            )
            sampler.sample(RandomPolicy(sampler.action_space))
            name = f"ray_fragments{'_prefetch' if prefetch else ''}_{workers}w"
            steps, wall = timed_fragments(sampler, n_envs * fragment_length, seconds)
            rows[name] = steps / wall
            sampler.close()
    rows["sb3_subproc_vec_env"] = vec_rate(
        make_vec_env(spec, n_envs, 0, subprocess=True), n_envs, seconds
    )
    # The same, its env processes held to one core (the driver free to use the other), as one
    # Ray worker's envs are: the one-worker rows' comparison at equal cores.
    one_core = make_vec_env(spec, n_envs, 0, subprocess=True)
    core = {min(os.sched_getaffinity(0))}
    for proc in one_core.processes:
        os.sched_setaffinity(proc.pid, core)
    rows["sb3_subproc_vec_env_1core"] = vec_rate(one_core, n_envs, seconds)
    thunks = [make_env(spec, 0, rank) for rank in range(n_envs)]
    rows["gym_async_vector_env"] = vec_rate(
        gym.vector.AsyncVectorEnv(thunks), n_envs, seconds, True
    )
    raw_after = raw_rate_and_cpu(spec, seconds)[0]
    emit({"env": env_id, "method": "raw_single_env_again", "steps_per_s": raw_after}, out)
    raw = (raw_before + raw_after) / 2
    parallel = parallel_raw(spec, cores, seconds)[0]
    emit({"env": env_id, "method": f"raw_{cores}_processes", "steps_per_s": parallel}, out)
    for method, rate in rows.items():
        ray_1w = method.startswith("ray") and method.endswith("1w")
        workers = 1 if ray_1w or method.endswith("1core") else 2
        limit = min(workers, cores) * raw
        emit(
            {
                "env": env_id,
                "method": method,
                "n_envs": n_envs,
                "workers": workers,
                "steps_per_s": rate,
                "limit_steps_per_s": limit,
                "fraction_of_limit": rate / limit,
                "fraction_of_parallel_raw": rate / (parallel * min(workers, cores) / cores),
                "vs_subproc": rate / rows["sb3_subproc_vec_env"],
                "vs_subproc_1core": rate / rows["sb3_subproc_vec_env_1core"],
            },
            out,
        )
    overhead = call_overhead()
    emit({"env": env_id, "method": "actor_call_overhead", **overhead}, out)
    for workers in (8, 32, 128):
        emit({"env": env_id, "method": "predicted", **predict(raw, overhead, workers)}, out)


def compiled_ab(env_id: str, n_envs: int, seconds: float, repeats: int, out: list[dict]) -> None:
    """RayVecEnv through the compiled graph and through actor calls, alternating, ``repeats``
    times for 1 and 2 workers: on a noisy machine, the pairs are what to compare."""
    spec = EnvSpec(env_id)
    for rep in range(repeats):
        for compiled in (True, False):
            for workers in (1, 2):
                venv = make_ray_vec_env(spec, n_envs, workers, seed=0, compiled=compiled)
                rate = vec_rate(venv, n_envs, seconds)
                row = {"env": env_id, "method": "ray_vec_env_ab", "repeat": rep}
                emit({**row, "workers": workers, "compiled": compiled, "steps_per_s": rate}, out)


def env_processes_rounds(
    env_id: str, n_envs: int, fragment_length: int, seconds: float, rounds: int, out: list[dict]
) -> None:
    """One Ray worker stepping its envs itself, and in one env process per core
    (``env_processes``), beside SB3's SubprocVecEnv with the same envs, in ``rounds``
    interleaved rounds, each between two raw single-env rates (the limit: cores x their mean).
    Ends with a summary line of the medians over the rounds."""
    spec = EnvSpec(env_id)
    cores = len(os.sched_getaffinity(0))
    fractions: dict[str, list[float]] = {}
    vs_subproc: dict[str, list[float]] = {}
    for rnd in range(rounds):
        raw_before = raw_rate_and_cpu(spec, seconds)[0]
        rows = {}
        for processes in (1, cores):
            sampler = FragmentSampler(
                spec, n_envs, 1, seed=0, fragment_length=fragment_length, prefetch=True,
                env_processes=processes,
            )  # fmt: skip
            sampler.sample(RandomPolicy(sampler.action_space))
            steps, wall = timed_fragments(sampler, n_envs * fragment_length, seconds)
            rows[f"ray_fragments_prefetch_1w_{processes}p"] = steps / wall
            sampler.close()
        venv = make_ray_vec_env(spec, n_envs, 1, seed=0, env_processes=cores)
        rows[f"ray_vec_env_actor_calls_1w_{cores}p"] = vec_rate(venv, n_envs, seconds)
        rows["sb3_subproc_vec_env"] = vec_rate(
            make_vec_env(spec, n_envs, 0, subprocess=True), n_envs, seconds
        )
        # What busy cores give plain stepping: a raw env in each of ``cores`` processes.
        rows[f"raw_{cores}_processes"] = parallel_raw(spec, cores, seconds)[0]
        raw = (raw_before + raw_rate_and_cpu(spec, seconds)[0]) / 2
        for method, rate in rows.items():
            limit = cores * raw
            ratio = rate / rows["sb3_subproc_vec_env"]
            fractions.setdefault(method, []).append(rate / limit)
            vs_subproc.setdefault(method, []).append(ratio)
            row = {"env": env_id, "method": method, "round": rnd, "n_envs": n_envs}
            emit({**row, "steps_per_s": rate, "raw_steps_per_s": raw, "cores": cores,
                  "fraction_of_limit": rate / limit, "vs_subproc": ratio}, out)  # fmt: skip
    emit(
        {
            "env": env_id,
            "method": "env_processes_summary",
            "rounds": rounds,
            "n_envs": n_envs,
            "fragment_length": fragment_length,
            "fraction_of_limit_median": {m: statistics.median(v) for m, v in fractions.items()},
            "vs_subproc_median": {m: statistics.median(v) for m, v in vs_subproc.items()},
            "fractions_of_limit": {m: [round(x, 3) for x in v] for m, v in fractions.items()},
            "vs_subproc": {m: [round(x, 3) for x in v] for m, v in vs_subproc.items()},
        },
        out,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="timing window per measurement")
    parser.add_argument("--n-envs", type=int, default=8, help="envs per vector env")
    parser.add_argument("--envs", nargs="+", default=["Hopper-v5", "ALE/Pong-v5"])
    parser.add_argument(
        "--fragment-length",
        type=int,
        help="FragmentSampler steps per env per call (default 100 MuJoCo, 25 Atari)",
    )
    parser.add_argument("--out", type=Path, help="results file (default: see above)")
    parser.add_argument(
        "--ab-repeats",
        type=int,
        default=0,
        help="instead: only RayVecEnv, compiled graph vs actor calls, alternating N times",
    )
    parser.add_argument(
        "--env-processes-rounds",
        type=int,
        default=0,
        help="instead: one worker stepping its envs itself vs in one env process per core, "
        "beside SubprocVecEnv, in N interleaved rounds",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    connect(None)
    out: list[dict] = []
    for env_id in args.envs:
        length = args.fragment_length or (100 if "ALE" not in env_id else 25)
        if args.ab_repeats:
            compiled_ab(env_id, args.n_envs, args.seconds, args.ab_repeats, out)
        elif args.env_processes_rounds:
            rounds = args.env_processes_rounds
            env_processes_rounds(env_id, args.n_envs, length, args.seconds, rounds, out)
        else:
            run(env_id, args.n_envs, length, args.seconds, out)
    results = args.out or RESULTS_DIR / f"ray_throughput_{args.n_envs}envs.jsonl"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text("".join(json.dumps(r) + "\n" for r in out))
    print(
        json.dumps(
            {"bench": "ray_throughput", "cores": len(os.sched_getaffinity(0)), "rows": len(out)}
        )
    )


if __name__ == "__main__":
    main()
