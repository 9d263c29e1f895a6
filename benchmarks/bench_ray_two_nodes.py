"""FragmentSampler throughput with its 2 workers on two Ray nodes against both on one node.

A multi-node cluster is what ``--ray-address`` is for, and what changes there is where a
worker's fragments live: in its own node's object store, pulled to the driver's node by
Ray's object managers over TCP. This machine is one VM, so the two nodes are two raylets
on it, started as the README starts a cluster's nodes (``ray start --head``, then
``ray start --address=HEAD:PORT``), each with one CPU; the baseline is one node with both
CPUs. Same envs, seeds, fragments and driver; layouts alternate, each repeat on fresh nodes:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ray_two_nodes.py --envs ALE/Pong-v5 Hopper-v5

``--compress both`` measures the two-node layout with the workers on the second node
compressing their results (rlkit's default) and without.

With ``--train-steps N`` the driver trains the preset agent (A2C on Atari, TRPO on MuJoCo) for N
steps on a RayVecEnv whose 2 workers take the rollouts themselves (as ``prefs train
--ray-workers 2`` does; ``--no-worker-rollouts``: stepped from the driver), instead of
sampling fragments.
With ``--prefs-steps N`` it times the README's cluster command itself instead,
``rlkit prefs train --env ENV --steps N --labels 100 --ray-workers 2 --ray-address HEAD:PORT``,
on each layout; with ``--lose-node-at S`` too, the second node crashes (its processes are
killed) S seconds into the two-node run, which must still finish (its worker restarts and
whether the replacement had to share a CPU are reported).

With ``--link RATE`` (e.g. ``1gbit``, ``125mbit``; needs root) the second node sits in a network
namespace of its own, joined to the head's by a veth pair that ``tc`` (a token bucket) holds to
RATE each way: the two raylets and their object managers talk TCP across two network stacks
and a link of known bandwidth, as two hosts do, instead of over loopback. The bytes a worker
sends per env step are reported (``bytes_per_step``) so that the bandwidth a cluster's links
need can be read off. Prints one JSON line per measurement and a summary line; writes
benchmarks/results/ray_two_nodes.jsonl.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("MUJOCO_GL", "egl")

from bench_ray_throughput import raw_rate_and_cpu, timed_fragments  # noqa: E402

from envs import EnvSpec  # noqa: E402

RAY_BIN = Path(sys.executable).with_name("ray")
RESULTS = ROOT / "benchmarks" / "results" / "ray_two_nodes.jsonl"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(args: list[str], temp_dir: str, netns: str | None = None) -> subprocess.Popen:
    """``ray start ARGS --block`` in its own process group (in network namespace ``netns``
    if given); workers as nice as the driver (as the README starts a cluster's nodes, and as
    rlkit's own local instance runs)."""
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        "RAY_worker_niceness": "0",
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    }
    env.pop("RAY_ADDRESS", None)
    cmd = [str(RAY_BIN), "start", *args, "--disable-usage-stats", "--block",
           f"--temp-dir={temp_dir}", "--object-store-memory=536870912"]  # fmt: skip
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    log = open(Path(temp_dir) / "start.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
        start_new_session=True,
    )  # fmt: skip


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _wait_for_port(host: str, port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"error: ray start exited with {proc.returncode}")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("error: ray start --head did not open its port in 60 s") from None
            time.sleep(0.2)


#: The head's and the second node's addresses on a shaped link (``--link``).
LINK_HEAD_IP, LINK_NODE_IP = "10.77.0.1", "10.77.0.2"


def _sh(*cmd: str) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)}: {out.stderr.strip() or out.returncode}")


