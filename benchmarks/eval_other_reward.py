"""Evaluate kept benchmark policies on another true reward than the one they were judged by.

``bench_prefs.py --keep KEEP`` leaves, per env and seed, the preference run
(``KEEP/ENV_seedS/run``) and the policy trained on the true reward
(``KEEP/ENV_seedS/true_reward_agent.zip``). This evaluates both as ``bench_prefs`` does
(deterministic episodes, the same evaluation seeds) but on ``--env-reward`` instead of the
run's own, e.g. runs taught with the paper's reward scored on Gymnasium's. Prints one JSON line
per seed.

    .venv/bin/python benchmarks/eval_other_reward.py KEEP/Walker2d-v5_seed0 KEEP/Walker2d-v5_seed1 \
        --env-reward gymnasium --episodes 5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from envs import env_kind
from rlkit.core.checkpoint import CheckpointManager
from rlkit.core.errors import UserError
from rlkit.core.rundir import load_config
from rlkit.loops.evaluation import evaluate_policy_true, load_policy
from rlkit.loops.preference_config import PrefsConfig


def evaluate_kept(kept: Path, env_reward: str, episodes: int) -> dict:
    """The mean returns on ``env_reward`` of ``kept``'s learned-reward and true-reward policies."""
    run_dir, other = kept / "run", kept / "true_reward_agent.zip"
    if not (run_dir / "config.json").is_file() or not other.is_file():
        raise UserError(f"{kept}: not a folder kept by bench_prefs.py --keep")
    cfg = PrefsConfig.from_saved(load_config(run_dir))
    scored = cfg.scored_on(env_reward)
    path = CheckpointManager(run_dir).latest()
    n_envs = cfg.vec_envs(env_kind(cfg.env))
    learned = evaluate_policy_true(load_policy(cfg, path / "policy.zip"), scored, n_envs, episodes)
    true = evaluate_policy_true(load_policy(cfg, other), scored, n_envs, episodes)
    return {
        "bench": "eval_other_reward",
        "env": cfg.env,
        "seed": cfg.seed,
        "trained_with": cfg.env_reward,
        "scored_on": env_reward,
        "episodes": episodes,
        "return_learned": round(learned, 1),
        "return_true_reward_agent": round(true, 1),
        "ratio": round(learned / true, 3) if true else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("kept", type=Path, nargs="+", help="KEEP/ENV_seedS folders of bench_prefs")
    p.add_argument("--env-reward", choices=["gymnasium", "paper"], default="gymnasium")
    p.add_argument("--episodes", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    for kept in args.kept:
        print(json.dumps(evaluate_kept(kept, args.env_reward, args.episodes)), flush=True)


if __name__ == "__main__":
    main()
