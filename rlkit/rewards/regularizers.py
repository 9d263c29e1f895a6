"""Optional regularizers of the reward trainer, from the supervised-learning backbones.

- Cross-Lipschitz (Hein and Andriushchenko 2017) on the preference classifier: for a pair
  the two competing outputs are the segment returns ``(R_a, R_b)`` as functions of the
  pair's observations, and the penalty is ``1/(n L^2) sum_i sum_{l,m} ||grad f_l - grad f_m||^2``
  (L = 2), computed per member and summed over members like the preference loss.
- Mean teacher (Tarvainen and Valpola 2017): an EMA copy of the ensemble; on unlabeled
  steps from the segment pool, each member's reward on noisy inputs is pulled toward the
  teacher's on differently noisy inputs (semi-supervised reward learning).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from rlkit.nn.cross_lipschitz import cross_lipschitz_penalty
from rlkit.nn.mean_teacher import EMATeacher, consistency_loss, sigmoid_rampup
from rlkit.rewards.ensemble import RewardEnsemble

UnlabeledSampler = Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def cross_lipschitz_preference(
    ensemble: RewardEnsemble,
    obs_a: torch.Tensor,
    acts_a: torch.Tensor,
    obs_b: torch.Tensor,
    acts_b: torch.Tensor,
) -> torch.Tensor:
    """Sum over members of the cross-Lipschitz penalty of ``x -> (R_a, R_b)``.

    Args:
        obs_a, obs_b: ``(K, B, L, *obs_shape)`` per-member minibatches; acts likewise.
    """
    k, b = obs_a.shape[:2]
    seg_shape = obs_a.shape[2:]
    x = torch.cat([obs_a.float().reshape(k * b, -1), obs_b.float().reshape(k * b, -1)], dim=1)

    def logits(flat: torch.Tensor) -> torch.Tensor:
        half = flat.shape[1] // 2
        oa = flat[:, :half].reshape(k, b, *seg_shape)
        ob = flat[:, half:].reshape(k, b, *seg_shape)
        ra = ensemble.segment_returns(oa, acts_a, per_member=True)
        rb = ensemble.segment_returns(ob, acts_b, per_member=True)
        return torch.stack([ra, rb], dim=-1).reshape(k * b, 2)  # row i only sees its own member

    return k * cross_lipschitz_penalty(logits, x)


class MeanTeacherConsistency:
    """The mean-teacher consistency term on unlabeled steps.

    Args:
        ensemble: the student.
        sampler: ``sampler(n, rng) -> (obs (n, ...), acts (n, ...))`` unlabeled steps.
        weight: maximum consistency weight.
        decay: EMA decay of the teacher.
        rampup_steps: sigmoid ramp-up of the weight over this many gradient steps.
        noise: input noise std, as a fraction of the batch's per-feature std.
        batch_size: unlabeled steps per gradient step.
    """

    def __init__(
        self,
        ensemble: RewardEnsemble,
        sampler: UnlabeledSampler,
        weight: float,
        decay: float = 0.99,
        rampup_steps: int = 1000,
        noise: float = 0.1,
        batch_size: int = 256,
    ) -> None:
        self.ensemble = ensemble
        self.teacher = EMATeacher(ensemble, decay)
        self.sampler = sampler
        self.weight = weight
        self.rampup_steps = rampup_steps
        self.noise = noise
        self.batch_size = batch_size

    def _noisy(self, obs: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        obs = obs.float()
        scale = self.noise * obs.std(dim=0, keepdim=True).clamp_min(1e-6)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        return obs + scale * torch.randn(obs.shape, generator=gen)

    def loss(self, step: int, rng: np.random.Generator) -> torch.Tensor:
        """The consistency loss at gradient step ``step`` (a scalar): the members' rewards on
        ``batch_size`` unlabeled steps against the teacher's, each input with its own noise, times
        the ramped-up weight and the member count."""
        obs, acts = (torch.as_tensor(x) for x in self.sampler(self.batch_size, rng))
        student = self.ensemble.member_rewards(self._noisy(obs, rng), acts)
        with torch.no_grad():
            teacher = self.teacher.teacher.member_rewards(self._noisy(obs, rng), acts)
        w = self.weight * sigmoid_rampup(step, self.rampup_steps)
        return w * self.ensemble.n_members * consistency_loss(student, teacher)

    def update(self) -> None:
        """Move the teacher's weights towards the student's (EMA); call after each optimizer
        step."""
        self.teacher.update()
