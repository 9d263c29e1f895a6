"""Planning in a new MDP under the IRD posterior: proxy, posterior mean, risk-averse, CVaR.

Given posterior samples ``w_1..w_n`` (equally weighted, ``(n, d)``) and a trajectory's feature
counts ``phi`` (``(d,)``), the risk-averse planners maximise a worst case:

- trajectory-wide max-min: ``min_i w_i^T (phi - b)``;
- per-feature max-min: ``sum_k min_i w_ik (phi_k - b_k)`` (each feature's weight is taken at
  its worst independently: more pessimistic, and linear in ``phi`` when ``b = 0``);
- CVaR at level ``alpha``: the mean of ``w_i^T (phi - b)`` over the worst ``alpha`` fraction.

Rewards are defined only up to a shift, so a per-sample constant (here the weight on the
constant feature, which the posterior cannot pin down) changes which sample is "worst". The
baseline ``b`` fixes that: ``b = phi~(w~)``, the feature counts of the proxy-optimal trajectory
in the training MDP, so every sample scores a trajectory *relative to the behaviour the
designer approved*; the ``constant`` feature then cancels. Without a baseline, ``b = 0``.

Rewards are defined up to a positive scale too, and the posterior pins scale down only
weakly (it comes mostly from the prior), so the worst case tends to be a sample that merely
has large weights everywhere. :func:`normalize_scale` fixes units per sample: each is
divided by the spread of its rewards over reference states (the training map's cells), so
weights are measured against how much reward varied across what training showed; a
feature training never showed then carries relatively more uncertainty, as it should.

Each objective is ``min over v in A of v^T (phi - b)`` for a polytope ``A`` of reward vectors
(the samples' convex hull, their bounding box, or CVaR's capped mixtures), hence concave in
``phi``. We solve ``max over trajectories`` by fictitious play between a planner that
best-responds with value iteration to the adversary's average reward and an adversary that
best-responds to the planner's average feature counts; the plan returned is the best
*deterministic* trajectory among those best responses and the optimal trajectories of a
subset of posterior samples, scored exactly by the objective. (The exact max-min over
stochastic policies is a linear program; a single path is what the agent executes.)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np

from rlkit.rewards.ird.linalg import matmul
from rlkit.rewards.ird.mdp import TabularMDP
from rlkit.rewards.ird.value_iteration import Plans, value_iteration

Objective = Literal["trajectory", "feature", "cvar"]

# planner name -> (objective, uses the baseline); "proxy" and "mean" are plain linear planners.
RISK_AVERSE: dict[str, tuple[Objective, bool]] = {
    "maxmin-traj": ("trajectory", False),
    "maxmin-traj-base": ("trajectory", True),
    "maxmin-feat": ("feature", False),
    "maxmin-feat-base": ("feature", True),
    "cvar": ("cvar", True),
}
PLANNERS: tuple[str, ...] = ("proxy", "mean", *RISK_AVERSE)


@dataclasses.dataclass(frozen=True)
class Plan:
    """One deterministic plan.

    Attributes:
        path: states visited, start first, shape ``(T + 1,)``, int64.
        feature_counts: sum of the features of the states entered, shape ``(d,)``.
    """

    path: np.ndarray
    feature_counts: np.ndarray


def robust_values(
    counts: np.ndarray,
    samples: np.ndarray,
    objective: Objective,
    baseline: np.ndarray | None = None,
    alpha: float = 0.1,
) -> np.ndarray:
    """The risk-averse objective of each row of ``counts`` (``(m, d)``), shape ``(m,)``."""
    x = counts - (0.0 if baseline is None else baseline)
    if objective == "trajectory":
        return matmul(x, samples.T).min(axis=1)
    if objective == "feature":
        lo, hi = samples.min(axis=0), samples.max(axis=0)
        return np.minimum(x * lo, x * hi).sum(axis=1)
    if objective == "cvar":
        k = _tail_size(alpha, samples.shape[0])
        return np.partition(matmul(x, samples.T), k - 1, axis=1)[:, :k].mean(axis=1)
    raise ValueError(f"unknown objective {objective!r}")


def _tail_size(alpha: float, n: int) -> int:
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"CVaR alpha must lie in (0, 1], got {alpha}")
    return max(1, math.ceil(alpha * n))


def _worst_reward(
    mu: np.ndarray,
    samples: np.ndarray,
    objective: Objective,
    baseline: np.ndarray | None,
    alpha: float,
) -> np.ndarray:
    """The adversary's best response to feature counts ``mu`` (``(d,)``): a reward ``(d,)``."""
    x = mu - (0.0 if baseline is None else baseline)
    if objective == "trajectory":
        return samples[np.argmin(matmul(samples, x))]
    if objective == "feature":
        return np.where(x >= 0, samples.min(axis=0), samples.max(axis=0))
    k = _tail_size(alpha, samples.shape[0])
    return samples[np.argpartition(matmul(samples, x), k - 1)[:k]].mean(axis=0)


def normalize_scale(samples: np.ndarray, reference_features: np.ndarray) -> np.ndarray:
    """Each sample divided by the std of its rewards over reference states.

    ``samples``: ``(n, d)``; ``reference_features``: features of the reference states (e.g.
    every training cell), ``(M, d)``. Returns ``(n, d)``; the scale is floored at 1e-8 so a
    sample that is flat on the reference states stays finite.
    """
    scale = matmul(samples, np.asarray(reference_features, dtype=np.float64).T).std(axis=1)
    return samples / np.maximum(scale, 1e-8)[:, None]


