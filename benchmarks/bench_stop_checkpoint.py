"""What a stop's checkpoint (Ctrl-C, SIGTERM) adds to a regular one: the segment pool and the
envs mid-episode, packed (pickled and compressed, ``rlkit.loops.preference.pack``).

Fills a pool of the preference run's default size (MuJoCo 1000 segments of 1.5 s, Atari 300 of
25 steps) from a random policy on the run's default number of envs, recording segments as the
run does, then times, median of repeats: packing the pool, taking and packing the envs' state,
unpacking both, and ``torch.save`` of the packed bytes to a file (with fsync). Prints one JSON
line per env: seconds and megabytes, raw and packed. With ``--ray-workers N`` the envs run on N
workers of a local Ray instance, and taking their state is a call to each
(``RayVecEnv.get_env_state``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_stop_checkpoint.py [--envs Hopper-v5 ALE/Pong-v5] [--ray-workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import statistics
import tempfile
import time
from datetime import date

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from envs import env_kind, make_vec_env  # noqa: E402
from envs.env_state import vec_env_state  # noqa: E402
from rlkit.core.buffers import SegmentPool  # noqa: E402
from rlkit.core.checkpoint import (  # noqa: E402
    pack,
    save_checkpoint,  # noqa: E402
    unpack,
)
from rlkit.loops.preference import random_actions, segment_length  # noqa: E402
from rlkit.loops.preference_config import PrefsConfig  # noqa: E402
from rlkit.loops.segment_recorder import SegmentRecorder  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def measure(env_id: str, repeats: int, ray_workers: int = 0) -> dict:
    cfg = PrefsConfig(env=env_id)
    kind = env_kind(env_id)
    pool = SegmentPool(300 if kind == "atari" else 1000)
    spec, n_envs = cfg.env_spec(render_state=True), cfg.vec_envs(kind)
    if ray_workers:
        from rlkit.distributed import make_ray_vec_env

        envs = make_ray_vec_env(spec, n_envs, ray_workers, 0)
    else:
        envs = make_vec_env(spec, n_envs, 0)
    venv = SegmentRecorder(envs, segment_length(cfg, kind), pool.add, env_id=env_id)
    venv.reset()
    rng = np.random.default_rng(0)
    while len(pool) < pool.capacity:
        venv.step(random_actions(venv.action_space, venv.num_envs, rng))
    for _ in range(segment_length(cfg, kind) // 2):  # part-cut segments in the recorder
        venv.step(random_actions(venv.action_space, venv.num_envs, rng))
    state = pool.state_dict()
    raw = len(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
    pack_s, packed = timed(lambda: pack(state), repeats)
    envs_s, envs = timed(lambda: pack(vec_env_state(venv)), repeats)
    unpack_s, _ = timed(lambda: (unpack(packed), unpack(envs)), repeats)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "state.pt")
        save_s, _ = timed(lambda: save_checkpoint(path, {"pool": packed, "envs": envs}), repeats)
    venv.close()
    return {
        "benchmark": "stop_checkpoint", "env": env_id, "n_envs": n_envs,
        "ray_workers": ray_workers,
        "pool_segments": len(state["segments"]), "segment_steps": segment_length(cfg, kind),
        "pool_raw_mb": raw / 1e6, "pool_packed_mb": len(packed) / 1e6,
        "envs_packed_mb": len(envs) / 1e6, "pack_pool_s": pack_s, "pack_envs_s": envs_s,
        "unpack_s": unpack_s, "save_s": save_s,
        "total_s": pack_s + envs_s + save_s, "repeats": repeats,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs", "date": date.today().isoformat(),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["Hopper-v5", "ALE/Pong-v5"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ray-workers", type=int, default=0, help="0: envs in this process")
    args = parser.parse_args()
    for env_id in args.envs:
        print(json.dumps(measure(env_id, args.repeats, args.ray_workers)), flush=True)


if __name__ == "__main__":
    main()
