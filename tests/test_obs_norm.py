"""--policy.normalize-obs (on by default): the TRPO policy normalizes observations by running
statistics, updated between updates only, saved with the policy, kept through a policy reset."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from prefs_tiny import tiny_hopper
from rich.console import Console
from stable_baselines3 import A2C

from agents.obs_norm import RunningObsNorm, obs_norm_state
from agents.presets import PolicyConfig, load_agent, make_agent, normalizes_obs
from envs import EnvSpec, make_vec_env
from rlkit.loops.preference import PreferenceLoop


def test_running_statistics_equal_those_of_all_batches_together() -> None:
    rng = np.random.default_rng(0)
    norm = RunningObsNorm(gym.spaces.Box(-np.inf, np.inf, (2, 3)))
    x = torch.tensor(rng.normal(size=(5, 2, 3)), dtype=torch.float32)
    assert torch.equal(norm(x), x.flatten(1))  # the identity before any update
    batches = [rng.normal(3.0, 2.0, size=(n, 2, 3)) for n in (7, 1, 40)]
    for batch in batches:
        norm.update(batch)
    every = np.concatenate(batches).reshape(-1, 6)
    assert float(norm.count) == 48
    np.testing.assert_allclose(norm.mean.numpy(), every.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(norm.var.numpy(), every.var(axis=0), rtol=1e-12, atol=0)
    out = norm(torch.tensor(every, dtype=torch.float32).reshape(-1, 2, 3)).double()
    np.testing.assert_allclose(out.mean(0).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(0, unbiased=False).numpy(), 1.0, atol=1e-5)
    far = norm(torch.full((1, 2, 3), 1e6))
    assert torch.all(far == 10.0)  # clipped at 10 std


def test_loaded_statistics_replace_the_ones_a_forward_pass_used() -> None:
    """The forward pass keeps mean and std between updates; loading statistics (as a resumed
    or reset policy does) must still take effect, in float32 and float64 alike."""
    space = gym.spaces.Box(-np.inf, np.inf, (3,))
    trained = RunningObsNorm(space)
    trained.update(np.random.default_rng(1).normal(5.0, 3.0, size=(100, 3)))
    x = torch.tensor([[5.0, 8.0, -1.0]])
    expected = (x.double() - trained.mean) / torch.sqrt(trained.var + trained.eps)
    for dtype in (torch.float32, torch.float64):
        fresh = RunningObsNorm(space)
        torch.testing.assert_close(fresh(x.to(dtype)), x.to(dtype))  # identity, now kept
        fresh.load_state_dict(trained.state_dict())
        torch.testing.assert_close(fresh(x.to(dtype)), expected.to(dtype))
        assert torch.equal(fresh(x.to(dtype)), trained(x.to(dtype)))


def test_trpo_normalizes_with_the_rollouts_it_trained_on_and_saves_them(tmp_path) -> None:
    torch.set_num_threads(1)
    venv = make_vec_env(EnvSpec("Hopper-v5"), 2, 0)
    try:
        agent = make_agent(PolicyConfig(n_steps=128), venv, "mujoco", seed=0)  # the default
        norm = agent.policy.features_extractor
        assert isinstance(norm, RunningObsNorm)
        agent.learn(256)  # one update on 2 x 128 steps
        first = agent.rollout_buffer.observations.reshape(-1, 11).astype(np.float64)
        assert float(norm.count) == 256
        np.testing.assert_allclose(norm.mean.numpy(), first.mean(0), atol=1e-6)
        # The policy acted on raw-scale inputs of the env (Hopper's velocities reach ~10)
        # and now sees them normalized.
        feats = norm(torch.as_tensor(first, dtype=torch.float32))
        np.testing.assert_allclose(feats.std(0, unbiased=False).numpy(), 1.0, atol=1e-3)
        agent.learn(256, reset_num_timesteps=False)
        second = agent.rollout_buffer.observations.reshape(-1, 11).astype(np.float64)
        both = np.concatenate([first, second])
        assert float(norm.count) == 512
        np.testing.assert_allclose(norm.var.numpy(), both.var(0), rtol=1e-6)
        agent.save(tmp_path / "agent.zip")
        loaded = load_agent("trpo", str(tmp_path / "agent.zip"))
        for key, value in obs_norm_state(agent.policy.state_dict()).items():
            assert torch.equal(loaded.policy.state_dict()[key], value)
        obs = torch.as_tensor(second[:8], dtype=torch.float32)
        with torch.no_grad():
            assert torch.equal(
                loaded.policy.get_distribution(obs).distribution.mean,
                agent.policy.get_distribution(obs).distribution.mean,
            )
    finally:
        venv.close()


def test_turned_off_the_policy_sees_raw_observations() -> None:
    venv = make_vec_env(EnvSpec("Hopper-v5"), 1, 0)
    try:
        agent = make_agent(PolicyConfig(n_steps=128, normalize_obs=False), venv, "mujoco", 0)
        assert not isinstance(agent.policy.features_extractor, RunningObsNorm)
        assert obs_norm_state(agent.policy.state_dict()) == {}
    finally:
        venv.close()


def test_a2c_on_pixels_keeps_its_own_scaling() -> None:
    """The default (on) is a TRPO setting: A2C's CNN policy sees pixels as SB3 scales them."""
    assert normalizes_obs(PolicyConfig(), "trpo") and not normalizes_obs(PolicyConfig(), "a2c")
    venv = make_vec_env(EnvSpec("ALE/Pong-v5"), 1, 0)
    try:
        agent = make_agent(PolicyConfig(n_steps=5), venv, "atari", seed=0)
        assert isinstance(agent, A2C)
        assert obs_norm_state(agent.policy.state_dict()) == {}
    finally:
        venv.close()


@pytest.mark.slow
def test_a_policy_reset_keeps_the_statistics(tmp_path) -> None:
    cfg = tiny_hopper(
        steps=1024, labels=16, seed=3, round_steps=512, policy_reset_at=0.5, run_dir=tmp_path
    )
    cfg = dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, normalize_obs=True))
    loop = PreferenceLoop(cfg, tmp_path, Console(quiet=True))
    seen: dict[str, dict[str, torch.Tensor]] = {}
    original_reset = loop.reset_policy

    def watched_reset() -> None:
        seen["before"] = obs_norm_state(loop.agent.policy.state_dict())
        original_reset()
        seen["after"] = obs_norm_state(loop.agent.policy.state_dict())
        seen["weights"] = {k: v.clone() for k, v in loop.agent.policy.state_dict().items()}

    loop.reset_policy = watched_reset
    try:
        loop.start()
        initial = {k: v.clone() for k, v in loop.agent.policy.state_dict().items()}
        loop.run_round()  # 512 steps = half of --steps: trains, then resets
        assert seen["before"] and seen["before"].keys() == seen["after"].keys()
        for key, value in seen["before"].items():
            assert torch.equal(seen["after"][key], value)
        assert float(seen["after"]["features_extractor.count"]) == 512
        # every learned weight is fresh again
        learned = [k for k in initial if k not in seen["after"]]
        assert learned and all(torch.equal(seen["weights"][k], initial[k]) for k in learned)
    finally:
        loop.close()