@contextlib.contextmanager
def shaped_link(rate: str) -> Iterator[str]:
    """A network namespace joined to this one by a veth pair, both ends held to ``rate`` (a
    ``tc`` rate such as ``1gbit``) by a token bucket: this side is ``LINK_HEAD_IP``, the
    namespace's ``LINK_NODE_IP``. Yields the namespace's name; removed on exit."""
    if os.geteuid() != 0:
        raise SystemExit("error: --link needs root (ip netns, tc)")
    ns, here, there = f"rlb{os.getpid()}", f"rlb{os.getpid()}a", f"rlb{os.getpid()}b"
    _sh("ip", "netns", "add", ns)
    try:
        _sh("ip", "link", "add", here, "type", "veth", "peer", "name", there)
        _sh("ip", "link", "set", there, "netns", ns)
        _sh("ip", "addr", "add", f"{LINK_HEAD_IP}/24", "dev", here)
        _sh("ip", "link", "set", here, "up")
        in_ns = ["ip", "netns", "exec", ns]
        _sh(*in_ns, "ip", "addr", "add", f"{LINK_NODE_IP}/24", "dev", there)
        _sh(*in_ns, "ip", "link", "set", there, "up")
        _sh(*in_ns, "ip", "link", "set", "lo", "up")
        shape = ["root", "tbf", "rate", rate, "burst", "256kb", "latency", "20ms"]
        _sh("tc", "qdisc", "add", "dev", here, *shape)
        _sh(*in_ns, "tc", "qdisc", "add", "dev", there, *shape)
        yield ns
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@contextlib.contextmanager
def cluster(
    nodes: int, netns: str | None = None, client_port: int | None = None
) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """A fresh cluster's address and its nodes' ``ray start`` processes: a head with
    ``2 / nodes`` CPUs (its Ray Client server on ``client_port``, if given) and, for 2 nodes,
    a second node with the other CPU (in network namespace ``netns``, across a
    :func:`shaped_link`, if given); stopped (and its temp folders removed) on exit."""
    host = LINK_HEAD_IP if netns else "127.0.0.1"
    port = _free_port()
    temp_dirs = [tempfile.mkdtemp(prefix="rlb") for _ in range(nodes)]
    head = [
        "--head", f"--port={port}", f"--num-cpus={2 // nodes}", "--include-dashboard=false",
        f"--ray-client-server-port={client_port or _free_port()}", f"--dashboard-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}",
    ]  # fmt: skip
    if netns:
        head.append(f"--node-ip-address={LINK_HEAD_IP}")
    procs = [_ray_start(head, temp_dirs[0])]
    address = f"{host}:{port}"
    try:
        _wait_for_port(host, port, procs[0])
        if nodes == 2:
            second = [
                f"--address={address}", "--num-cpus=1", "--min-worker-port=0",
                "--max-worker-port=0", f"--dashboard-agent-listen-port={_free_port()}",
            ]  # fmt: skip
            if netns:
                second.append(f"--node-ip-address={LINK_NODE_IP}")
            procs.append(_ray_start(second, temp_dirs[1], netns))
        yield address, procs
    finally:
        for proc in reversed(procs):
            _stop(proc)
        for d in temp_dirs:
            shutil.rmtree(d, ignore_errors=True)


