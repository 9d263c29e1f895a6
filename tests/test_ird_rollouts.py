"""IRD beyond gridworlds: the posterior from rollouts with a linear feature map phi(s, a)."""

import gymnasium as gym
import numpy as np
import pytest

from envs.lavaland import MOVES, LavalandEnv
from envs.lavaland_maps import PROXY_WEIGHTS, generate_map
from rlkit.rewards.ird.posterior import GaussianPrior, Posterior
from rlkit.rewards.ird.rollouts import (
    greedy_linear_policy,
    linear_ird_posterior,
    posterior_reward_fn,
    rollout_feature_counts,
)


def lavaland_phi(obs: np.ndarray, act: np.ndarray) -> np.ndarray:
    """Features [one-hot terrain, 1] of the cell each action moves into, shape (B, 5)."""
    b, h, w, _ = obs.shape
    pos = obs[..., 0].reshape(b, -1).argmax(axis=1)
    r = np.clip(pos // w + MOVES[act, 0], 0, h - 1)
    c = np.clip(pos % w + MOVES[act, 1], 0, w - 1)
    terrain = obs[np.arange(b), r, c, 1:5]
    return np.concatenate([terrain, np.ones((b, 1))], axis=1)


def test_lavaland_rollout_posterior_leaves_lava_uncertain_and_the_min_reward_fears_it():
    rng = np.random.default_rng(0)
    env = LavalandEnv(lavaland_map=generate_map(np.random.default_rng(3), 8))
    actions = np.arange(4)
    prior = GaussianPrior.isotropic(5)

    def policy_factory(w):
        return greedy_linear_policy(w, lavaland_phi, actions, rng, epsilon=0.1)

    counts = rollout_feature_counts(env, policy_factory(PROXY_WEIGHTS), lavaland_phi, 2, 24, rng)
    assert counts[:4].sum() == pytest.approx(24) and counts[3] == 0
    ird = linear_ird_posterior(
        env,
        lavaland_phi,
        PROXY_WEIGHTS,
        prior,
        policy_factory,
        rng,
        beta=3.0,
        n_candidates=12,
        n_rollouts=1,
        horizon=24,
        n_samples=800,
    )
    post, base = ird.posterior, ird.step_baseline()
    assert base[:4].sum() == pytest.approx(1.0)
    assert post.samples.shape == (800, 5)
    assert post.std()[3] > 0.85  # no lava in training: its weight keeps the prior
    # entering lava vs entering dirt, from the same state
    obs = np.zeros((2, 8, 8, 5))
    obs[:, 0, 0, 0] = 1
    obs[0, 0, 1, 1 + 3] = 1  # lava to the right
    obs[1, 0, 1, 1 + 0] = 1  # dirt to the right
    act = np.array([1, 1])
    mean_r = posterior_reward_fn(post, lavaland_phi, "mean", baseline=base)(obs, act)
    min_r = posterior_reward_fn(post, lavaland_phi, "min", baseline=base)(obs, act)
    q_r = posterior_reward_fn(post, lavaland_phi, "quantile", 0.05, base)(obs, act)
    raw_mean = posterior_reward_fn(post, lavaland_phi, "mean")(obs, act)
    # a baseline shifts every sample's reward by a constant per sample: the mean moves by one
    np.testing.assert_allclose(raw_mean - mean_r, post.mean() @ base)
    assert min_r.shape == (2,) and (min_r <= q_r + 1e-9).all() and (q_r <= mean_r).all()
    # risk aversion punishes the unknown terrain more than the known one
    assert mean_r[0] - min_r[0] > mean_r[1] - min_r[1] + 0.5
    assert min_r[0] < min_r[1] - 1.5


def test_mujoco_proxy_with_control_cost_is_evidence_for_a_control_cost():
    env = gym.make("HalfCheetah-v5")
    rng = np.random.default_rng(0)
    actions = np.concatenate([np.zeros((1, 6)), rng.uniform(-1, 1, (7, 6))]).astype(np.float32)

    def phi(obs, act):  # forward velocity, minus squared control
        return np.stack([obs[:, 8], -np.square(act).sum(axis=1)], axis=1)

    def policy_factory(w):
        return greedy_linear_policy(w, phi, actions, rng)

    post = linear_ird_posterior(
        env,
        phi,
        np.array([1.0, 0.5]),
        GaussianPrior.isotropic(2),
        policy_factory,
        rng,
        beta=1.0,
        n_candidates=8,
        n_rollouts=1,
        horizon=15,
        n_samples=1000,
    ).posterior
    assert post.mean()[1] > 0.3
    assert post.weights @ (post.samples[:, 1] > 0) > 0.8
    reward = posterior_reward_fn(post, phi, "quantile", 0.1)
    obs = np.zeros((2, 17))
    r = reward(obs, actions[:2])
    assert r.shape == (2,) and r[0] > r[1]  # no control beats some control
    env.close()


def test_bad_arguments_are_rejected():
    post = Posterior(np.zeros((2, 5)), np.array([0.5, 0.5]))
    with pytest.raises(ValueError):
        posterior_reward_fn(post, lavaland_phi, "median")
    with pytest.raises(ValueError):
        linear_ird_posterior(
            LavalandEnv(),
            lavaland_phi,
            np.zeros(3),
            GaussianPrior.isotropic(5),
            lambda w: None,
            np.random.default_rng(0),
        )


def test_the_readmes_ird_snippet_runs_as_written():
    """README.md's example of the rollout posterior as a reward, run on Lavaland: the names
    it imports exist where it says, and the reward it builds fears the unknown lava."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (block,) = [
        b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "linear_ird_posterior" in b
    ]
    env = LavalandEnv(lavaland_map=generate_map(np.random.default_rng(3), 8))
    names = {"env": env, "phi": lavaland_phi, "proxy_w": PROXY_WEIGHTS, "d": 5,
             "actions": np.arange(4), "rng": np.random.default_rng(0)}  # fmt: skip
    exec(block, names)
    obs = np.zeros((2, 8, 8, 5))
    obs[:, 0, 0, 0] = 1
    obs[0, 0, 1, 1 + 3] = 1  # lava to the right
    obs[1, 0, 1, 1 + 0] = 1  # dirt to the right
    r = names["reward"](obs, np.array([1, 1]))
    assert r.shape == (2,) and r[0] < r[1]
    # the env ids the README names resolve once `envs` is named in the id
    lava = gym.make("envs:rlkit/Lavaland-v0")
    lava.reset(seed=0)
    assert type(lava.unwrapped.tabular()).__name__ == "GridMDP"
