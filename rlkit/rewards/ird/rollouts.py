"""IRD beyond gridworlds: the posterior for any Gymnasium env with a linear feature map.

Where no tabular model exists, ``phi~(w)`` (a ``w``-optimal policy's expected feature counts in
the training env) is estimated from rollouts of a simple policy for ``w``. Sample-Z then runs
over a small set of candidate proxies drawn from the prior, each with its own policy:

1. ``policy_factory(w)`` gives a policy for each candidate ``w'_k`` and for the proxy ``w~``
   (default :func:`greedy_linear_policy`: one-step greedy on ``w^T phi(s, a)`` over a finite
   action set);
2. ``c_k`` and ``c~`` are mean feature sums over ``n_rollouts`` episodes of ``horizon`` steps;
3. ``P(w* | w~) ∝ prior(w*) exp(beta w*^T c~) / mean_k exp(beta w*^T c_k)``, sampled by MCMC
   or importance sampling.

:func:`posterior_reward_fn` turns the posterior into a reward ``r(obs_batch, act_batch)``
(its mean, or a risk-averse minimum or low quantile over samples), usable as a prior term
for a learned reward such as the preference-learning ensemble.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Literal

import gymnasium as gym
import numpy as np

from rlkit.rewards.ird.linalg import matmul
from rlkit.rewards.ird.posterior import EnumeratedZ, GaussianPrior, Posterior, sample_posterior

# phi(obs_batch (B, *obs_shape), act_batch (B, *act_shape)) -> features (B, d)
FeatureMap = Callable[[np.ndarray, np.ndarray], np.ndarray]
Policy = Callable[[np.ndarray], np.ndarray]


def greedy_linear_policy(
    w: np.ndarray,
    phi: FeatureMap,
    actions: np.ndarray,
    rng: np.random.Generator,
    epsilon: float = 0.0,
) -> Policy:
    """Pick ``argmax_a w^T phi(obs, a)`` over the candidate ``actions`` (``(K, *act_shape)``).

    With probability ``epsilon`` a random candidate instead (so rollouts vary).
    """

    def act(obs: np.ndarray) -> np.ndarray:
        if epsilon > 0 and rng.random() < epsilon:
            return actions[rng.integers(len(actions))]
        obs_batch = np.repeat(np.asarray(obs)[None], len(actions), axis=0)
        return actions[int(np.argmax(matmul(phi(obs_batch, actions), w)))]

    return act


def rollout_feature_counts(
    env: gym.Env,
    policy: Policy,
    phi: FeatureMap,
    n_rollouts: int,
    horizon: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Mean over ``n_rollouts`` episodes of ``sum_t phi(s_t, a_t)``, shape ``(d,)``.

    Each episode runs at most ``horizon`` steps (fewer if the env ends it); resets are seeded
    from ``rng``.
    """
    totals = []
    for _ in range(n_rollouts):
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        total = 0.0
        for _ in range(horizon):
            action = policy(obs)
            total = total + phi(np.asarray(obs)[None], np.asarray(action)[None])[0]
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
        totals.append(np.asarray(total, dtype=np.float64))
    return np.mean(totals, axis=0)


@dataclasses.dataclass(frozen=True)
class LinearIRD:
    """The rollout-based IRD posterior and the feature counts it was built from.

    Attributes:
        posterior: weighted samples of ``w*``, ``(n, d)``.
        proxy_counts: ``phi~(w~)``, the proxy policy's mean feature sums, ``(d,)``.
        candidate_counts: each candidate proxy's mean feature sums, ``(K, d)``.
        horizon: the rollout length the counts sum over.
    """

    posterior: Posterior
    proxy_counts: np.ndarray
    candidate_counts: np.ndarray
    horizon: int

    def step_baseline(self) -> np.ndarray:
        """The proxy policy's mean features per step, ``(d,)``: a baseline for
        :func:`posterior_reward_fn` (an upper bound on the steps if episodes end early)."""
        return self.proxy_counts / self.horizon


