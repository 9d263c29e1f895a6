"""Policies that run inside rollout workers: picklable callables from a batch of observations
to a batch of actions.

A worker-side policy is any picklable object with
``__call__(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray`` mapping observations of
shape ``(n_envs, *obs_shape)`` to actions of shape ``(n_envs, *act_shape)``; if it also has
``load_state_dict(state_dict)``, :meth:`FragmentSampler.sample` can send it new weights
without re-sending the policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import gymnasium as gym
import numpy as np


class WorkerPolicy(Protocol):
    """What a rollout worker steps its envs with (see the module docstring)."""

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Actions ``(n_envs, *act_shape)`` for observations ``(n_envs, *obs_shape)``; any
        random draw comes from ``rng``."""


class RandomPolicy:
    """Uniformly random actions from ``action_space`` (Discrete or Box), drawn from the
    worker's own generator so that a seed fixes them."""

    def __init__(self, action_space: gym.spaces.Space) -> None:
        if not isinstance(action_space, gym.spaces.Discrete | gym.spaces.Box):
            raise TypeError(f"RandomPolicy supports Discrete and Box, got {action_space}")
        self.action_space = action_space
        if isinstance(action_space, gym.spaces.Box):
            # Bounds kept once as float64 (the draw is low + span * U[0, 1), as rng.uniform
            # does): building them on every call cost 6x the draw itself.
            self._low = np.broadcast_to(action_space.low, action_space.shape).astype(np.float64)
            self._span = np.broadcast_to(action_space.high, action_space.shape) - self._low

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``n_envs = len(obs)`` uniform actions ``(n_envs, *act_shape)``, drawn from ``rng``."""
        n = len(obs)
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            return space.start + rng.integers(space.n, size=n)
        u = rng.random((n, *space.shape))
        return (self._low + self._span * u).astype(space.dtype)


class SB3Policy:
    """A Stable-Baselines3 policy (``model.policy``) run on the worker's CPU.

    Actions are sampled (``deterministic=False``) with torch's generator, which each worker
    seeds from the sampler's seed; :meth:`load_state_dict` takes ``model.policy.state_dict()``.
    """

    def __init__(self, policy: Any, deterministic: bool = False) -> None:
        self.policy = policy.to("cpu")
        self.policy.set_training_mode(False)
        self.deterministic = deterministic

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The policy's actions ``(n_envs, *act_shape)`` for ``obs`` ``(n_envs, *obs_shape)``
        (``rng`` unused: torch's generator draws)."""
        actions, _ = self.policy.predict(obs, deterministic=self.deterministic)
        return actions

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load ``model.policy.state_dict()`` weights into the worker's copy."""
        self.policy.load_state_dict(state_dict)
