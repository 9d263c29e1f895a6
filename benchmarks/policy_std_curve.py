"""How a TRPO policy's action noise and training return move over a run: one JSON line per run.

Reads the SB3 log a preference run keeps (``RUN_DIR/sb3/progress.csv``, e.g. from
``bench_prefs.py --keep``) and prints, at the steps asked for (the first logged update at or
after each), the policy's state-independent action std (``train/std``, the mean over action
dimensions), the mean true return of its last 100 training episodes and the critic's explained
variance. ``--true-reward ENV SEED STEPS`` trains the TRPO preset on the true reward instead
(as ``bench_prefs.py``'s true-reward side does, same seed) and reports the same from its log:

    .venv/bin/python benchmarks/policy_std_curve.py /tmp/keep/HalfCheetah-v5_seed29/run /tmp/keep/HalfCheetah-v5_seed37/run
    OMP_NUM_THREADS=1 MUJOCO_GL=egl .venv/bin/python benchmarks/policy_std_curve.py --true-reward HalfCheetah-v5 29 500000
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_AT = [167_936, 249_856, 331_776, 495_616, 987_136]


def curve(progress: Path, at: list[int]) -> dict[str, list]:
    """``steps``, ``std``, ``train_return`` and ``explained_variance`` at the first logged
    policy update at or after each of ``at`` (the steps a run did not reach are left out)."""
    rows = [r for r in csv.DictReader(progress.open()) if r.get("train/std")]
    out: dict[str, list] = {"steps": [], "std": [], "train_return": [], "explained_variance": []}
    for step in at:
        row = next((r for r in rows if int(r["time/total_timesteps"]) >= step), None)
        if row is None:
            break
        out["steps"].append(int(row["time/total_timesteps"]))
        out["std"].append(round(float(row["train/std"]), 3))
        out["train_return"].append(round(float(row["rollout/ep_rew_mean"]), 1))
        out["explained_variance"].append(round(float(row["train/explained_variance"]), 3))
    return out


def true_reward_progress(env: str, seed: int, steps: int, folder: Path) -> Path:
    """Train the TRPO preset on ``env``'s true reward (``seed``, ``steps``) as ``bench_prefs.py``
    does, with a CSV log in ``folder``; the log's path."""
    from bench_prefs import run_true_reward
    from stable_baselines3.common.logger import configure

    from envs import env_kind
    from rlkit.loops.preference_config import PrefsConfig

    cfg = PrefsConfig(env=env, seed=seed, steps=steps)
    run_true_reward(cfg, cfg.vec_envs(env_kind(env)), configure(str(folder), ["csv"]))
    return folder / "progress.csv"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="*", type=Path, help="preference run directories")
    p.add_argument("--true-reward", nargs=3, metavar=("ENV", "SEED", "STEPS"))
    p.add_argument("--at", type=int, nargs="+", default=DEFAULT_AT, help="steps to report")
    args = p.parse_args()
    if not args.runs and not args.true_reward:
        p.error("give run directories or --true-reward ENV SEED STEPS")
    for run in args.runs:
        progress = run / "sb3" / "progress.csv"
        if not progress.is_file():
            p.error(f"{run}: no sb3/progress.csv (a preference run directory?)")
        config = json.loads((run / "config.json").read_text())
        line = {"bench": "policy_std_curve", "run": str(run), "env": config["env"]}
        line.update(seed=config["seed"], ent_coef=config["policy"]["ent_coef"])
        print(json.dumps({**line, **curve(progress, args.at)}), flush=True)
    if args.true_reward:
        env, seed, steps = args.true_reward[0], int(args.true_reward[1]), int(args.true_reward[2])
        with tempfile.TemporaryDirectory() as tmp:
            progress = true_reward_progress(env, seed, steps, Path(tmp))
            line = {"bench": "policy_std_curve", "run": "true_reward", "env": env, "seed": seed}
            print(json.dumps({**line, "ent_coef": 0.0, **curve(progress, args.at)}), flush=True)


if __name__ == "__main__":
    main()