def plan_linear(mdp: TabularMDP, w: np.ndarray) -> Plan:
    """The optimal plan for one linear reward ``w`` (``(d,)``)."""
    plans = value_iteration(mdp, np.asarray(w, float)[None], return_paths=True)
    return Plan(plans.paths[0], plans.feature_counts[0])  # type: ignore[index]


def candidate_plans(
    mdp: TabularMDP, samples: np.ndarray, n: int, rng: np.random.Generator
) -> Plans:
    """Optimal plans of the posterior mean and of ``n`` random posterior samples (one batch)."""
    idx = rng.choice(samples.shape[0], size=min(n, samples.shape[0]), replace=False)
    rewards = np.concatenate([samples.mean(axis=0, keepdims=True), samples[idx]])
    return value_iteration(mdp, rewards, return_paths=True)


def plan_risk_averse(
    mdp: TabularMDP,
    samples: np.ndarray,
    objective: Objective,
    baseline: np.ndarray | None = None,
    alpha: float = 0.1,
    n_iters: int = 20,
    candidates: Plans | None = None,
    rng: np.random.Generator | None = None,
    n_candidates: int = 64,
) -> Plan:
    """The best deterministic plan for a risk-averse ``objective`` (see the module doc).

    ``samples``: equally weighted posterior samples, ``(n, d)``. ``candidates``: plans to
    consider besides the fictitious-play iterates (default: :func:`candidate_plans` with
    ``n_candidates`` samples, which needs ``rng``).
    """
    if candidates is None:
        if rng is None:
            raise ValueError("plan_risk_averse needs rng to draw candidate samples")
        candidates = candidate_plans(mdp, samples, n_candidates, rng)
    return _fictitious_play(mdp, samples, [(objective, baseline)], alpha, n_iters, candidates)[0]


def _fictitious_play(
    mdp: TabularMDP,
    samples: np.ndarray,
    specs: list[tuple[Objective, np.ndarray | None]],
    alpha: float,
    n_iters: int,
    candidates: Plans,
) -> list[Plan]:
    """Fictitious play for several (objective, baseline) games in lockstep: one batched value
    iteration per round serves them all."""
    g = len(specs)
    counts, paths = [candidates.feature_counts], [candidates.paths]
    mu = np.repeat(candidates.feature_counts[:1], g, axis=0)  # (g, d): the mean's plan first
    v_sum = np.zeros((g, samples.shape[1]))
    for k in range(n_iters):
        for j, (objective, baseline) in enumerate(specs):
            v_sum[j] += _worst_reward(mu[j], samples, objective, baseline, alpha)
        reply = value_iteration(mdp, v_sum / (k + 1), return_paths=True)
        counts.append(reply.feature_counts)
        paths.append(reply.paths)
        mu = mu + (reply.feature_counts - mu) / (k + 2)
    all_counts, all_paths = np.concatenate(counts), np.concatenate(paths)  # type: ignore[arg-type]
    plans = []
    for objective, baseline in specs:
        best = int(np.argmax(robust_values(all_counts, samples, objective, baseline, alpha)))
        plans.append(Plan(all_paths[best], all_counts[best]))
    return plans


def plan_all(
    mdp: TabularMDP,
    samples: np.ndarray,
    proxy: np.ndarray,
    baseline: np.ndarray,
    rng: np.random.Generator,
    planners: tuple[str, ...] = PLANNERS,
    alpha: float = 0.1,
    n_iters: int = 20,
    n_candidates: int = 64,
    scale_reference: np.ndarray | None = None,
) -> dict[str, Plan]:
    """Every named planner's plan in ``mdp``; the risk-averse ones share one candidate batch
    and run their fictitious play together (every game's iterates are candidates for all).

    ``proxy``: the designer's proxy ``w~`` (``(d,)``); ``baseline``: ``phi~(w~)`` (``(d,)``).
    ``scale_reference``: if given (``(M, d)`` reference state features), the risk-averse
    planners see :func:`normalize_scale`'d samples; the mean planner always plans with the
    raw posterior mean.
    """
    unknown = sorted(set(planners) - set(PLANNERS))
    if unknown:
        raise ValueError(f"unknown planners {unknown}; choose from {', '.join(PLANNERS)}")
    out: dict[str, Plan] = {}
    if "proxy" in planners:
        out["proxy"] = plan_linear(mdp, proxy)
    if "mean" in planners:
        out["mean"] = plan_linear(mdp, samples.mean(axis=0))
    robust = [name for name in planners if name in RISK_AVERSE]
    if robust:
        if scale_reference is not None:
            samples = normalize_scale(samples, scale_reference)
        candidates = candidate_plans(mdp, samples, n_candidates, rng)
        specs = [(RISK_AVERSE[n][0], baseline if RISK_AVERSE[n][1] else None) for n in robust]
        plans = _fictitious_play(mdp, samples, specs, alpha, n_iters, candidates)
        out.update(zip(robust, plans, strict=True))
    return {name: out[name] for name in planners}
