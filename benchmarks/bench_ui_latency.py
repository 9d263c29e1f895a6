"""Latency of "next query" and "submit label" under concurrent labelers, against a real server.

Starts ``rlkit label serve`` (uvicorn, SQLite WAL + synchronous=FULL) as a subprocess on a
run with ``--labelers * --labels`` queries, then ``--labelers`` threads each lease and
answer ``--labels`` queries over loopback HTTP, either flat out (``--think-seconds 0``: a
closed loop, so latency is mostly queueing behind the other 19) or pausing between
labels like (very fast) people. Prints one JSON line: p50/p99/max milliseconds per call
kind, labels per second, and the label count check.

    nice -n 10 .venv/bin/python benchmarks/bench_ui_latency.py --labelers 20 --labels 50
    nice -n 10 .venv/bin/python benchmarks/bench_ui_latency.py --labelers 20 --labels 50 --think-seconds 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

from rlkit.cli import whole_number_arg
from rlkit.core.rundir import save_config
from rlkit.core.types import Segment
from rlkit.loops.preference_config import PrefsConfig
from rlkit.store import Store


def make_run(run_dir: Path, n_queries: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    save_config(run_dir, PrefsConfig(env="HalfCheetah-v5", seed=seed))
    store = Store(run_dir)
    n_segments = 200
    for i in range(n_segments):
        store.add_segment(Segment(obs=np.zeros((4, 17), np.float32), acts=np.zeros((4, 6)),
                                  true_rews=rng.normal(size=4), id=i, env_id="HalfCheetah-v5"))  # fmt: skip
    pairs = [(*rng.choice(n_segments, 2, replace=False), float(rng.random()))
             for _ in range(n_queries)]  # fmt: skip
    store.add_queries(pairs)
    store.close()


def start_server(run_dir: Path, gold_every: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlkit.cli", "label", "serve", str(run_dir), "--port", "0",
         "--render-ahead", "0", "--gold-every", str(gold_every)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("server exited")
        m = re.search(r"at (http://\S+)/", line)
        if m:
            return proc, m.group(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labelers", type=int, default=20)
    ap.add_argument("--labels", type=whole_number_arg, default=50, help="labels per labeler")
    ap.add_argument("--gold-every", type=int, default=10)
    ap.add_argument(
        "--think-seconds",
        type=float,
        default=0.0,
        help="pause between a labeler's answer and their next request (0: flat out)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        make_run(run, args.labelers * args.labels + 10)
        proc, base = start_server(run, args.gold_every)
        lat: dict[str, list[float]] = {"next": [], "submit": []}
        lock = threading.Lock()
        barrier = threading.Barrier(args.labelers)

        def labeler(i: int) -> None:
            name = f"bench{i:02d}"
            rng = np.random.default_rng(i)  # de-synchronizes the labelers' pauses
            mine: dict[str, list[float]] = {"next": [], "submit": []}
            # As browsers do: no Nagle delay (httpx writes headers and body separately, so
            # without TCP_NODELAY a POST waits ~40 ms for the server's delayed ACK).
            transport = httpx.HTTPTransport(
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
            )
            with httpx.Client(base_url=base, timeout=60, transport=transport) as c:
                c.get("/api/auth")  # open the connection before the clock starts
                barrier.wait()
                for _ in range(args.labels):
                    t0 = time.perf_counter()
                    q = c.post("/api/queries/next", json={"labeler": name}).json()["query"]
                    t1 = time.perf_counter()
                    r = c.post("/api/labels", json={"query_id": q["id"], "choice": "left",
                               "labeler": name, "idempotency_key": uuid.uuid4().hex})  # fmt: skip
                    t2 = time.perf_counter()
                    assert r.status_code == 200, r.text
                    mine["next"].append(t1 - t0)
                    mine["submit"].append(t2 - t1)
                    if args.think_seconds:
                        time.sleep(args.think_seconds * (0.5 + rng.random()))
            with lock:
                for k in lat:
                    lat[k].extend(mine[k])

        threads = [threading.Thread(target=labeler, args=(i,)) for i in range(args.labelers)]
        t_start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t_start
        proc.terminate()
        proc.wait(timeout=30)
        stored = Store(run).count_labels()
    result = {"bench": "ui_latency", "labelers": args.labelers, "labels_each": args.labels,
              "think_seconds": args.think_seconds,
              "labels_stored": stored, "labels_per_second": round(stored / wall, 1)}  # fmt: skip
    for kind, xs in lat.items():
        ms = np.array(xs) * 1000
        result.update({f"{kind}_p50_ms": round(float(np.percentile(ms, 50)), 1),
                       f"{kind}_p99_ms": round(float(np.percentile(ms, 99)), 1),
                       f"{kind}_max_ms": round(float(ms.max()), 1)})  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