def measure(
    address: str,
    nodes: int,
    spec: EnvSpec,
    n_envs: int,
    length: int,
    seconds: float,
    compress: str = "auto",
    train_steps: int = 0,
    worker_rollouts: bool = True,
) -> None:
    """In a fresh driver process: steps/s of a 2-worker FragmentSampler (prefetching) on the
    cluster at ``address``, once it has ``nodes`` nodes, its workers compressing their
    fragments as ``compress`` says (``auto``: those on another node; ``off``); prints one
    JSON line."""
    import torch

    from rlkit.distributed import FragmentSampler, RandomPolicy, connect
    from rlkit.distributed.wire import Compressed

    torch.set_num_threads(1)
    connect(address)
    await_nodes(nodes)
    if nodes == 2:  # the GCS lists a node before the head's scheduler may place work there
        time.sleep(3)
    if train_steps:
        _measure_training(nodes, spec, n_envs, train_steps, compress, worker_rollouts)
        return
    sampler = FragmentSampler(spec, n_envs, 2, seed=0, fragment_length=length, prefetch=True,
                              compress=None if compress == "auto" else False)  # fmt: skip
    worker_nodes = {sampler.pool.node_id(i) for i in range(2)}
    if len(worker_nodes) != nodes:
        raise SystemExit(f"error: the 2 workers are on {len(worker_nodes)} nodes, not {nodes}")
    sampler.sample(RandomPolicy(sampler.action_space))
    sampler.sample()
    # What one worker sends per call, as it sends it (Atari: the frames, not the stacks;
    # compressed if that worker compresses).
    i = sampler.pool.compressing.index(True) if any(sampler.pool.compressing) else 1
    result = sampler.pool.call(i, "sample", length, None, True)
    wire = Compressed(result) if sampler.pool.compressing[i] else result
    sent = len(pickle.dumps(wire, protocol=5))
    steps, wall = timed_fragments(sampler, n_envs * length, seconds)
    sampler.close()
    row = {"env": spec.env_id, "render_state": spec.render_state, "nodes": nodes, "n_envs": n_envs, "fragment_length": length,
           "compress": compress, "compressing": sampler.pool.compressing,
           "steps_per_s": steps / wall, "bytes_per_step": sent / (n_envs // 2 * length)}  # fmt: skip
    print(json.dumps(row), flush=True)


def _measure_training(
    nodes: int, spec: EnvSpec, n_envs: int, steps: int, compress: str, worker_rollouts: bool
) -> None:
    """Steps/s of the preset agent learning ``steps`` steps (after a warm-up of a quarter of
    that) on a RayVecEnv of 2 workers taking the rollouts themselves (or stepped from the
    driver, without ``worker_rollouts``); prints one JSON line."""
    from agents.presets import PolicyConfig, make_agent
    from envs import env_kind
    from rlkit.distributed import make_ray_vec_env

    venv = make_ray_vec_env(spec, n_envs, 2, seed=0, worker_rollouts=worker_rollouts,
                            compress=None if compress == "auto" else False)  # fmt: skip
    ray_env = venv.venv if hasattr(venv, "venv") else venv  # Atari: under the frame stack
    if len({ray_env.worker_node_id(i) for i in range(2)}) != nodes:
        raise SystemExit(f"error: the 2 workers are not on {nodes} nodes")
    agent = make_agent(PolicyConfig(), venv, env_kind(spec.env_id), 0)
    agent.learn(steps // 4)
    start = time.perf_counter()
    agent.learn(steps, reset_num_timesteps=False)
    wall = time.perf_counter() - start
    venv.close()
    row = {"env": spec.env_id, "render_state": spec.render_state, "nodes": nodes,
           "n_envs": n_envs, "algo": type(agent).__name__, "train_steps": steps,
           "worker_rollouts": worker_rollouts, "compress": compress,
           "compressing": ray_env.pool.compressing, "steps_per_s": steps / wall}  # fmt: skip
    print(json.dumps(row), flush=True)


def run_prefs(args: argparse.Namespace, env_id: str, nodes: int) -> dict:
    """Wall-clock of the README's cluster command, ``rlkit prefs train ... --ray-workers 2
    --ray-address HEAD:PORT``, on a fresh cluster of ``nodes`` nodes (a short run, no eval)."""
    lose = args.lose_node_at if nodes == 2 else None
    with (
        cluster(nodes, args.netns) as (address, procs),
        tempfile.TemporaryDirectory(prefix="rlb-") as tmp,
    ):
        cmd = [str(RAY_BIN.with_name("rlkit")), "prefs", "train", "--env", env_id,
               "--steps", str(args.prefs_steps), "--labels", "100", "--eval-episodes", "0",
               "--seed", "0", "--ray-workers", "2", "--ray-address", address,
               "--run-dir", str(Path(tmp) / "run")]  # fmt: skip
        _wait_for_nodes(address, nodes)  # or the run would size its workers for the head alone
        start = time.perf_counter()
        run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if lose is not None:
            time.sleep(lose)  # then the second node crashes: its processes are killed
            os.killpg(procs[1].pid, signal.SIGKILL)
        output, _ = run.communicate(timeout=1800)
        wall = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"error: prefs train failed: {output.strip().splitlines()[-1:]}")
    row = {"env": env_id, "command": "prefs train", "nodes": nodes, "link": args.link,
           "steps": args.prefs_steps, "wall_s": wall}  # fmt: skip
    if lose is not None:
        row.update(lost_node_at_s=lose, worker_restarts=output.count("died ("),
                   shared_cpu=output.count("without a CPU of its own"))  # fmt: skip
    return row


def await_nodes(nodes: int) -> None:
    """In a driver connected to the cluster: wait until it has ``nodes`` nodes and both CPUs."""
    import ray

    deadline = time.monotonic() + 60
    while sum(n["Alive"] for n in ray.nodes()) < nodes or ray.cluster_resources()["CPU"] < 2:
        if time.monotonic() > deadline:
            raise SystemExit(f"error: the cluster did not reach {nodes} nodes in 60 s")
        time.sleep(0.5)


def _wait_for_nodes(address: str, nodes: int) -> None:
    """:func:`await_nodes` for the cluster at ``address``, in a throwaway driver process."""
    cmd = [sys.executable, __file__, "--await-nodes", address, "--nodes", str(nodes)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise SystemExit(f"error: {out.stderr.strip().splitlines()[-1:]}")


def run_layout(args: argparse.Namespace, spec: EnvSpec, nodes: int, compress: str) -> dict:
    env_id = spec.env_id
    with cluster(nodes, args.netns) as (address, _):
        cmd = [sys.executable, __file__, "--measure", address, "--nodes", str(nodes),
               "--render-state", "on" if spec.render_state else "off",
               "--envs", env_id, "--n-envs", str(args.n_envs),
               "--fragment-length", str(args.fragment_length or _length(env_id)),
               "--seconds", str(args.seconds), "--compress", compress,
               "--train-steps", str(args.train_steps),
               *([] if args.worker_rollouts else ["--no-worker-rollouts"])]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"error: the driver failed: {out.stderr.strip().splitlines()[-1:]}")
    return {**json.loads(lines[-1]), "link": args.link}


def _length(env_id: str) -> int:
    return 25 if env_id.startswith("ALE/") else 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="timing window")
    parser.add_argument("--repeats", type=int, default=3, help="alternations of the layouts")
    parser.add_argument("--n-envs", type=int, default=32, help="envs, split over 2 workers")
    parser.add_argument("--envs", nargs="+", default=["ALE/Pong-v5", "Hopper-v5"])
    parser.add_argument("--fragment-length", type=int, help="default 25 Atari, 100 MuJoCo")
    parser.add_argument(
        "--render-state",
        choices=["on", "off", "both"],
        default="both",
        help="send each step's render state (MuJoCo qpos/qvel, Atari RGB screen at half size) "
        "as the preference loop's sampler does ('on'), or not",
    )
    parser.add_argument(
        "--prefs-steps",
        type=int,
        default=0,
        help="instead: time `rlkit prefs train --ray-workers 2 --ray-address HEAD:PORT` for this"
        " many steps on each layout",
    )
    parser.add_argument(
        "--lose-node-at",
        type=float,
        metavar="SECONDS",
        help="with --prefs-steps: kill the second node's processes this many seconds into the "
        "two-node run (a crashed machine); the run must finish on the head",
    )
    parser.add_argument(
        "--train-steps",
        type=int,
        default=0,
        help="instead of sampling fragments: train the preset agent this many steps on a "
        "RayVecEnv whose workers take the rollouts (as prefs train does)",
    )
    parser.add_argument(
        "--no-worker-rollouts",
        dest="worker_rollouts",
        action="store_false",
        help="with --train-steps: step the workers from the driver, one round trip per step",
    )
    parser.add_argument(
        "--link",
        help="put the second node behind a link held to this rate each way (a tc rate: 1gbit, "
        "125mbit; needs root) instead of loopback",
    )
    parser.add_argument(
        "--compress",
        choices=["auto", "off", "both"],
        default="auto",
        help="workers on the second node compress their fragments (rlkit's default, 'auto'), "
        "or not ('off'), or measure both on two nodes",
    )
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the driver, in a child process
    parser.add_argument("--await-nodes", help=argparse.SUPPRESS)  # a throwaway driver
    parser.add_argument("--nodes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.lose_node_at is not None and not args.prefs_steps:
        parser.error("--lose-node-at needs --prefs-steps")
    if args.await_nodes:
        from rlkit.distributed import connect

        connect(args.await_nodes)
        await_nodes(args.nodes)
        return
    if args.measure:
        spec = EnvSpec(args.envs[0], render_state=args.render_state == "on")
        length = args.fragment_length or _length(spec.env_id)
        measure(args.measure, args.nodes, spec, args.n_envs, length, args.seconds, args.compress,
                args.train_steps, args.worker_rollouts)  # fmt: skip
        return
    with shaped_link(args.link) if args.link else contextlib.nullcontext() as netns:
        args.netns = netns
        _write(args.out, run(args))


def run(args: argparse.Namespace) -> list[dict]:
    """Every measurement and summary row of the run ``args`` asks for."""
    rows: list[dict] = []
    if args.prefs_steps:
        for env_id in args.envs:
            walls: dict[int, list[float]] = {1: [], 2: []}
            for repeat in range(args.repeats):
                for nodes in (1, 2):
                    row = {**run_prefs(args, env_id, nodes), "repeat": repeat}
                    walls[nodes].append(row["wall_s"])
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            ratios = [b / a for a, b in zip(walls[1], walls[2], strict=True)]
            summary = {"env": env_id, "command": "prefs train", "link": args.link,
                       "lost_node_at_s": args.lose_node_at,
                       "two_nodes_wall_vs_one": ratios}  # fmt: skip
            rows.append(summary)
            print(json.dumps(summary), flush=True)
        return rows
    states = {"on": [True], "off": [False], "both": [False, True]}[args.render_state]
    modes = ["off", "auto"] if args.compress == "both" else [args.compress]
    # One node compresses nothing either way: its baseline is measured once.
    layouts = [(1, modes[0]), *((2, mode) for mode in modes)]
    for env_id in args.envs:
        raw = raw_rate_and_cpu(EnvSpec(env_id), 5.0)[0]
        rates: dict[tuple, list[float]] = {(s, *lay): [] for s in states for lay in layouts}
        for repeat in range(args.repeats):
            for state in states:
                for nodes, mode in layouts:
                    row = run_layout(args, EnvSpec(env_id, render_state=state), nodes, mode)
                    limit = row["steps_per_s"] / (2 * raw)
                    row.update(repeat=repeat, fraction_of_2core_limit=limit)
                    rates[state, nodes, mode].append(row["steps_per_s"])
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        for state in states:
            for mode in modes:
                one, two = rates[state, *layouts[0]], rates[state, 2, mode]
                ratios = [b / a for a, b in zip(one, two, strict=True)]
                summary = {"env": env_id, "render_state": state, "compress": mode, "link": args.link,
                           "raw_single_env": raw, "two_nodes_vs_one": ratios,
                           "median_ratio": statistics.median(ratios)}  # fmt: skip
                rows.append(summary)
                print(json.dumps(summary), flush=True)
    return rows


def _write(out: Path, rows: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(json.dumps({"bench": "ray_two_nodes", "cores": len(os.sched_getaffinity(0))}))


if __name__ == "__main__":
    main()
