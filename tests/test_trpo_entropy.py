"""The TRPO preset's entropy bonus really tilts the update towards a wider policy."""

from __future__ import annotations

import torch

from agents.presets import PolicyConfig, make_agent
from envs import EnvSpec, make_vec_env


def _log_std_after_updates(ent_coef: float) -> tuple[float, float]:
    venv = make_vec_env(EnvSpec("Hopper-v5"), 1, 0)
    try:
        agent = make_agent(PolicyConfig(ent_coef=ent_coef, n_steps=256), venv, "mujoco", seed=0)
        before = float(agent.policy.log_std.detach().mean())
        agent.learn(512)  # two TRPO updates
        return before, float(agent.policy.log_std.detach().mean())
    finally:
        venv.close()


def test_entropy_bonus_widens_the_policy() -> None:
    torch.set_num_threads(1)
    start_plain, plain = _log_std_after_updates(0.0)
    start_bonus, bonus = _log_std_after_updates(1.0)
    assert start_plain == start_bonus  # same seed, same initial policy
    # With a strong bonus the trust-region step spends its KL budget on widening the policy.
    assert bonus > plain + 0.01
    assert bonus > start_bonus