def linear_ird_posterior(
    env: gym.Env,
    phi: FeatureMap,
    proxy: np.ndarray,
    prior: GaussianPrior,
    policy_factory: Callable[[np.ndarray], Policy],
    rng: np.random.Generator,
    beta: float = 1.0,
    n_candidates: int = 16,
    n_rollouts: int = 2,
    horizon: int = 100,
    n_samples: int = 1000,
    method: Literal["mcmc", "importance"] = "mcmc",
) -> LinearIRD:
    """The IRD posterior over ``w*`` from rollouts in ``env`` (see the module doc).

    ``proxy``: the designer's ``w~`` (``(d,)``); ``policy_factory(w)``: a policy for reward
    weights ``w`` (e.g. ``lambda w: greedy_linear_policy(w, phi, actions, rng)``).
    """
    proxy = np.asarray(proxy, dtype=np.float64)
    if proxy.shape != (prior.dim,):
        raise ValueError(f"proxy must have shape ({prior.dim},), got {proxy.shape}")
    if n_candidates < 1 or n_rollouts < 1 or horizon < 1:
        raise ValueError("n_candidates, n_rollouts and horizon must all be >= 1")

    def counts(w: np.ndarray) -> np.ndarray:
        return rollout_feature_counts(env, policy_factory(w), phi, n_rollouts, horizon, rng)

    proxy_counts = counts(proxy)
    candidates = np.stack([counts(w) for w in prior.sample(n_candidates, rng)])
    normalizer = EnumeratedZ(candidates, np.full(n_candidates, -math.log(n_candidates)), beta)
    post = sample_posterior(proxy_counts, normalizer, prior, n_samples, rng, method=method)
    return LinearIRD(post, proxy_counts, candidates, horizon)


def posterior_reward_fn(
    posterior: Posterior,
    phi: FeatureMap,
    mode: Literal["mean", "min", "quantile"] = "mean",
    quantile: float = 0.05,
    baseline: np.ndarray | None = None,
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A reward ``r(obs_batch, act_batch) -> (B,)`` from posterior samples of ``w*``.

    ``"mean"``: ``E[w]^T (phi - b)``; ``"min"``: the worst sample's ``w^T (phi - b)`` per
    transition (samples with weight below ``1e-3 / n`` are ignored, as importance sampling
    leaves many that carry no mass); ``"quantile"``: the weighted ``quantile`` of
    ``w^T (phi - b)`` (risk-averse for small ``quantile``).

    ``baseline`` ``b`` (``(d,)``, default 0): rewards are defined only up to a shift, and a
    weight the posterior cannot pin down (say, on a constant feature) would otherwise decide
    the worst case; with ``b = LinearIRD.step_baseline()`` each sample scores a transition
    relative to the proxy policy's average step.
    """
    if mode not in ("mean", "min", "quantile"):
        raise ValueError(f"mode must be 'mean', 'min' or 'quantile', got {mode!r}")
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must lie in [0, 1], got {quantile}")
    keep = posterior.weights >= 1e-3 / len(posterior.weights)
    samples = posterior.samples[keep]
    weights = posterior.weights[keep] / posterior.weights[keep].sum()
    mean = matmul(weights, samples)
    shift = 0.0 if baseline is None else np.asarray(baseline, dtype=np.float64)

    def reward(obs_batch: np.ndarray, act_batch: np.ndarray) -> np.ndarray:
        feats = phi(obs_batch, act_batch) - shift
        if mode == "mean":
            return matmul(feats, mean)
        values = matmul(feats, samples.T)  # (B, n)
        if mode == "min":
            return values.min(axis=1)
        order = np.argsort(values, axis=1)
        cum = np.cumsum(weights[order], axis=1)
        idx = np.minimum((cum < quantile).sum(axis=1), samples.shape[0] - 1)
        return np.take_along_axis(values, np.take_along_axis(order, idx[:, None], 1), 1)[:, 0]

    return reward
