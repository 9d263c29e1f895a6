"""Benchmark: IRD posterior inference speed, 10,000 posterior samples on a 25x25 Lavaland map.

Times the whole inference (proxy-optimal counts, the normalizer, sampling) for Sample-Z
(1,000 and 10,000 proxies, MCMC) and MaxEnt-Z (importance sampling from the prior, then
resampling) with torch limited to 1 and to 2 threads. Prints one JSON line with, per case,
the smallest wall-clock and the smallest process CPU seconds over 2 runs, and the load
average (the machine is shared: wall time under load overstates the cost).

    nice -n 10 .venv/bin/python benchmarks/bench_ird_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from envs.lavaland import tabular_mdp
from envs.lavaland_maps import PROXY_WEIGHTS, generate_map
from rlkit.rewards.ird.posterior import GaussianPrior, maxent_z, sample_posterior, sample_z
from rlkit.rewards.ird.value_iteration import value_iteration

N_SAMPLES = 10_000


def infer(mdp, normalizer: str, n_proxy: int, method: str, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    start, cpu = time.perf_counter(), time.process_time()
    prior = GaussianPrior.isotropic(5)
    counts = value_iteration(mdp, PROXY_WEIGHTS).feature_counts[0]
    if normalizer == "sample":
        z = sample_z(mdp, prior, n_proxy, 3.0, rng)
    else:
        z = maxent_z(mdp, 3.0)
    post = sample_posterior(counts, z, prior, N_SAMPLES, rng, method=method)
    if method == "importance":
        post = post.resample(N_SAMPLES, rng)
    assert post.samples.shape == (N_SAMPLES, 5)
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    # no options: --help describes the run instead of starting it
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    mdp = tabular_mdp(generate_map(np.random.default_rng(0), 25))
    cases = [
        ("sample", 1000, "mcmc"),
        ("sample", 10_000, "mcmc"),
        ("maxent", 0, "importance"),
    ]
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for normalizer, n_proxy, method in cases:
            timings = [infer(mdp, normalizer, n_proxy, method, seed) for seed in range(2)]
            wall, cpu = min(t[0] for t in timings), min(t[1] for t in timings)
            results.append(
                {
                    "threads": threads,
                    "normalizer": normalizer,
                    "proxies": n_proxy or None,
                    "sampler": method,
                    "seconds": round(wall, 3),
                    "cpu_seconds": round(cpu, 3),
                }
            )
    print(
        json.dumps(
            {
                "bench": "ird_speed",
                "map": "25x25",
                "horizon": mdp.horizon,
                "samples": N_SAMPLES,
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
