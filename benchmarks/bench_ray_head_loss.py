"""Losing the Ray cluster's head mid-run: how soon `rlkit prefs train` stops, and how it says so.

For each kill time S: a fresh one-node cluster (``ray start --head``, as the README starts
one), ``rlkit prefs train --env ENV --steps N --labels 40 --ray-workers 2 --ray-address
HEAD:PORT --checkpoint-every C``, the head's processes killed S seconds in (a crashed head
machine); then the same run resumed with ``--resume --ray-address NEW_HEAD:PORT`` on a
second fresh cluster, which must finish. Reports per kill: the exit code, the seconds from
the kill to the driver's exit and to its last line (a watch process prints it when Ray ended
the driver itself), which path said it (``pool``: the driver saw its workers die and the
head's GCS gone; ``watch``; ``client``: Ray Client's connection dropped for good;
``finished``: the run was past its last rollout), the resumed
run's exit code and final step. ``--client``: the run joins through Ray Client
(``ray://HEAD:PORT``). One JSON line per kill time:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ray_head_loss.py --lose-head-at 10 15 20 25 30
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ray_head_loss.py --client --lose-head-at 25
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench_ray_two_nodes import RAY_BIN, _free_port, cluster

from rlkit.cli import whole_number_arg
from rlkit.core.port import port_answers

RLKIT = str(RAY_BIN.with_name("rlkit"))


@contextlib.contextmanager
def _one_node(client: bool) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """:func:`cluster` of one node; with ``client``, its address is its Ray Client server's
    (``ray://``), once that listens (it opens after the GCS)."""
    port = _free_port() if client else None
    with cluster(1, client_port=port) as (address, procs):
        if port is not None:
            if not port_answers(f"127.0.0.1:{port}", grace_s=60):
                raise SystemExit(f"error: the head's Ray Client server did not open port {port}")
            address = f"ray://127.0.0.1:{port}"
        yield address, procs


def lose_head(env_id: str, steps: int, checkpoint_every: int, at: float, client: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="rlb-") as tmp:
        run_dir = Path(tmp) / "run"
        with _one_node(client) as (address, procs):
            cmd = [RLKIT, "prefs", "train", "--env", env_id, "--steps", str(steps),
                   "--labels", "40", "--eval-episodes", "0", "--seed", "0",
                   "--checkpoint-every", str(checkpoint_every), "--ray-workers", "2",
                   "--ray-address", address, "--run-dir", str(run_dir)]  # fmt: skip
            run = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            time.sleep(at)
            os.killpg(procs[0].pid, signal.SIGKILL)
            killed = time.perf_counter()
            run.wait(timeout=300)
            exited = time.perf_counter()
            err = run.stderr.read()  # until the watch, which shares this pipe, has ended too
            said = time.perf_counter()
        line = (err.strip().splitlines() or [""])[-1]
        if run.returncode == 0:
            path = "finished"
        elif "(Ray ended this process)" in line:
            path = "watch"
        elif line.startswith("error: lost the Ray cluster: the Ray Client connection"):
            path = "client"
        elif line.startswith("error: lost the Ray cluster"):
            path = "pool"
        else:
            path = "other"
        row = {"env": env_id, "steps": steps, "client": client, "lose_head_at_s": at,
               "rc": run.returncode,
               "exit_s": round(exited - killed, 2), "line_s": round(said - killed, 2),
               "path": path, "line": line, "traceback": "Traceback" in err}  # fmt: skip
        if run.returncode != 0:
            with _one_node(client) as (address, _):
                resume = [RLKIT, "prefs", "train", "--run-dir", str(run_dir), "--resume",
                          "--ray-address", address]  # fmt: skip
                out = subprocess.run(resume, capture_output=True, text=True, timeout=1800)
            from rlkit.core.checkpoint import CheckpointManager

            manager = CheckpointManager(run_dir)
            step = int(manager.load_latest()[1]["step"]) if manager.any() else None
            row.update(resumed_rc=out.returncode, resumed_step=step,
                       resumed_line=(out.stderr.strip().splitlines() or [""])[-1])  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--steps", type=whole_number_arg, default=40960)
    parser.add_argument("--checkpoint-every", type=int, default=8192)
    parser.add_argument("--lose-head-at", type=float, nargs="+", default=[10, 15, 20, 25, 30])
    parser.add_argument(
        "--client", action="store_true", help="join through Ray Client (ray://HEAD:PORT)"
    )
    args = parser.parse_args()
    for at in args.lose_head_at:
        row = lose_head(args.env, args.steps, args.checkpoint_every, at, args.client)
        print(json.dumps({**row, "date": time.strftime("%Y-%m-%d")}), flush=True)


if __name__ == "__main__":
    main()
