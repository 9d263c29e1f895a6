"""The batched per-rollout learned reward equals the per-step one, returns and advantages too."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import DQN

from agents.presets import PolicyConfig, make_agent
from envs import EnvSpec, make_vec_env
from rlkit.rewards.ensemble import build_ensemble
from rlkit.rewards.rollout_reward import RolloutRewardCallback
from rlkit.rewards.vec_wrapper import LearnedRewardVecEnv


def _one_rollout(env_id: str, kind: str, n_envs: int, deferred: bool, cfg: PolicyConfig):
    venv = make_vec_env(EnvSpec(env_id, terminate_when_unhealthy=False), n_envs, seed=3)
    backbone = "nature_cnn" if kind == "atari" else "mlp"
    ens = build_ensemble(venv.observation_space, venv.action_space, 2, backbone, seed=1)
    with torch.no_grad():  # a non-trivial normalization, as after training
        ens.out_mean.copy_(torch.tensor([0.3, -0.2]))
        ens.out_std.copy_(torch.tensor([2.0, 0.5]))
    wrapped = LearnedRewardVecEnv(venv, ens, scale=0.7, deferred=deferred)
    agent = make_agent(cfg, wrapped, kind, seed=5)
    callback = RolloutRewardCallback(wrapped) if deferred else None
    agent.learn(agent.n_steps * n_envs, callback=callback)
    buf = agent.rollout_buffer
    return (
        buf.rewards.copy(),
        buf.returns.copy(),
        buf.advantages.copy(),
        callback,
        buf.episode_starts,
    )


def test_batched_rollout_reward_equals_per_step_on_mujoco_with_time_limit_bootstrap():
    # Hopper's 1000-step time limit falls inside the rollout (1024 steps per env): the
    # truncation bootstrap gamma * V(s_T) that SB3 adds to the reward must be kept.
    cfg = PolicyConfig(algo="trpo", n_steps=1024)
    per_step = _one_rollout("Hopper-v5", "mujoco", 2, deferred=False, cfg=cfg)
    batched = _one_rollout("Hopper-v5", "mujoco", 2, deferred=True, cfg=cfg)
    for a, b in zip(per_step[:3], batched[:3], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    assert per_step[4][1:].sum() == 2  # both episodes were truncated inside the rollout
    assert np.abs(per_step[0]).mean() > 0.1  # a real reward, not zeros
    assert batched[3].last_mean == pytest.approx(float(batched[0][:900].mean()), abs=0.05)


def test_batched_rollout_reward_equals_per_step_on_atari_images_and_discrete_actions():
    cfg = PolicyConfig(algo="a2c", n_steps=5)
    per_step = _one_rollout("ALE/Pong-v5", "atari", 2, deferred=False, cfg=cfg)
    batched = _one_rollout("ALE/Pong-v5", "atari", 2, deferred=True, cfg=cfg)
    for a, b in zip(per_step[:3], batched[:3], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    assert np.abs(per_step[0]).std() > 0


def test_rollout_reward_refuses_per_step_wrappers_and_off_policy_algorithms():
    venv = make_vec_env(EnvSpec("CartPole-v1"), 1, seed=0)
    ens = build_ensemble(venv.observation_space, venv.action_space, 2, "mlp", seed=0)
    with pytest.raises(ValueError, match="deferred=True"):
        RolloutRewardCallback(LearnedRewardVecEnv(venv, ens))
    wrapped = LearnedRewardVecEnv(venv, ens, deferred=True)
    with pytest.raises(TypeError, match="on-policy"):
        DQN("MlpPolicy", wrapped, learning_starts=0).learn(
            10, callback=RolloutRewardCallback(wrapped)
        )


def test_build_ensemble_picks_the_nature_cnn_for_images_and_the_mlp_for_vectors():
    """The default backbone ("auto") follows the observations, as the `rlkit prefs` default
    does: the Nature CNN for uint8 images, the MLP for anything else."""
    from rlkit.nn.basic import MLP, NatureCNN

    cases = [(gym.spaces.Box(0, 255, (84, 84, 4), np.uint8), NatureCNN),
             (gym.spaces.Box(-1, 1, (11,), np.float32), MLP)]  # fmt: skip
    for space, kind in cases:
        ens = build_ensemble(space, gym.spaces.Discrete(4), 2)
        assert isinstance(ens._templates[True].backbone, kind)
        obs = torch.as_tensor(np.stack([space.sample() for _ in range(3)]))
        assert ens.reward(obs, torch.zeros(3, dtype=torch.long)).shape == (3,)


def test_learned_episode_returns_are_summed_across_rollouts_and_restart_after_a_reset():
    venv = make_vec_env(EnvSpec("CartPole-v1"), 2, seed=0)
    ens = build_ensemble(venv.observation_space, venv.action_space, 2, "mlp", seed=0)
    env = LearnedRewardVecEnv(venv, ens, deferred=True)
    cb = RolloutRewardCallback(env, keep=3)
    assert np.isnan(cb.mean_episode_return)
    # rollout 1, 3 steps x 2 envs: env 1's episode ends at step 1, env 0's at the last step
    cb._add_episodes(np.array([[1.0, 10], [2, 20], [3, 30]]),
                     np.array([[1, 1], [0, 0], [0, 1]]), np.array([1, 0]))  # fmt: skip
    assert list(cb.episode_returns) == [30.0, 6.0]
    saved = cb.state_dict()
    # rollout 2: env 1's second episode (30 so far) ends at its last step; env 0's goes on
    cb._add_episodes(np.array([[4.0, 40], [5, 50]]), np.array([[1, 0], [0, 0]]), np.array([0, 1]))
    assert list(cb.episode_returns) == [30.0, 6.0, 120.0]
    # rollout 3 after a reset (a new learn): env 0's unfinished 9 is dropped; only 3 are kept
    cb._add_episodes(np.array([[7.0, 70]]), np.array([[1, 1]]), np.array([1, 0]))
    assert list(cb.episode_returns) == [6.0, 120.0, 7.0]
    assert cb.mean_episode_return == pytest.approx(133 / 3)
    # a checkpoint's state goes on alike; with the envs not kept, the unfinished sums go
    again = RolloutRewardCallback(env, keep=3)
    again.load_state_dict(saved)
    again._add_episodes(
        np.array([[4.0, 40], [5, 50]]), np.array([[1, 0], [0, 0]]), np.array([0, 1])
    )
    assert list(again.episode_returns) == [30.0, 6.0, 120.0]
    again.load_state_dict(saved, envs_kept=False)
    again._add_episodes(
        np.array([[4.0, 40], [5, 50]]), np.array([[1, 0], [0, 0]]), np.array([0, 1])
    )
    assert list(again.episode_returns) == [30.0, 6.0, 90.0]
