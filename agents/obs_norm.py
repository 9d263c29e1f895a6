"""Observation normalization inside the policy, from running statistics of its rollouts.

The standard for TRPO and PPO on MuJoCo (modular_rl's ``ZFilter``, rl-zoo's ``normalize``):
the policy and critic see ``clip((obs - mean) / std, -clip, clip)`` with ``mean`` and ``std``
over every observation collected so far. Kept in the policy, not in a ``VecNormalize``
wrapper, so that the rollout buffer, the learned reward, the segments and the evaluation all
see the env's own observations, and the statistics are saved with the policy's weights.

The statistics change only between updates (:meth:`RunningObsNorm.update` after each
``train()``), never during a rollout or an update: the log-probabilities TRPO stores while
collecting stay those of the policy it then optimizes.
"""

from __future__ import annotations

from collections.abc import Mapping

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

STAT_NAMES = ("mean", "var", "count")


class RunningObsNorm(BaseFeaturesExtractor):
    """Flattened, normalized Box observations: input ``(B, *obs_shape)``, output ``(B, D)``
    with ``D = prod(obs_shape)``. Starts as the identity (mean 0, variance 1, count 0)."""

    def __init__(
        self, observation_space: gym.spaces.Space, clip: float = 10.0, eps: float = 1e-8
    ) -> None:
        if not isinstance(observation_space, gym.spaces.Box):
            raise ValueError(
                f"observation normalization takes Box observations, not {observation_space}"
            )
        dim = int(np.prod(observation_space.shape))
        super().__init__(observation_space, features_dim=dim)
        self.clip = float(clip)
        self.eps = float(eps)
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self._cached: tuple[tuple, torch.Tensor, torch.Tensor] | None = None

    def _mean_std(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean`` and ``sqrt(var + eps)`` in ``dtype``, computed again only when the
        statistics change (``update``, ``load_state_dict`` and ``.to`` all do): a rollout
        step's forward pass is then three small ops instead of eight."""
        key = (dtype, self.mean.data_ptr(), self.mean._version, self.var.data_ptr(),
               self.var._version)  # fmt: skip
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, *self.compute_mean_std(dtype))
        return self._cached[1], self._cached[2]

    def compute_mean_std(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean`` and ``sqrt(var + eps)`` in ``dtype``, computed now."""
        return self.mean.to(dtype), torch.sqrt(self.var + self.eps).to(dtype)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """Observations ``(B, *obs_shape)`` flattened to ``(B, D)``, normalized by the running
        statistics and clipped to ``[-clip, clip]``."""
        x = observations.flatten(1)
        mean, std = self._mean_std(x.dtype)
        return ((x - mean) / std).clamp(-self.clip, self.clip)

    @torch.no_grad()
    def update(self, observations: np.ndarray) -> None:
        """Merge a batch ``(N, *obs_shape)`` into the running statistics (Chan et al.'s
        parallel algorithm, in float64: equal to the statistics of all batches together)."""
        batch = np.asarray(observations, dtype=np.float64).reshape(-1, self.features_dim)
        n = batch.shape[0]
        if n == 0:
            return
        b_mean, b_var = batch.mean(axis=0), batch.var(axis=0)
        count = float(self.count)
        total = count + n
        delta = torch.from_numpy(b_mean) - self.mean
        m2 = self.var * count + torch.from_numpy(b_var) * n + delta**2 * count * n / total
        self.mean += delta * n / total
        self.var.copy_(m2 / total)
        self.count.fill_(total)


def obs_norm_state(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The normalizer statistics in a policy's ``state_dict`` (empty without a normalizer):
    what a re-initialised policy must keep, since they describe the env, not learned weights."""
    return {
        key: value.clone()
        for key, value in state_dict.items()
        if key.rsplit(".", 1)[-1] in STAT_NAMES and "features_extractor" in key
    }
