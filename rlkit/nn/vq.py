"""Vector-quantized bottleneck (van den Oord et al. 2017, "Neural Discrete Representation
Learning" (VQ-VAE), https://arxiv.org/abs/1711.00937).

Each latent vector ``z_e`` is replaced by its nearest codebook entry ``e_k``,
``k = argmin_j ||z_e - e_j||``. The forward value is ``e_k``; the backward pass copies the
gradient straight through to ``z_e`` (``z_q = z_e + stop_grad(e_k - z_e)``). The codebook learns
either from the codebook loss ``||stop_grad(z_e) - e_k||^2`` or from exponential moving averages
of the encodings assigned to each code (paper appendix A.1); the encoder is held near its codes
by the commitment loss ``beta * ||z_e - stop_grad(e_k)||^2``.

A trainer picks up the auxiliary loss of the last forward pass with ``aux_loss()`` and the code
usage with ``code_stats()`` (``dead_codes``: codes no encoding was assigned to since the last
``reset_usage()``).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlkit.nn.registry import make_backbone, register_backbone


class VectorQuantizer(nn.Module):
    """Nearest-codebook quantization of ``(..., code_dim)`` vectors.

    Args:
        num_codes: codebook size K.
        code_dim: size D of each code.
        beta: weight of the commitment loss (the paper uses 0.25).
        ema: learn the codebook by exponential moving averages instead of the codebook loss
            (the codebook is then a buffer, not a parameter).
        decay: EMA decay gamma (the paper uses 0.99).
        eps: Laplace smoothing of the EMA cluster sizes, so unused codes never divide by zero.
        seed: seed of the initial codebook (``None`` uses torch's global generator).
    """

    def __init__(
        self,
        num_codes: int = 64,
        code_dim: int = 16,
        beta: float = 0.25,
        ema: bool = False,
        decay: float = 0.99,
        eps: float = 1e-5,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.num_codes, self.code_dim = num_codes, code_dim
        self.beta, self.ema, self.decay, self.eps = beta, ema, decay, eps
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        init = torch.randn(num_codes, code_dim, generator=gen)
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.zeros(num_codes))
            # Both EMAs start at zero, so their ratio is an unbiased weighted mean of the assigned
            # encodings (the zero-debiasing factors 1 - gamma^t cancel).
            self.register_buffer("ema_sum", torch.zeros(num_codes, code_dim))
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("usage", torch.zeros(num_codes, dtype=torch.long))
        self._aux_loss: torch.Tensor | None = None
        self.last_indices: torch.Tensor | None = None

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code of each row: ``(M, D) -> (M,)`` long."""
        dist = (
            flat.pow(2).sum(1, keepdim=True)
            - 2 * flat @ self.codebook.T
            + self.codebook.pow(2).sum(1)[None, :]
        )
        return dist.argmin(dim=1)

    def forward(self, z_e: torch.Tensor) -> torch.Tensor:
        """``(..., D) -> (..., D)``: codes in the forward pass, identity in the backward pass.

        Sets ``aux_loss()`` (codebook + commitment loss, or commitment only with EMA) and
        ``last_indices`` ``(...)`` (both only outside torch.func transforms), counts code usage,
        and in training with ``ema=True`` moves the codebook.
        """
        if z_e.shape[-1] != self.code_dim:
            raise ValueError(f"expected (..., {self.code_dim}), got {tuple(z_e.shape)}")
        flat = z_e.reshape(-1, self.code_dim)
        idx = self.nearest(flat.detach())
        z_q = F.embedding(idx, self.codebook).view_as(z_e)
        commitment = F.mse_loss(z_e, z_q.detach())
        if self.ema and self.training:
            self._ema_update(flat.detach(), idx)
        with torch.no_grad():
            self.usage.add_(F.one_hot(idx, self.num_codes).sum(0))
        if torch._C._are_functorch_transforms_active():
            # Under vmap these would be batched tensors escaping the transform.
            self._aux_loss = self.last_indices = None
        else:
            codebook_loss = 0.0 if self.ema else F.mse_loss(z_q, z_e.detach())
            self._aux_loss = codebook_loss + self.beta * commitment
            self.last_indices = idx.view(z_e.shape[:-1])
        return z_e + (z_q - z_e).detach()

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, idx: torch.Tensor) -> None:
        """Appendix A.1: ``N_i <- g N_i + (1-g) n_i``, ``m_i <- g m_i + (1-g) sum z_e``,
        ``e_i = m_i / N_i`` (N Laplace-smoothed)."""
        onehot = F.one_hot(idx, self.num_codes).to(flat.dtype)  # (M, K)
        self.ema_count.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(onehot.T @ flat, alpha=1 - self.decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (total + self.num_codes * self.eps) * total
        # Codes never assigned keep their initial value rather than collapsing to zero.
        assigned = self.ema_count > 0
        new = self.ema_sum / smoothed.clamp(min=self.eps)[:, None]
        self.codebook.copy_(torch.where(assigned[:, None], new, self.codebook))

    def aux_loss(self) -> torch.Tensor:
        """The auxiliary loss of the last forward pass (a scalar to add to the main loss)."""
        if self._aux_loss is None:
            raise RuntimeError(
                "aux_loss() is set by a forward pass outside torch.func transforms; none has run "
                "(under vmap, e.g. in the reward ensemble, use ema=True: the codebook then "
                "learns without it)"
            )
        return self._aux_loss

    def code_stats(self) -> dict[str, float]:
        """Usage since the last ``reset_usage()``: ``dead_codes`` (count), ``dead_fraction``,
        ``perplexity`` (exp of the entropy of the code frequencies; K when all are equal)."""
        counts = self.usage.double()
        total = counts.sum().clamp(min=1.0)
        p = counts / total
        entropy = -(p * torch.log(p.clamp(min=1e-12))).sum()
        dead = int((self.usage == 0).sum())
        return {
            "dead_codes": float(dead),
            "dead_fraction": dead / self.num_codes,
            "perplexity": float(torch.exp(entropy)),
        }

    def dead_codes(self) -> torch.Tensor:
        """Indices of the codes unused since the last ``reset_usage()``: ``(n_dead,)`` long."""
        return torch.nonzero(self.usage == 0).flatten()

    def reset_usage(self) -> None:
        self.usage.zero_()


class VQBottleneck(nn.Module):
    """An encoder backbone, a linear map to ``n_latents`` vectors of ``code_dim``, and their
    quantization; output ``(B, n_latents * code_dim)``, the concatenated codes.

    Args:
        encoder: the backbone under the bottleneck (any module with ``out_dim``).
        n_latents: how many codes describe one observation.
        **quantizer_kwargs: :class:`VectorQuantizer` arguments (num_codes, code_dim, beta, ...).
    """

    def __init__(self, encoder: nn.Module, n_latents: int = 8, **quantizer_kwargs) -> None:
        super().__init__()
        self.encoder = encoder
        self.quantizer = VectorQuantizer(**quantizer_kwargs)
        self.n_latents = n_latents
        self.project = nn.Linear(encoder.out_dim, n_latents * self.quantizer.code_dim)
        self.out_dim = int(n_latents * self.quantizer.code_dim)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """Continuous latents before quantization: ``(B, n_latents, code_dim)``."""
        z = self.project(self.encoder(obs))
        return z.view(z.shape[0], self.n_latents, self.quantizer.code_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self.encode(obs)).flatten(1)

    def aux_loss(self) -> torch.Tensor:
        """The quantizer's codebook/commitment loss of the last forward pass (scalar)."""
        return self.quantizer.aux_loss()

    def code_stats(self) -> dict[str, float]:
        return self.quantizer.code_stats()

    def reset_usage(self) -> None:
        self.quantizer.reset_usage()


@register_backbone("vq")
def make_vq(
    observation_space: gym.spaces.Space,
    encoder: str | None = None,
    encoder_kwargs: dict | None = None,
    **kwargs,
) -> VQBottleneck:
    """VQ bottleneck over the backbone ``encoder`` (default ``nature_cnn`` for 3-dim image spaces,
    else ``mlp``) built with ``encoder_kwargs``; other kwargs go to :class:`VQBottleneck`."""
    shape = observation_space.shape
    if shape is None:
        raise ValueError("the vq backbone needs an observation space with a shape")
    if encoder is None:
        encoder = "nature_cnn" if len(shape) == 3 and np.prod(shape) > 1 else "mlp"
    if encoder == "vq":
        raise ValueError("the vq backbone's encoder cannot itself be vq")
    return VQBottleneck(
        make_backbone(encoder, observation_space, **(encoder_kwargs or {})), **kwargs
    )
