"""Mean teacher (Tarvainen and Valpola 2017, "Mean teachers are better role models",
https://arxiv.org/abs/1703.01780).

The teacher's weights are an exponential moving average of the student's,
``theta'_t = decay * theta'_{t-1} + (1 - decay) * theta_t``, updated after each optimizer step.
Its predictions are targets for a consistency loss on unlabeled inputs (semi-supervision), and
the same average serves as a Polyak-averaged target network.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class EMATeacher(nn.Module):
    """A frozen copy of ``student`` whose parameters track the student's by EMA.

    Args:
        student: the trained network; it is deep-copied once, not modified.
        decay: EMA decay alpha (the paper uses 0.99 early and 0.999 later).
        ramp: use ``min(decay, 1 - 1/(n + 1))`` at update n = 0, 1, ... as the official code
            does (the first update copies the student), so early teachers are not dominated by
            the random init.
        copy_buffers: copy buffers (e.g. batch-norm statistics) from the student at each update
            instead of averaging them.

    Call :meth:`update` after every optimizer step of the student. ``teacher(x)`` runs the
    teacher with no gradient.
    """

    def __init__(
        self, student: nn.Module, decay: float = 0.99, ramp: bool = False, copy_buffers: bool = True
    ) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        self.decay, self.ramp, self.copy_buffers = decay, ramp, copy_buffers
        # Held in a list so the student is not registered as a submodule of the teacher.
        self._student = [student]
        self.teacher = copy.deepcopy(student)
        self.teacher.requires_grad_(False)
        self.num_updates = 0

    def current_decay(self) -> float:
        """The decay the next :meth:`update` uses."""
        if self.ramp:
            return min(self.decay, 1.0 - 1.0 / (self.num_updates + 1))
        return self.decay

    @torch.no_grad()
    def update(self) -> None:
        """``teacher <- decay * teacher + (1 - decay) * student``, parameter by parameter."""
        alpha = self.current_decay()
        student = self._student[0]
        for t, s in zip(self.teacher.parameters(), student.parameters(), strict=True):
            t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
        for t, s in zip(self.teacher.buffers(), student.buffers(), strict=True):
            if self.copy_buffers or not t.is_floating_point():
                t.copy_(s)
            else:
                t.mul_(alpha).add_(s, alpha=1.0 - alpha)
        self.num_updates += 1

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The teacher's output for the student's inputs, computed without gradient."""
        with torch.no_grad():
            return self.teacher(*args, **kwargs)


def consistency_loss(
    student_out: torch.Tensor, teacher_out: torch.Tensor, softmax: bool = False
) -> torch.Tensor:
    """Mean squared difference between student and (detached) teacher predictions.

    ``softmax=True`` compares class probabilities from logits, the paper's choice for
    classification; otherwise raw outputs (e.g. predicted rewards) are compared. Any matching
    shapes; returns a scalar whose gradient reaches only the student.
    """
    if student_out.shape != teacher_out.shape:
        raise ValueError(f"shapes differ: {tuple(student_out.shape)} vs {tuple(teacher_out.shape)}")
    teacher_out = teacher_out.detach()
    if softmax:
        student_out, teacher_out = student_out.softmax(-1), teacher_out.softmax(-1)
    return F.mse_loss(student_out, teacher_out)


def sigmoid_rampup(step: int, length: int) -> float:
    """The paper's consistency-weight ramp-up ``exp(-5 (1 - t)^2)``, ``t = step/length`` in [0, 1]."""
    if length <= 0:
        return 1.0
    t = min(max(step, 0), length) / length
    return math.exp(-5.0 * (1.0 - t) ** 2)
