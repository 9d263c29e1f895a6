"""TRPO (sb3-contrib) with an optional entropy bonus in the surrogate objective and optional
observation normalization (:mod:`agents.obs_norm`)."""

from __future__ import annotations

from typing import Any, Self

import torch as th
from sb3_contrib import TRPO
from stable_baselines3.common.distributions import Distribution
from torch import nn

from agents.obs_norm import RunningObsNorm
from agents.worker_rollouts import WorkerRolloutsMixin


class EntropyTRPO(WorkerRolloutsMixin, TRPO):
    """TRPO whose policy-gradient direction also ascends ``ent_coef * H(pi)``.

    sb3-contrib's TRPO has no entropy term. We add it where the surrogate's gradient is
    taken (``_compute_actor_grad``), using the distribution that ``train`` just built for
    the batch; the KL trust region and line search are unchanged (the line search still
    checks the plain surrogate improves, so the bonus only tilts the search direction).

    Rollouts are collected by the env's workers when they can (:mod:`agents.worker_rollouts`).
    """

    def __init__(self, *args: Any, ent_coef: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entropy_coef = float(ent_coef)
        self._last_distribution = None

    def _setup_model(self) -> None:
        super()._setup_model()
        original = self.policy.get_distribution

        def get_distribution(obs: th.Tensor) -> Distribution:
            dist = original(obs)
            if th.is_grad_enabled():
                self._last_distribution = dist
            return dist

        self.policy.get_distribution = get_distribution  # type: ignore[method-assign]

    def learn(self, *args: Any, **kwargs: Any) -> Self:
        """TRPO's ``learn``, with ``torch.distributions``' argument checks off while it runs
        (every rollout step builds a Normal and checks its mean and std, ~4% of a MuJoCo run's
        CPU; the numbers are the same) and back as they were afterwards. The switch is
        torch's, for the whole process: distributions built meanwhile elsewhere (callbacks,
        other threads) skip the checks too."""
        previous = th.distributions.Distribution._validate_args
        th.distributions.Distribution.set_default_validate_args(False)
        try:
            return super().learn(*args, **kwargs)
        finally:
            th.distributions.Distribution.set_default_validate_args(previous)

    def train(self) -> None:
        """TRPO's update, then the observation normalizer (if the policy has one) takes in
        the rollout it was trained on, for the next rollout."""
        super().train()
        extractor = self.policy.features_extractor
        if isinstance(extractor, RunningObsNorm):
            extractor.update(self.rollout_buffer.observations)

    def _compute_actor_grad(
        self, kl_div: th.Tensor, policy_objective: th.Tensor
    ) -> tuple[list[nn.Parameter], th.Tensor, th.Tensor, list[tuple[int, ...]]]:
        if self.entropy_coef > 0 and self._last_distribution is not None:
            entropy = self._last_distribution.entropy()
            if entropy is not None:
                policy_objective = policy_objective + self.entropy_coef * entropy.mean()
                self.logger.record("train/entropy", float(entropy.mean().detach()))
        return super()._compute_actor_grad(kl_div, policy_objective)
