"""Clip render + encode time per clip (MuJoCo and Atari), and time from query creation to clip ready.

For each env, ``--clips`` segments of a random policy are recorded with their render
state (MuJoCo qpos/qvel; Atari frames at half resolution) exactly as the preference loop
stores them, then rendered and encoded to H.264 MP4 with the default clip options
(360x360 MuJoCo, Atari x4, <= 30 fps, 0.5 s freeze). One JSON line per env: seconds per
clip (wall and CPU, the renderer's first-use setup excluded) and the real-time factor
(clip duration / wall time; > 1 is faster than real time).

Then the server's render-ahead worker runs on a run directory while queries are added one
at a time (as the trainer does): one JSON line with the time from a query's creation to
both of its clips being ready (includes the worker's 0.5 s polling).

    nice -n 10 .venv/bin/python benchmarks/bench_ui_render.py --clips 5
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import numpy as np

from envs import EnvSpec, env_dt
from envs.factory import make_env
from envs.render_state import RENDER_STATE_KEY
from feedback_ui.clips import ATARI_AGENT_FPS, ClipOptions, ClipRenderer
from feedback_ui.queue import open_queries
from feedback_ui.render_worker import RenderWorker
from rlkit.core.rundir import save_config
from rlkit.core.types import Segment
from rlkit.loops.preference_config import PrefsConfig
from rlkit.store import Store


def record_segments(env_id: str, n: int, length: int, seed: int = 0) -> list[Segment]:
    """``n`` segments through rlkit's own env factory with render state on (as the loop does)."""
    env = make_env(EnvSpec(env_id, render_state=True, terminate_when_unhealthy=False), seed)()
    env.action_space.seed(seed)
    _, info = env.reset(seed=seed)
    segs = []
    for i in range(n):
        obs, acts, rews, states = [], [], [], []
        for _ in range(length):
            states.append(info[RENDER_STATE_KEY])
            a = env.action_space.sample()
            o, r, term, trunc, info = env.step(a)
            obs.append(o)
            acts.append(a)
            rews.append(r)
            if term or trunc:
                _, info = env.reset()
        segs.append(Segment(obs=np.asarray(obs), acts=np.asarray(acts), true_rews=np.asarray(rews),
                            render_state=np.asarray(states), id=i, env_id=env_id))  # fmt: skip
    env.close()
    return segs


def bench_env(env_id: str, clips: int, tmp: Path) -> dict:
    atari = env_id.startswith("ALE/")
    fps = ATARI_AGENT_FPS if atari else 1.0 / env_dt(env_id)
    length = 25 if atari else int(round(1.5 * fps))  # the loop's default segment lengths
    segs = record_segments(env_id, clips + 1, length)
    renderer = ClipRenderer(ClipOptions())
    renderer.render(segs[0], tmp / "warmup.mp4")  # builds the rendering env and GL context
    wall, cpu = [], []
    for seg in segs[1:]:
        t0, c0 = time.perf_counter(), time.process_time()
        renderer.render(seg, tmp / f"{seg.id}.mp4")
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)  # this process only: ffmpeg's CPU is not in it
    renderer.close()
    duration = length / fps
    return {"bench": "ui_render", "env": env_id, "steps": length,
            "clip_seconds": round(duration, 3), "clips": clips,
            "render_encode_wall_s_median": round(float(np.median(wall)), 3),
            "render_encode_wall_s_max": round(float(np.max(wall)), 3),
            "render_cpu_s_median": round(float(np.median(cpu)), 3),
            "realtime_factor": round(duration / float(np.median(wall)), 2),
            "clip_kb": round((tmp / f"{segs[1].id}.mp4").stat().st_size / 1024, 1)}  # fmt: skip


def bench_ready(clips: int, tmp: Path) -> dict:
    run = tmp / "run"
    run.mkdir()
    save_config(run, PrefsConfig(env="HalfCheetah-v5"))
    store = Store(run)
    segs = record_segments("HalfCheetah-v5", 2 * clips, 30, seed=1)
    for seg in segs:
        store.add_segment(seg)
    worker = RenderWorker(run, ClipOptions(), lambda s, n: [
        x for _, a, b in open_queries(s, 1, n) for x in (a, b)], ahead=8).start()  # fmt: skip
    worker.clip(segs[0].id)  # warm up the renderer (first use builds the GL context)
    waits = []
    try:
        for i in range(1, clips):
            a, b = segs[2 * i].id, segs[2 * i + 1].id
            t0 = time.perf_counter()
            store.add_queries([(a, b, 1.0)])
            while not (worker.ready(a) and worker.ready(b)):
                time.sleep(0.01)
            waits.append(time.perf_counter() - t0)
    finally:
        worker.stop()
    return {"bench": "ui_query_to_clip_ready", "env": "HalfCheetah-v5", "queries": len(waits),
            "seconds_median": round(float(np.median(waits)), 3),
            "seconds_max": round(float(np.max(waits)), 3), "poll_seconds": worker.poll_seconds}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=5)
    ap.add_argument("--envs", nargs="+", default=["HalfCheetah-v5", "Hopper-v5", "ALE/Pong-v5"])
    args = ap.parse_args()
    import envs  # noqa: F401  (registers ALE)

    gym.logger.min_level = 40
    with tempfile.TemporaryDirectory() as tmp:
        for env_id in args.envs:
            print(json.dumps(bench_env(env_id, args.clips, Path(tmp))), flush=True)
        print(json.dumps(bench_ready(args.clips, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
