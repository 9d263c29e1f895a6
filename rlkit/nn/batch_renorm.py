"""Batch renormalization (Ioffe 2017, "Batch Renormalization: Towards Reducing Minibatch
Dependence in Batch-Normalized Models", https://arxiv.org/abs/1702.03275).

In training, a batch is normalized with its own statistics and then corrected towards the
moving statistics::

    sigma_B = sqrt(var_B + eps)
    r = stop_grad(clip(sigma_B / sigma, 1 / r_max, r_max))
    d = stop_grad(clip((mu_B - mu) / sigma, -d_max, d_max))
    y = gamma * ((x - mu_B) / sigma_B * r + d) + beta
    mu += momentum * (mu_B - mu);  sigma += momentum * (sigma_B - sigma)

and at inference ``y = gamma * (x - mu) / sigma + beta``. With ``r_max = 1, d_max = 0`` this
is batch norm; with r and d unclipped the training output equals the inference output. The
paper starts with ``r_max = 1, d_max = 0`` and relaxes them to 3 and 5 over training
(Section 4: ``r_max`` reaches 3 after 40k steps and ``d_max`` reaches 5 after 25k, from 5k).

The module registers itself as the norm ``batch_renorm`` of :mod:`rlkit.nn.basic` (``mlp`` and
``nature_cnn`` take ``norm="batch_renorm", norm_kwargs={...}``).
"""

from __future__ import annotations

import torch
from torch import nn

from rlkit.nn.basic import NORMS


def renorm_corrections(
    batch_mean: torch.Tensor,
    batch_std: torch.Tensor,
    running_mean: torch.Tensor,
    running_std: torch.Tensor,
    r_max: torch.Tensor | float,
    d_max: torch.Tensor | float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clipped corrections ``(r, d)``, each ``(C,)``, with no gradient (paper eq. in Alg. 1).

    Both are treated as constants by backpropagation: the paper's ``stop_gradient``.
    """
    with torch.no_grad():
        r = batch_std / running_std
        r = torch.minimum(torch.maximum(r, 1.0 / torch.as_tensor(r_max)), torch.as_tensor(r_max))
        d = (batch_mean - running_mean) / running_std
        d = torch.minimum(torch.maximum(d, -torch.as_tensor(d_max)), torch.as_tensor(d_max))
    return r.detach(), d.detach()


class BatchRenorm(nn.Module):
    """Batch renormalization over the channel dimension 1 of ``(B, C)`` or ``(B, C, H, W)``.

    Args:
        num_features: C.
        eps: added to the batch variance inside the square root, as in batch norm.
        momentum: update rate of the moving mean and standard deviation (the paper's alpha).
        r_max: final bound of r (r is clipped to ``[1/r_max, r_max]``).
        d_max: final bound of d (d is clipped to ``[-d_max, d_max]``).
        warmup_steps: training steps with ``r_max = 1, d_max = 0`` (plain batch norm).
        r_max_steps: steps after the warm-up over which r_max rises linearly from 1 to ``r_max``.
        d_max_steps: steps after the warm-up over which d_max rises linearly from 0 to ``d_max``.
        affine: learn gamma and beta.

    A step is one training-mode forward pass; the count is the buffer ``num_batches_tracked``.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.01,
        r_max: float = 3.0,
        d_max: float = 5.0,
        warmup_steps: int = 5_000,
        r_max_steps: int = 35_000,
        d_max_steps: int = 20_000,
        affine: bool = True,
    ) -> None:
        super().__init__()
        if r_max < 1.0 or d_max < 0.0:
            raise ValueError(f"need r_max >= 1 and d_max >= 0, got {r_max}, {d_max}")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.r_max_final = float(r_max)
        self.d_max_final = float(d_max)
        self.warmup_steps = int(warmup_steps)
        self.r_max_steps = max(int(r_max_steps), 1)
        self.d_max_steps = max(int(d_max_steps), 1)
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_std", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def limits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The current ``(r_max, d_max)`` of the schedule, as 0-dim float tensors."""
        t = (self.num_batches_tracked - self.warmup_steps).clamp(min=0).float()
        r_frac = (t / self.r_max_steps).clamp(max=1.0)
        d_frac = (t / self.d_max_steps).clamp(max=1.0)
        return 1.0 + (self.r_max_final - 1.0) * r_frac, self.d_max_final * d_frac

    def _shape(self, x: torch.Tensor) -> tuple[int, ...]:
        # Broadcast per-channel vectors over (B, C, *spatial).
        return (1, -1) + (1,) * (x.dim() - 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial) -> (B, C, *spatial)``."""
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"expected (B, {self.num_features}, ...), got {tuple(x.shape)}")
        shape = self._shape(x)
        if self.training:
            dims = [0] + list(range(2, x.dim()))
            mean = x.mean(dim=dims)
            std = torch.sqrt(x.var(dim=dims, unbiased=False) + self.eps)
            r_max, d_max = self.limits()
            r, d = renorm_corrections(mean, std, self.running_mean, self.running_std, r_max, d_max)
            x_hat = (x - mean.view(shape)) / std.view(shape) * r.view(shape) + d.view(shape)
            with torch.no_grad():
                self.running_mean.add_(self.momentum * (mean.detach() - self.running_mean))
                self.running_std.add_(self.momentum * (std.detach() - self.running_std))
                self.num_batches_tracked.add_(1)
        else:
            x_hat = (x - self.running_mean.view(shape)) / self.running_std.view(shape)
        if self.weight is not None:
            x_hat = x_hat * self.weight.view(shape) + self.bias.view(shape)
        return x_hat

    def extra_repr(self) -> str:
        """Constructor settings for the module's ``repr``."""
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"r_max={self.r_max_final}, d_max={self.d_max_final}, warmup_steps={self.warmup_steps}"
        )


NORMS["batch_renorm"] = lambda n, conv, **kwargs: BatchRenorm(n, **kwargs)
