"""Frozen data types that check their shapes: trajectories, segments, comparisons."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

MU_LEFT: tuple[float, float] = (1.0, 0.0)
MU_RIGHT: tuple[float, float] = (0.0, 1.0)
MU_EQUAL: tuple[float, float] = (0.5, 0.5)
VALID_MUS = (MU_LEFT, MU_RIGHT, MU_EQUAL)


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """One episode (or a piece of one) from a single environment.

    Attributes:
        obs: observations, shape ``(T + 1, *obs_shape)``; ``obs[t]`` is seen before ``acts[t]``.
        acts: actions, shape ``(T, *act_shape)``.
        rews: true environment rewards, shape ``(T,)``.
        terminal: whether the episode ended in a terminal state (not a time-limit truncation).
        render_states: per-observation simulator state to render it later, shape
            ``(T + 1, *state_shape)``, or None.
        truncated: the episode ended here without a terminal state (a time limit). A piece
            with neither flag is cut from a longer stream that goes on from ``obs[-1]``.
    """

    obs: np.ndarray
    acts: np.ndarray
    rews: np.ndarray
    terminal: bool
    render_states: np.ndarray | None = None
    truncated: bool = False

    def __post_init__(self) -> None:
        for name in ("terminal", "truncated"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.terminal and self.truncated:
            raise ValueError("a Trajectory ends either terminal or truncated, not both")
        if len(self.obs) != len(self.acts) + 1:
            raise ValueError(
                f"Trajectory needs len(obs) == len(acts) + 1, got {len(self.obs)} and {len(self.acts)}"
            )
        if self.rews.shape != (len(self.acts),):
            raise ValueError(f"rews must have shape ({len(self.acts)},), got {self.rews.shape}")
        if self.render_states is not None and len(self.render_states) != len(self.obs):
            raise ValueError("render_states must have one entry per observation")

    def __len__(self) -> int:
        return len(self.acts)


@dataclasses.dataclass(frozen=True)
class Segment:
    """A fixed-length window of a trajectory: what a teacher compares and a person watches.

    Attributes:
        obs: observation at which each action was taken, shape ``(L, *obs_shape)``.
        acts: actions, shape ``(L, *act_shape)``.
        true_rews: the environment's reward for each step, shape ``(L,)`` (used by synthetic
            teachers and for evaluation only, never by the policy).
        render_state: per-step simulator state to re-render the clip, shape ``(L, *state_shape)``:
            MuJoCo ``concat(qpos, qvel)``, Atari raw RGB frames; None when not kept.
        id: the segment's id, unique within a run; -1 until the pool assigns one.
        env_id: the Gymnasium id of the environment it came from.
        env_index: which of the vectorized environments produced it.
        step: the global environment step (over all envs) at which it ended.
        episode_start: the index in its episode of its first step.
    """

    obs: np.ndarray
    acts: np.ndarray
    true_rews: np.ndarray
    render_state: np.ndarray | None = None
    id: int = -1
    env_id: str = ""
    env_index: int = 0
    step: int = 0
    episode_start: int = 0

    def __post_init__(self) -> None:
        length = len(self.acts)
        if length == 0:
            raise ValueError("a Segment needs at least one step")
        if len(self.obs) != length:
            raise ValueError(f"Segment obs has {len(self.obs)} steps but acts has {length}")
        if self.true_rews.shape != (length,):
            raise ValueError(f"true_rews must have shape ({length},), got {self.true_rews.shape}")
        if self.render_state is not None and len(self.render_state) != length:
            raise ValueError(
                f"render_state has {len(self.render_state)} steps but the segment has {length}"
            )

    def __len__(self) -> int:
        return len(self.acts)

    @property
    def true_return(self) -> float:
        """Undiscounted sum of the true reward over the segment."""
        return float(self.true_rews.sum())

    def with_id(self, segment_id: int) -> Segment:
        """A copy of this segment with id ``segment_id``; the arrays are shared, not copied."""
        return dataclasses.replace(self, id=segment_id)

    def metadata(self) -> dict[str, Any]:
        """Provenance of the segment, without its arrays."""
        return {
            "id": self.id,
            "env_id": self.env_id,
            "env_index": self.env_index,
            "step": self.step,
            "episode_start": self.episode_start,
            "length": len(self),
            "true_return": self.true_return,
        }


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A teacher's answer to "which of these two segments is better?".

    Attributes:
        segment_a: id of the left segment.
        segment_b: id of the right segment.
        mu: the target distribution over (a better, b better): ``(1, 0)``, ``(0, 1)`` or
            ``(0.5, 0.5)`` for "equally good".
    """

    segment_a: int
    segment_b: int
    mu: tuple[float, float]

    def __post_init__(self) -> None:
        for name in ("segment_a", "segment_b"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a segment id (an int >= 0), got {value!r}")
            object.__setattr__(self, name, int(value))
        try:
            if isinstance(self.mu, str | bytes) or len(self.mu) != 2:
                raise TypeError
            mu = (float(self.mu[0]), float(self.mu[1]))
        except (TypeError, ValueError):
            raise ValueError(f"mu must be one of {VALID_MUS}, got {self.mu!r}") from None
        if mu not in VALID_MUS:
            raise ValueError(f"mu must be one of {VALID_MUS}, got {self.mu!r}")
        object.__setattr__(self, "mu", mu)
        if self.segment_a == self.segment_b:
            raise ValueError("a comparison needs two different segments")


# A teacher's answer to a query, as stored: "skip" is "can't tell" (stored, never trained on).
CHOICES = ("left", "right", "equal", "skip")
_MU_FOR_CHOICE = {"left": MU_LEFT, "right": MU_RIGHT, "equal": MU_EQUAL, "skip": None}


def mu_for_choice(choice: str) -> tuple[float, float] | None:
    """The label distribution for a stored choice; None for "skip" (not trained on)."""
    if choice not in _MU_FOR_CHOICE:
        raise ValueError(f"choice must be one of {CHOICES}, got {choice!r}")
    return _MU_FOR_CHOICE[choice]
