"""A short VPN training run beats a random policy (fixed seed, well under a minute).

Collect needs far more experience than a test can afford before a greedy policy beats
random (see BENCHMARKS.md), so this test trains VPN(1) on CartPole through the same env
factory, trainer and planner, with the ``mlp`` backbone from the rlkit.nn registry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agents.vpn.config import VPNConfig
from agents.vpn.evaluation import evaluate_episodes
from agents.vpn.run_eval import greedy_policy, load_run_config
from agents.vpn.trainer import train_vpn


@pytest.mark.slow
def test_short_training_run_beats_random_policy(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = VPNConfig(
            env="CartPole-v1", backbone="mlp", plan="2", steps=3000, n_envs=4, n_step=5,
            batch_sequences=8, train_freq=1, lr=2e-3, eps_fraction=0.3, learning_starts=200,
            target_sync=250, channels=4, hidden=32, eval_every=0, seed=0,
            run_dir=str(tmp_path / "run"),
        )  # fmt: skip
        run_dir = train_vpn(cfg)
        policy = greedy_policy(run_dir, load_run_config(run_dir), "CartPole-v1", None)
        trained = evaluate_episodes(policy, "CartPole-v1", 50, seed=99)
        rng = np.random.default_rng(0)
        random = evaluate_episodes(
            lambda obs: rng.integers(0, 2, len(obs)), "CartPole-v1", 50, seed=99
        )
    finally:
        torch.set_num_threads(threads)
    assert random["mean"] < 30
    assert trained["mean"] > 2 * random["mean"] + 10
