"""Inverse Reward Design (Hadfield-Menell et al., NeurIPS 2017).

A designer's proxy reward ``w~`` is evidence about the true reward ``w*``:
``P(w~ | w*, M~) ∝ exp(beta w*^T phi~(w~))``. This package holds batched value iteration
(:mod:`.value_iteration`), the posterior with its normalizers and samplers (:mod:`.posterior`),
risk-averse planners (:mod:`.planners`), an open-set classifier for latent features
(:mod:`.classifier`), the posterior for any env with a linear feature map estimated from
rollouts (:mod:`.rollouts`), and the Lavaland experiment (:mod:`.lavaland_eval`).
"""

from rlkit.rewards.ird.planners import (
    PLANNERS,
    Plan,
    normalize_scale,
    plan_all,
    plan_linear,
    plan_risk_averse,
)
from rlkit.rewards.ird.posterior import (
    EnumeratedZ,
    GaussianPrior,
    MaxEntZ,
    Posterior,
    exact_posterior,
    exact_z,
    log_likelihood,
    maxent_z,
    sample_posterior,
    sample_z,
)
from rlkit.rewards.ird.rollouts import (
    LinearIRD,
    greedy_linear_policy,
    linear_ird_posterior,
    posterior_reward_fn,
)
from rlkit.rewards.ird.value_iteration import Plans, log_partition, value_iteration

__all__ = [
    "PLANNERS",
    "EnumeratedZ",
    "GaussianPrior",
    "LinearIRD",
    "MaxEntZ",
    "Plan",
    "Plans",
    "Posterior",
    "exact_posterior",
    "exact_z",
    "greedy_linear_policy",
    "linear_ird_posterior",
    "log_likelihood",
    "log_partition",
    "maxent_z",
    "normalize_scale",
    "plan_all",
    "plan_linear",
    "plan_risk_averse",
    "posterior_reward_fn",
    "sample_posterior",
    "sample_z",
    "value_iteration",
]
