"""Synthetic teachers that answer queries from the true reward, with the usual noise models.

One noise model at a time (B-Pref, Lee et al. 2021, gives the zoo):

- ``rational``: prefers the segment with the higher true return; "equal" on an exact tie.
- ``bradley_terry``: answers "left" with probability ``sigmoid(beta * (R_a - R_b))``.
- ``mistake``: the rational answer, flipped with probability ``eps``.
- ``skip``: "can't tell" when both returns are below ``skip_threshold``; rational otherwise.
- ``equal``: "equal" when ``|R_a - R_b| < equal_threshold``; rational otherwise.
- ``myopic``: rational on returns that discount earlier steps,
  ``R = sum_t gamma^(L-1-t) r_t``, so the end of the clip weighs most.

Teachers plug into the preference loop through :class:`Teacher`: the loop writes queries
to the store and calls ``request``; a synthetic teacher writes its labels to the store at
once, a human teacher (the labeling UI) whenever people answer. The loop only ever reads
labels from the store, so it cannot tell the two apart and never blocks on either.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

import numpy as np

from rlkit.core.errors import ConfigError, check_settings, check_types
from rlkit.core.types import Segment

NoiseModel = Literal["rational", "bradley_terry", "mistake", "skip", "equal", "myopic"]


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    """A synthetic teacher."""

    noise: NoiseModel = "rational"
    """Noise model: rational, bradley_terry, mistake, skip, equal or myopic."""
    beta: float = 1.0
    """bradley_terry: rationality (higher answers more like a rational teacher)."""
    eps: float = 0.1
    """mistake: probability of flipping the rational answer."""
    skip_threshold: float = 0.0
    """skip: answer "can't tell" when both segment returns are below this."""
    equal_threshold: float = 0.1
    """equal: answer "equal" when the returns differ by less than this."""
    gamma: float = 0.99
    """myopic: per-step discount applied to earlier steps of the segment."""

    def __post_init__(self) -> None:
        check_types(self, "--teacher-model.")
        check_settings(self, {}, "--teacher-model.")
        if not 0.0 <= self.eps <= 1.0:
            raise ConfigError(f"teacher eps must be in [0, 1], got {self.eps}")
        if not 0.0 < self.gamma <= 1.0:
            raise ConfigError(f"teacher gamma must be in (0, 1], got {self.gamma}")
        if self.beta < 0 or self.equal_threshold < 0:
            raise ConfigError("teacher beta and equal_threshold must be >= 0")


class SyntheticTeacher:
    """Answers ``left | right | equal | skip`` from the segments' true rewards."""

    def __init__(self, config: TeacherConfig, rng: np.random.Generator) -> None:
        if rng is None:
            raise ValueError("SyntheticTeacher needs an explicit rng (np.random.Generator)")
        self.config = config
        self.rng = rng

    def _return(self, seg: Segment) -> float:
        if self.config.noise == "myopic":
            weights = self.config.gamma ** np.arange(len(seg) - 1, -1, -1)
            return float((weights * seg.true_rews).sum())
        return seg.true_return

    def answer(self, seg_a: Segment, seg_b: Segment) -> str:
        """``"left"``, ``"right"``, ``"equal"`` or ``"skip"`` for segment ``seg_a`` (left) against
        ``seg_b`` (right), under the configured noise model."""
        c = self.config
        ra, rb = self._return(seg_a), self._return(seg_b)
        if c.noise == "skip" and ra < c.skip_threshold and rb < c.skip_threshold:
            return "skip"
        if c.noise == "equal" and abs(ra - rb) < c.equal_threshold:
            return "equal"
        if c.noise == "bradley_terry":
            p_left = 1.0 / (1.0 + np.exp(-np.clip(c.beta * (ra - rb), -60, 60)))
            return "left" if self.rng.random() < p_left else "right"
        if ra == rb:
            return "equal"
        choice = "left" if ra > rb else "right"
        if c.noise == "mistake" and self.rng.random() < c.eps:
            choice = "right" if choice == "left" else "left"
        return choice


class LabelSink(Protocol):
    """Where teachers put answers: the run's store."""

    def add_label(self, query_id: int, choice: str, labeler: str, source: str, **kwargs) -> int:
        """Store one answer to query ``query_id``; returns the label's id."""


@dataclasses.dataclass(frozen=True)
class QueryRequest:
    """A query as the loop hands it to a teacher."""

    query_id: int
    segment_a: int
    segment_b: int


class Teacher(Protocol):
    """The interface shared by synthetic and human teachers (see module docstring)."""

    def request(
        self, queries: Sequence[QueryRequest], segments: Mapping[int, Segment], sink: LabelSink
    ) -> None:
        """Hand ``queries`` to the teacher, who answers into ``sink`` now or later;
        ``segments`` maps every segment id they name to its segment."""


class SyntheticTeacherAdapter:
    """A synthetic teacher as a :class:`Teacher`: labels every query at once.

    With ``share < 1`` it answers only that fraction of queries (chosen at random) and
    leaves the rest to people: the ``mixed`` teacher. ``share = 0`` is the human teacher.
    """

    def __init__(
        self, teacher: SyntheticTeacher, share: float = 1.0, name: str = "synthetic"
    ) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"synthetic share must be in [0, 1], got {share}")
        self.teacher = teacher
        self.share = share
        self.name = name

    def request(
        self, queries: Sequence[QueryRequest], segments: Mapping[int, Segment], sink: LabelSink
    ) -> None:
        """Answer the queries this teacher takes (all, or a random ``share`` of them) into
        ``sink``; the rest are left for people."""
        for q in queries:
            if self.share < 1.0 and self.teacher.rng.random() >= self.share:
                continue  # left for a person
            choice = self.teacher.answer(segments[q.segment_a], segments[q.segment_b])
            sink.add_label(q.query_id, choice, labeler=self.name, source="synthetic")
