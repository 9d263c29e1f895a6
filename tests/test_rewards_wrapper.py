import numpy as np
import torch

from envs import EnvSpec, make_vec_env
from rlkit.rewards.ensemble import RewardEnsemble
from rlkit.rewards.vec_wrapper import LearnedRewardVecEnv


def test_learned_reward_replaces_reward_and_true_reward_stays_in_info():
    venv = make_vec_env(EnvSpec("HalfCheetah-v5"), n_envs=2, seed=0)
    ens = RewardEnsemble(venv.observation_space, venv.action_space, n_members=2, seed=0)
    wrapped = LearnedRewardVecEnv(venv, ens, scale=0.5)
    reference = make_vec_env(EnvSpec("HalfCheetah-v5"), n_envs=2, seed=0)
    obs = wrapped.reset()
    ref_obs = reference.reset()
    np.testing.assert_array_equal(obs, ref_obs)
    rng = np.random.default_rng(0)
    for _ in range(5):
        acts = rng.uniform(-1, 1, size=(2, 6)).astype(np.float32)
        expected = 0.5 * ens.reward(torch.as_tensor(obs), torch.as_tensor(acts)).numpy()
        obs, rews, _, infos = wrapped.step(acts)
        _, true_rews, _, _ = reference.step(acts)
        np.testing.assert_allclose(rews, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose([i["true_reward"] for i in infos], true_rews, rtol=1e-6)
        assert not np.allclose(rews, true_rews)
    # a rollout's worth at once, in chunks that do not divide it: the same rewards in order
    many_obs = rng.normal(size=(11, 17)).astype(np.float32)
    many_acts = rng.uniform(-1, 1, size=(11, 6)).astype(np.float32)
    whole = wrapped.learned_reward(many_obs, many_acts)
    np.testing.assert_allclose(
        wrapped.learned_reward(many_obs, many_acts, chunk=4), whole, rtol=1e-6
    )
    np.testing.assert_allclose(
        wrapped.learned_reward(many_obs, many_acts, chunk=1), whole, rtol=1e-6
    )


def test_ird_posterior_prior_is_added_to_the_learned_reward():
    from rlkit.rewards.ird.posterior import Posterior
    from rlkit.rewards.ird.rollouts import posterior_reward_fn

    venv = make_vec_env(EnvSpec("HalfCheetah-v5"), n_envs=2, seed=0)
    ens = RewardEnsemble(venv.observation_space, venv.action_space, n_members=2, seed=0)

    def phi(obs, acts):  # forward velocity and control cost
        return np.stack([obs[:, 8], -np.square(acts).sum(1)], axis=1)

    post = Posterior(samples=np.array([[1.0, 0.1], [3.0, 0.3]]), weights=np.array([0.5, 0.5]))
    prior = posterior_reward_fn(post, phi, mode="mean")
    wrapped = LearnedRewardVecEnv(venv, ens, scale=1.0, prior=prior, prior_weight=2.0)
    obs = wrapped.reset()
    acts = np.full((2, 6), 0.5, dtype=np.float32)
    learned = ens.reward(torch.as_tensor(obs), torch.as_tensor(acts)).numpy()
    _, rews, _, _ = wrapped.step(acts)
    expected = learned + 2.0 * (2.0 * obs[:, 8] - 0.2 * 1.5)
    np.testing.assert_allclose(rews, expected, rtol=1e-5, atol=1e-5)
