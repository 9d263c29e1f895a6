"""The TRPO preset: its entropy bonus really tilts the update towards a wider policy, and its
``learn`` skips torch.distributions' argument checks without changing what it learns."""

from __future__ import annotations

import pytest
import torch
from sb3_contrib import TRPO
from stable_baselines3.common.callbacks import BaseCallback
from torch.distributions import Distribution

from agents.presets import PolicyConfig, make_agent
from agents.trpo_entropy import EntropyTRPO
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


class _Record(BaseCallback):
    """Records torch's distribution-check switch at every step; optionally fails."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.seen: set[bool] = set()
        self.fail = fail

    def _on_step(self) -> bool:
        self.seen.add(Distribution._validate_args)
        if self.fail:
            raise RuntimeError("callback failed")
        return True


@pytest.mark.parametrize("checks", [True, False])
def test_learn_skips_distribution_checks_and_restores_them(checks: bool) -> None:
    torch.set_num_threads(1)
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(checks)
    try:
        venv = make_vec_env(EnvSpec("Hopper-v5"), 1, 0)
        agent = make_agent(PolicyConfig(n_steps=128), venv, "mujoco", seed=0)
        record = _Record()
        agent.learn(128, callback=record)
        assert record.seen == {False}
        assert Distribution._validate_args is checks
        with pytest.raises(RuntimeError, match="callback failed"):
            agent.learn(128, callback=_Record(fail=True))
        assert Distribution._validate_args is checks  # restored after an error too
        venv.close()
    finally:
        Distribution.set_default_validate_args(previous)


def test_learning_without_the_checks_gives_the_same_policy() -> None:
    torch.set_num_threads(1)
    weights = []
    for learn in (EntropyTRPO.learn, TRPO.learn):  # checks off; sb3-contrib's, checks as set
        venv = make_vec_env(EnvSpec("Hopper-v5"), 1, 0)
        agent = make_agent(PolicyConfig(n_steps=128), venv, "mujoco", seed=0)
        start = torch.nn.utils.parameters_to_vector(agent.policy.parameters()).detach().clone()
        learn(agent, 256)
        weights.append(torch.nn.utils.parameters_to_vector(agent.policy.parameters()).detach())
        assert not torch.equal(weights[-1], start)  # two updates did change the policy
        venv.close()
    assert Distribution._validate_args  # torch's default, on for the second run
    assert torch.equal(weights[0], weights[1])
