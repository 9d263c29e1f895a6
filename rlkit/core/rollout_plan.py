"""What a rollout taken elsewhere (by env workers) hands back to the learner's side."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class RolloutPlan:
    """The policy's side of a rollout the workers took.

    Attributes:
        actions: ``(n_steps, n_envs, *act_shape)``, as sampled (before clipping).
        values: ``(n_steps, n_envs)``; log_probs: ``(n_steps, n_envs)``.
        decide_first: env index blocks whose first step the driver's policy decides: their
            worker died, that step ends their episodes (a truncation, whatever the action)
            and the worker's replacement took the rest from fresh episodes. Their rows at
            step 0 hold zeros.
    """

    actions: np.ndarray
    values: np.ndarray
    log_probs: np.ndarray
    decide_first: tuple[range, ...] = ()

    def __post_init__(self) -> None:
        steps_envs = self.actions.shape[:2]
        if self.values.shape != steps_envs or self.log_probs.shape != steps_envs:
            raise ValueError(
                f"RolloutPlan: actions {self.actions.shape}, values {self.values.shape} and"
                f" log_probs {self.log_probs.shape} must share (n_steps, n_envs)"
            )
