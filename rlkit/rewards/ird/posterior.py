"""The IRD posterior over the true reward ``w*`` given a designer's proxy ``w~``.

Observation model (Hadfield-Menell et al. 2017, eq. 3): the designer picks ``w~`` so that its
optimal behaviour in the training MDP ``M~`` looks good under ``w*``::

    P(w~ | w*, M~) = exp(beta * w*^T phi~(w~)) / Z(w*),
    Z(w) = integral of exp(beta * w^T phi~(w')) over proxies w' (under the proxy prior),

where ``phi~(w)`` are the expected feature counts of the ``w``-optimal policy in ``M~``. The
posterior is ``P(w* | w~) ∝ prior(w*) P(w~ | w*)``. ``Z`` has no closed form; three
approximations implement :class:`Normalizer`:

- :func:`sample_z` (Sample-Z): Monte Carlo over proxies drawn from the prior, solved in
  ``M~`` all at once by batched value iteration;
- :func:`maxent_z` (MaxEnt-Z): the maximum-entropy IRL partition function, a sum over every
  trajectory instead of over proxy-optimal ones, exact by soft value iteration;
- :func:`exact_z`: exact enumeration when proxies live in a small discrete space.

:func:`sample_posterior` draws posterior samples by parallel random-walk Metropolis (MCMC)
or by importance sampling from the prior; :func:`exact_posterior` enumerates a discrete
space of true rewards.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, Protocol

import numpy as np

from rlkit.rewards.ird.linalg import matmul
from rlkit.rewards.ird.mdp import TabularMDP
from rlkit.rewards.ird.value_iteration import log_partition, value_iteration


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


@dataclasses.dataclass(frozen=True)
class GaussianPrior:
    """Independent Gaussian prior over reward weights.

    Attributes:
        mean: prior mean, shape ``(d,)``.
        std: prior standard deviation per weight, shape ``(d,)``, all > 0.
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def isotropic(cls, d: int, std: float = 1.0) -> GaussianPrior:
        """Zero mean and standard deviation ``std`` in each of ``d`` dimensions."""
        return cls(mean=np.zeros(d), std=np.full(d, float(std)))

    def __post_init__(self) -> None:
        if self.mean.shape != self.std.shape or self.mean.ndim != 1 or (self.std <= 0).any():
            raise ValueError("mean and std must be (d,) arrays with std > 0")

    @property
    def dim(self) -> int:
        """Number of reward weights ``d``."""
        return self.mean.shape[0]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` draws, shape ``(n, d)``."""
        return self.mean + self.std * rng.standard_normal((n, self.dim))

    def log_prob(self, w: np.ndarray) -> np.ndarray:
        """Log density (up to a constant) of each row of ``w`` (``(N, d)``), shape ``(N,)``."""
        return -0.5 * np.sum(((w - self.mean) / self.std) ** 2, axis=-1)


class Normalizer(Protocol):
    """``log Z(w)`` for a batch of reward vectors ``w`` (``(N, d)``), shape ``(N,)``.

    ``beta`` is the designer rationality the normalizer was built with; the likelihood uses
    the same one.
    """

    beta: float

    def log_z(self, w: np.ndarray) -> np.ndarray:
        """``log Z(w)``: ``(N, d) -> (N,)``."""


@dataclasses.dataclass(frozen=True)
class EnumeratedZ:
    """``Z(w) = sum_k p_k exp(beta w^T c_k)`` over a finite set of proxies.

    Sample-Z is this with proxies drawn from the prior (``p_k = 1/K``); exact enumeration is
    this over a whole discrete proxy space with its prior probabilities.

    Attributes:
        proxy_counts: feature counts ``c_k = phi~(w'_k)`` in the training MDP, shape ``(K, d)``.
        log_weights: ``log p_k``, shape ``(K,)``, logsumexp 0.
        beta: designer rationality (inverse temperature).
    """

    proxy_counts: np.ndarray
    log_weights: np.ndarray
    beta: float

    def log_z(self, w: np.ndarray) -> np.ndarray:
        """``log Z(w) = logsumexp_k(log p_k + beta w^T c_k)``: ``(N, d) -> (N,)``."""
        logits = self.beta * matmul(w, self.proxy_counts.T) + self.log_weights
        return _logsumexp(logits, axis=1)


@dataclasses.dataclass(frozen=True)
class MaxEntZ:
    """MaxEnt-Z: ``Z(w) = sum over all trajectories xi of exp(beta w^T phi(xi))`` in ``mdp``."""

    mdp: TabularMDP
    beta: float

    def log_z(self, w: np.ndarray) -> np.ndarray:
        """``log Z(w)`` by soft value iteration in ``mdp``: ``(N, d) -> (N,)``."""
        return log_partition(self.mdp, w, self.beta)


def sample_z(
    mdp: TabularMDP, prior: GaussianPrior, n: int, beta: float, rng: np.random.Generator
) -> EnumeratedZ:
    """Sample-Z: ``n`` proxies from ``prior``, each solved in the training ``mdp``."""
    if n < 1:
        raise ValueError(f"Sample-Z needs n >= 1 proxy samples, got {n}")
    counts = value_iteration(mdp, prior.sample(n, rng)).feature_counts
    return _merged(counts, np.full(n, -math.log(n)), beta)


def maxent_z(mdp: TabularMDP, beta: float) -> MaxEntZ:
    """MaxEnt-Z over the training ``mdp``."""
    return MaxEntZ(mdp, beta)


def exact_z(
    mdp: TabularMDP, proxy_space: np.ndarray, beta: float, probs: np.ndarray | None = None
) -> EnumeratedZ:
    """Exact ``Z`` when proxies range over ``proxy_space`` (``(K, d)``) with prior ``probs``
    (uniform if None)."""
    k = proxy_space.shape[0]
    p = np.full(k, 1.0 / k) if probs is None else np.asarray(probs, float) / np.sum(probs)
    with np.errstate(divide="ignore"):
        log_p = np.log(p)
    return _merged(value_iteration(mdp, proxy_space).feature_counts, log_p, beta)


def _merged(counts: np.ndarray, log_weights: np.ndarray, beta: float) -> EnumeratedZ:
    """An :class:`EnumeratedZ` with identical count rows merged (weights summed).

    Many proxies share an optimal trajectory, so this shrinks every ``log_z`` call, e.g.
    10,000 sampled proxies on a 25x25 map to a few hundred distinct rows.
    """
    unique, inverse = np.unique(counts, axis=0, return_inverse=True)
    merged = np.full(len(unique), -np.inf)
    np.logaddexp.at(merged, inverse.reshape(-1), log_weights)
    return EnumeratedZ(unique, merged, beta)


def log_likelihood(w: np.ndarray, proxy_counts: np.ndarray, normalizer: Normalizer) -> np.ndarray:
    """``log P(w~ | w)`` for each row of ``w`` (``(N, d)``), given ``phi~(w~)`` (``(d,)``)."""
    return normalizer.beta * matmul(w, proxy_counts) - normalizer.log_z(w)


@dataclasses.dataclass(frozen=True)
class Posterior:
    """Weighted samples from the posterior over ``w*``.

    Attributes:
        samples: reward vectors, shape ``(n, d)``.
        weights: their normalized weights, shape ``(n,)`` (uniform for MCMC).
    """

    samples: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        if self.samples.ndim != 2 or self.weights.shape != (self.samples.shape[0],):
            raise ValueError("samples must be (n, d) and weights (n,)")
        if not np.isclose(self.weights.sum(), 1.0) or (self.weights < 0).any():
            raise ValueError("weights must be non-negative and sum to 1")

    def mean(self) -> np.ndarray:
        """Posterior mean, shape ``(d,)``."""
        return matmul(self.weights, self.samples)

    def std(self) -> np.ndarray:
        """Posterior standard deviation per weight, shape ``(d,)``."""
        return np.sqrt(matmul(self.weights, (self.samples - self.mean()) ** 2))

    def effective_sample_size(self) -> float:
        """Kish's effective sample size of the weights, ``1 / sum(w_i^2)`` (``n`` when uniform)."""
        return float(1.0 / np.sum(self.weights**2))

    def resample(self, n: int, rng: np.random.Generator) -> Posterior:
        """``n`` equally weighted samples drawn (with replacement) by weight."""
        idx = rng.choice(len(self.weights), size=n, p=self.weights)
        return Posterior(self.samples[idx], np.full(n, 1.0 / n))


def _log_target(
    w: np.ndarray, proxy_counts: np.ndarray, normalizer: Normalizer, prior: GaussianPrior
) -> np.ndarray:
    return prior.log_prob(w) + log_likelihood(w, proxy_counts, normalizer)


def sample_posterior(
    proxy_counts: np.ndarray,
    normalizer: Normalizer,
    prior: GaussianPrior,
    n_samples: int,
    rng: np.random.Generator,
    method: Literal["mcmc", "importance"] = "mcmc",
    n_chains: int = 100,
    burn_in: int = 300,
    thin: int = 2,
) -> Posterior:
    """Samples from ``P(w* | w~)``, given ``proxy_counts = phi~(w~)`` (``(d,)``).

    ``method="mcmc"``: ``n_chains`` random-walk Metropolis chains run in lockstep (so each
    step evaluates ``Z`` for all chains in one batch), started from the prior, with the step
    size adapted during ``burn_in`` towards a 30% acceptance rate; every ``thin``-th state
    after burn-in is kept until ``n_samples`` are collected. Equal weights.

    ``method="importance"``: ``n_samples`` prior draws weighted by the likelihood; check
    :meth:`Posterior.effective_sample_size` (a sharp likelihood leaves few effective samples).
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if method == "importance":
        w = prior.sample(n_samples, rng)
        logw = _log_target(w, proxy_counts, normalizer, prior) - prior.log_prob(w)
        weights = np.exp(logw - logw.max())
        return Posterior(w, weights / weights.sum())
    if method != "mcmc":
        raise ValueError(f"method must be 'mcmc' or 'importance', got {method!r}")
    chains = min(n_chains, n_samples)
    keep_per_chain = math.ceil(n_samples / chains)
    state = prior.sample(chains, rng)
    logp = _log_target(state, proxy_counts, normalizer, prior)
    step = 0.5
    kept: list[np.ndarray] = []
    accepted = 0
    for it in range(burn_in + keep_per_chain * thin):
        proposal = state + step * prior.std * rng.standard_normal(state.shape)
        logp_new = _log_target(proposal, proxy_counts, normalizer, prior)
        accept = np.log(rng.random(chains)) < logp_new - logp
        state = np.where(accept[:, None], proposal, state)
        logp = np.where(accept, logp_new, logp)
        accepted += int(accept.sum())
        if it < burn_in and (it + 1) % 20 == 0:
            step *= math.exp(accepted / (20 * chains) - 0.3)
            accepted = 0
        if it >= burn_in and (it - burn_in + 1) % thin == 0:
            kept.append(state.copy())
    samples = np.stack(kept, axis=1).reshape(-1, state.shape[1])[:n_samples]
    return Posterior(samples, np.full(len(samples), 1.0 / len(samples)))


def exact_posterior(
    space: np.ndarray,
    proxy_counts: np.ndarray,
    normalizer: Normalizer,
    probs: np.ndarray | None = None,
) -> np.ndarray:
    """``P(w* | w~)`` for every ``w*`` in a discrete ``space`` (``(M, d)``), shape ``(M,)``.

    ``probs`` is the prior over ``space`` (uniform if None).
    """
    log_p = log_likelihood(space, proxy_counts, normalizer)
    if probs is not None:
        with np.errstate(divide="ignore"):
            log_p = log_p + np.log(np.asarray(probs, float))
    p = np.exp(log_p - log_p.max())
    return p / p.sum()
