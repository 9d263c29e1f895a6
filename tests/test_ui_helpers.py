"""Shared helpers for the labeling-UI tests: runs with stored segments, a real server process.

No tests here; the other ``test_ui_*`` modules import these.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from rlkit.core.rundir import save_config
from rlkit.core.types import Segment
from rlkit.loops.preference_config import PrefsConfig
from rlkit.store import Store


def mujoco_segments(env_id: str, n: int, length: int, seed: int = 0) -> list[Segment]:
    """``n`` consecutive segments of a random policy in a real MuJoCo env, with qpos/qvel."""
    import gymnasium as gym

    from envs.render_state import mujoco_state

    env = gym.make(env_id)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    segs = []
    for i in range(n):
        obs, acts, rews, states = [], [], [], []
        for _ in range(length):
            states.append(mujoco_state(env))
            a = env.action_space.sample()
            o, r, term, trunc, _ = env.step(a)
            obs.append(o)
            acts.append(a)
            rews.append(r)
            if term or trunc:
                env.reset()
        segs.append(Segment(
            obs=np.array(obs, np.float32), acts=np.array(acts, np.float32),
            true_rews=np.array(rews), render_state=np.array(states), id=i, env_id=env_id,
            step=(i + 1) * length, episode_start=i * length,
        ))  # fmt: skip
    env.close()
    return segs


def fake_segments(n: int, env_id: str = "HalfCheetah-v5", seed: int = 0) -> list[Segment]:
    """Cheap segments with random true returns (no render state worth showing)."""
    rng = np.random.default_rng(seed)
    return [
        Segment(obs=np.zeros((4, 17), np.float32), acts=np.zeros((4, 6), np.float32),
                true_rews=rng.normal(size=4), id=i, env_id=env_id, step=4 * (i + 1))
        for i in range(n)
    ]  # fmt: skip


def make_run(
    run_dir: Path, segments: list[Segment], n_queries: int, seed: int = 0, env_id: str | None = None
) -> list[int]:
    """A run directory with ``config.json``, the segments and random queries; their ids,
    best score first."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(run_dir, PrefsConfig(env=env_id or segments[0].env_id, seed=seed))
    store = Store(run_dir)
    for seg in segments:
        store.add_segment(seg)
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n_queries):
        a, b = rng.choice(len(segments), 2, replace=False)
        pairs.append((segments[a].id, segments[b].id, float(rng.random())))
    ids = store.add_queries(pairs)
    store.close()
    return [q for _, q in sorted(zip([-p[2] for p in pairs], ids, strict=True))]


class Server:
    """``rlkit label serve RUN_DIR --port 0 ...`` as a real subprocess."""

    def __init__(self, run_dir: Path, *args: str, timeout: float = 90.0) -> None:
        self.run_dir = run_dir
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rlkit.cli", "label", "serve", str(run_dir), "--port", "0",
             *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            # one OpenMP thread: spinning worker threads crawl on a shared 2-core machine
            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        deadline = time.time() + timeout
        self.url = ""
        lines = []
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("server exited: " + "".join(lines))
            lines.append(line)
            m = re.search(r"at (http://\S+)", line)
            if m:
                self.url = m.group(1)
                break
        if not self.url:
            self.kill()
            raise RuntimeError("server printed no URL: " + "".join(lines))
        self.base = self.url.split("?")[0].rstrip("/")
        self.token = self.url.split("?token=")[1] if "?token=" in self.url else None

    def client(self, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        # TCP_NODELAY as browsers set it: otherwise each POST waits ~40 ms on Nagle.
        nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        transport = httpx.HTTPTransport(socket_options=nodelay)
        return httpx.Client(base_url=self.base, headers=headers, timeout=60.0,
                            transport=transport, **kwargs)  # fmt: skip

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
