"""Planner throughput: decisions per second for a batch of 16 Collect states with plan 4,4,4,1,1.

Times encoding plus planning (what acting costs) with the default abstract state (16
channels) and the paper's size (64 channels), on one CPU thread by default. Prints one
JSON line.

    nice -n 10 .venv/bin/python benchmarks/bench_vpn_planner.py
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch

from agents.vpn.modules import VPNetwork
from agents.vpn.planner import parse_branching, plan


def decisions_per_second(
    channels: int, branching: tuple[int, ...], batch: int, seconds: float
) -> float:
    torch.manual_seed(0)
    space = gym.spaces.Box(0.0, 1.0, (10, 10, 4), dtype=np.float32)
    net = VPNetwork(space, 4, gamma=0.98, channels=channels).eval()
    obs = torch.rand(batch, 10, 10, 4)
    with torch.inference_mode():
        plan(net, net.encode(obs), branching)  # warm-up
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            plan(net, net.encode(obs), branching)
            runs += 1
        elapsed = time.perf_counter() - start
    return runs * batch / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default="4,4,4,1,1")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0, help="timing window per setting")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    branching = parse_branching(args.plan, 4)
    result = {"plan": args.plan, "batch": args.batch, "threads": args.threads}
    for channels in (16, 64):
        result[f"decisions_per_s_c{channels}"] = round(
            decisions_per_second(channels, branching, args.batch, args.seconds), 1
        )
    for depth_plan in ("4", "4,4,4"):
        result[f"decisions_per_s_c16_plan_{depth_plan}"] = round(
            decisions_per_second(16, parse_branching(depth_plan, 4), args.batch, args.seconds / 2),
            1,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
