"""Greedy evaluation over many episodes in parallel envs (for VPN and the DQN baseline alike)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from envs import EnvSpec, make_vec_env


def step_score(reward: float, info: dict[str, Any]) -> float:
    """What a step adds to the episode score: Collect's undiscounted primitive reward (the
    paper's metric) where the env reports it, else the step reward."""
    return float(info.get("primitive_reward", reward))


def evaluate_episodes(
    policy: Callable[[np.ndarray], np.ndarray],
    env_id: str,
    episodes: int,
    seed: int,
    n_envs: int = 50,
    on_episode: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Run ``episodes`` episodes of ``policy`` (batched observations -> actions).

    Env ``i`` runs ``(episodes + i) // n_envs`` episodes, so that short episodes are not
    over-represented (as in SB3's ``evaluate_policy``). ``on_episode(k)`` is called with
    the number of episodes just finished (for a progress bar).

    Returns mean, std and standard error of the episode score, and the episode count.
    """
    n_envs = max(1, min(n_envs, episodes))
    venv = make_vec_env(EnvSpec(env_id, training=False), n_envs, seed)
    try:
        quota = np.array([(episodes + i) // n_envs for i in range(n_envs)])
        counts = np.zeros(n_envs, dtype=int)
        current = np.zeros(n_envs)
        scores: list[float] = []
        obs = venv.reset()
        while (counts < quota).any():
            actions = policy(obs)
            obs, rewards, dones, infos = venv.step(actions)
            finished = 0
            for i in range(n_envs):
                current[i] += step_score(rewards[i], infos[i])
                if dones[i]:
                    if counts[i] < quota[i]:
                        scores.append(current[i])
                        counts[i] += 1
                        finished += 1
                    current[i] = 0.0
            if finished and on_episode is not None:
                on_episode(finished)
    finally:
        venv.close()
    arr = np.asarray(scores)
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std()),
        "stderr": float(arr.std() / np.sqrt(len(arr))),
        "episodes": len(arr),
    }
