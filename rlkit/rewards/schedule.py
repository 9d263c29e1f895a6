"""How many labels should have been asked for by environment step T (Christiano et al. 2017, A.1-A.2).

A share of the budget is asked for up front, on segments from the initial random policy,
and the reward model is pretrained on it before RL starts. The rest arrives at a rate
proportional to ``c / (T + c)`` (c = 2e6 for MuJoCo, 5e6 for Atari), scaled so that the
whole budget is used by the end of training. Integrating the rate gives the cumulative
count ``initial + rest * log(1 + T / c) / log(1 + total / c)``.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class LabelSchedule:
    """Cumulative label targets over training.

    Attributes:
        total_labels: the whole label budget.
        initial_labels: asked for before RL starts (MuJoCo: 25% of the budget; Atari: 500).
        total_steps: environment steps of the whole run.
        decay: c in the rate ``c / (T + c)``.
    """

    total_labels: int
    initial_labels: int
    total_steps: int
    decay: float

    def __post_init__(self) -> None:
        if not 0 <= self.initial_labels <= self.total_labels:
            raise ValueError("need 0 <= initial_labels <= total_labels")
        if self.total_steps <= 0 or self.decay <= 0:
            raise ValueError("total_steps and decay must be positive")

    @classmethod
    def for_kind(
        cls,
        kind: str,
        total_labels: int,
        total_steps: int,
        initial_labels: int | None = None,
        decay: float | None = None,
    ) -> LabelSchedule:
        """The paper's schedule for ``kind`` in {mujoco, atari} (others use the MuJoCo one);
        ``initial_labels`` and ``decay``, when given, replace its values."""
        atari = kind == "atari"
        if initial_labels is None:
            initial_labels = min(500, total_labels) if atari else int(round(0.25 * total_labels))
        if decay is None:
            decay = 5e6 if atari else 2e6
        return cls(total_labels, initial_labels, total_steps, decay)

    def target(self, step: int) -> int:
        """Labels that should have been requested by environment step ``step``."""
        step = min(max(step, 0), self.total_steps)
        rest = self.total_labels - self.initial_labels
        frac = math.log1p(step / self.decay) / math.log1p(self.total_steps / self.decay)
        return self.initial_labels + int(math.floor(rest * frac + 1e-9))
