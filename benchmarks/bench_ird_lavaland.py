"""Benchmark: Inverse Reward Design on Lavaland, proxy vs posterior-mean vs risk-averse agents.

For each seed (a different training map, test maps and posterior): 100 random test maps
(each with a lava patch on the way, and the same map without it), the one-hot and latent
conditions, with Sample-Z, with MaxEnt-Z, and with Sample-Z but no scale normalization
(ablation). Prints one JSON line ``{"bench": "ird_lavaland", "runs": [...], "summary": [...]}``
where ``summary`` averages each (variant, condition, planner) over the seeds, and writes
benchmarks/results/ird_lavaland_paths.png (Sample-Z, first seed).

    nice -n 10 .venv/bin/python benchmarks/bench_ird_lavaland.py [--maps 100] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from rlkit.commands.ird import plot_paths
from rlkit.rewards.ird.lavaland_eval import LavalandEvalSettings, run_lavaland_eval

RESULTS = Path(__file__).parent / "results"
VARIANTS = {
    "sample-z": {"normalizer": "sample"},
    "maxent-z": {"normalizer": "maxent"},
    "sample-z-no-scale-norm": {"normalizer": "sample", "normalize_scale": False},
}
METRICS = ("lava_rate", "regret", "regret_lava_free")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--maps", type=int, default=100)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--size", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs, pooled = [], defaultdict(list)
    for variant in args.variants:
        for seed in args.seeds:
            settings = LavalandEvalSettings(
                size=args.size, n_maps=args.maps, n_samples=args.samples, **VARIANTS[variant]
            )
            start = time.perf_counter()
            result = run_lavaland_eval(settings, seed)
            rows = [dataclasses.asdict(r) for r in result.rows]
            runs.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "seconds": round(time.perf_counter() - start, 1),
                    "inference_seconds": {
                        k: round(v, 2) for k, v in result.inference_seconds.items()
                    },
                    "rows": [
                        {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
                        for r in rows
                    ],
                }
            )
            for r in rows:
                pooled[(variant, r["condition"], r["planner"])].append([r[m] for m in METRICS])
            if variant == "sample-z" and seed == args.seeds[0]:
                RESULTS.mkdir(parents=True, exist_ok=True)
                out = RESULTS / "ird_lavaland_paths.png"
                plot_paths(result.examples, settings.conditions, out)
    summary = []
    for (variant, condition, planner), values in pooled.items():
        arr = np.array(values)
        entry = {"variant": variant, "condition": condition, "planner": planner}
        entry.update({m: round(float(v), 3) for m, v in zip(METRICS, arr.mean(0), strict=True)})
        entry["lava_rate_max_over_seeds"] = round(float(arr[:, 0].max()), 3)
        summary.append(entry)
    print(
        json.dumps(
            {
                "bench": "ird_lavaland",
                "maps": args.maps,
                "samples": args.samples,
                "size": args.size,
                "seeds": args.seeds,
                "runs": runs,
                "summary": summary,
            }
        )
    )


if __name__ == "__main__":
    main()
