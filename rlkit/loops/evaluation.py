"""Evaluating a policy on the true reward, in a separate env (no life-loss termination)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy

from agents.presets import load_agent, resolve_algo
from envs import EnvSpec, env_kind, make_vec_env
from rlkit.loops.preference_config import PrefsConfig


def load_policy(cfg: PrefsConfig, path: Path) -> BaseAlgorithm:
    """A policy saved under a run's settings ``cfg``: a checkpoint's ``policy.zip``, or
    bench_prefs' true-reward agent (the same preset)."""
    return load_agent(resolve_algo(cfg.policy, env_kind(cfg.env)), str(path))


def eval_spec(cfg: PrefsConfig) -> EnvSpec:
    """The training env's settings, but whole Atari games (no life-loss termination)."""
    return cfg.env_spec(training=False)


def evaluate_policy_true(
    agent: BaseAlgorithm,
    cfg: PrefsConfig,
    n_envs: int,
    episodes: int,
    seed_offset: int = 10_000,
    deterministic: bool = True,
) -> float:
    """Mean undiscounted true return over ``episodes`` episodes (NaN if 0).

    ``deterministic``: the policy's mean (or most likely) action, SB3's convention; False
    samples actions as in training (the paper's curves are the returns of training episodes)
    from torch's generator seeded with the run's seed, so repeatable; the caller's generator
    state is left as it was.
    """
    if episodes <= 0:
        return math.nan
    env = make_vec_env(eval_spec(cfg), min(n_envs, episodes), cfg.seed + seed_offset)
    try:
        with torch.random.fork_rng():
            if not deterministic:
                torch.manual_seed(cfg.seed)
            mean, _ = evaluate_policy(
                agent, env, n_eval_episodes=episodes, deterministic=deterministic, warn=False
            )
    finally:
        env.close()
    return float(mean)
