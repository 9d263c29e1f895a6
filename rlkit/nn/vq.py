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
``reset_usage()``; ``restarts``: codes re-set since then).

Two standard remedies against codebook collapse (most codes never nearest to any encoding, e.g.
when the encoder's outputs are far smaller than a N(0, 1) codebook) are optional in
:class:`VectorQuantizer` and on by default in the ``vq`` backbone (:class:`VQBottleneck`):

* data-dependent initialization (``data_init``): on the first training batch every code is set
  to an encoding of that batch, drawn at random without replacement (as in Jukebox, Dhariwal et
  al. 2020, https://arxiv.org/abs/2005.00341; Lancucki et al. 2020,
  https://arxiv.org/abs/2005.08520, re-initialize with k-means instead); a buffer
  ``initialized`` records that it happened, so it happens once and survives ``state_dict``
  save/load;
* dead-code restarts (``restart_threshold``, EMA mode): before each training update, every code
  whose EMA share of the assignments has fallen below ``restart_threshold / num_codes`` is re-set
  to a random encoding of the current batch (Jukebox's random restarts).

Both draw random numbers, so under ``torch.func.vmap`` (the reward ensemble) they need
``randomness="different"`` (what the ensemble passes) or ``"same"``. They move the codebook with
in-place buffer/parameter updates written through ``torch.where``, which, like the EMA update,
works per member on the ensemble's stacked buffers.

Under vmap no auxiliary loss can leave the transform, so without help the encoder there has no
commitment loss and its outputs drift far from the codes; with ``aux_grad_in_transforms`` (on
in the backbone) the losses' gradients are added in the backward pass instead.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlkit.nn.registry import make_backbone, register_backbone


class _StraightThroughWithAuxGrad(torch.autograd.Function):
    """``z_q`` forward; backward: the upstream gradient to ``z_e`` (straight through) plus
    ``grad_e``, and ``grad_q`` to ``z_q``. The auxiliary losses' gradients, for where the losses
    themselves cannot be handed out (inside torch.func transforms)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
        z_e: torch.Tensor,  # noqa: ARG004 (z_e: its gradient only)
        z_q: torch.Tensor,
        grad_e: torch.Tensor,
        grad_q: torch.Tensor,
    ) -> torch.Tensor:
        """A copy of ``z_q``, ``(..., D)``; ``z_e`` is an input for its gradient only, ``grad_e``
        and ``grad_q`` (shaped like it) for :meth:`backward`."""
        return z_q.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        """Save ``grad_e`` and ``grad_q`` for :meth:`backward`."""
        ctx.save_for_backward(inputs[2], inputs[3])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        """``grad + grad_e`` to ``z_e``, ``grad_q`` to ``z_q``, nothing to the saved gradients."""
        grad_e, grad_q = ctx.saved_tensors
        return grad + grad_e, grad_q, None, None


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
        data_init: on the first forward pass in training mode, set the codes to randomly chosen
            encodings of that batch (without replacement; cycling when the batch has fewer
            encodings than codes). Off by default here (the paper's N(0, 1) codebook); on by
            default in :class:`VQBottleneck`.
        restart_threshold: EMA mode only: in training, a code whose EMA share of the
            assignments is below ``restart_threshold / num_codes`` (this fraction of a uniform
            share) is dead and re-set to a random encoding of the current batch, its EMA count
            to a uniform share. ``0`` turns restarts off (the default here).
        aux_grad_in_transforms: inside torch.func transforms (the reward ensemble's vmap),
            where ``aux_loss()`` cannot be handed out, add its gradient in the backward pass
            instead (in training, with grad enabled): the commitment term to ``z_e`` and, without
            EMA, the codebook loss to the codes; the same gradients as adding ``aux_loss()`` to
            a loss that is backpropagated once. It is added in every backward pass through the
            layer, so input-gradient penalties (e.g. cross-Lipschitz) see it too. Off by default
            here; on by default in :class:`VQBottleneck`.
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
        data_init: bool = False,
        restart_threshold: float = 0.0,
        aux_grad_in_transforms: bool = False,
    ) -> None:
        super().__init__()
        if restart_threshold < 0:
            raise ValueError(f"restart_threshold must be >= 0, got {restart_threshold}")
        if restart_threshold > 0 and not ema:
            raise ValueError("dead-code restarts (restart_threshold > 0) need ema=True")
        self.num_codes, self.code_dim = num_codes, code_dim
        self.beta, self.ema, self.decay, self.eps = beta, ema, decay, eps
        self.data_init, self.restart_threshold = data_init, float(restart_threshold)
        self.aux_grad_in_transforms = aux_grad_in_transforms
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
        # Whether the data-dependent initialization has run (True from the start without it).
        self.register_buffer("initialized", torch.tensor(not data_init))
        # Codes re-set by dead-code restarts since the last ``reset_usage()``.
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))
        self._aux_loss: torch.Tensor | None = None
        self.last_indices: torch.Tensor | None = None

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # Checkpoints from before data_init/restarts: their codebook is trained, so do not
        # re-initialize it.
        state_dict.setdefault(prefix + "initialized", torch.tensor(True))
        state_dict.setdefault(prefix + "restarts", torch.zeros((), dtype=torch.long))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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
        and in training with ``ema=True`` moves the codebook. In training, first initializes the
        codebook from the batch (``data_init``, once) and restarts dead codes
        (``restart_threshold``). Inside transforms, with ``aux_grad_in_transforms``, the backward
        pass adds the auxiliary losses' gradients to the straight-through one.
        """
        if z_e.shape[-1] != self.code_dim:
            raise ValueError(f"expected (..., {self.code_dim}), got {tuple(z_e.shape)}")
        flat = z_e.reshape(-1, self.code_dim)
        if self.training and flat.shape[0] > 0:
            transformed = torch._C._are_functorch_transforms_active()
            # Outside transforms, skip the work (and the random draws) when there is none; under
            # vmap the buffers are per-member batched tensors, so branch with torch.where.
            if self.data_init and (transformed or not bool(self.initialized)):
                self._init_from(flat.detach())
            if self.restart_threshold > 0:
                self._restart_dead(flat.detach(), transformed)
        with torch.no_grad():
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
            if self.aux_grad_in_transforms and self.training and torch.is_grad_enabled():
                # The gradients of beta * mean ||z_e - sg(e_k)||^2 (commitment) and, without EMA,
                # mean ||sg(z_e) - e_k||^2 (codebook loss), per member under vmap.
                diff = (z_e - z_q).detach()
                grad_e = (2 * self.beta / diff.numel()) * diff
                grad_q = torch.zeros_like(diff) if self.ema else (-2 / diff.numel()) * diff
                return _StraightThroughWithAuxGrad.apply(z_e, z_q, grad_e, grad_q)
        else:
            codebook_loss = 0.0 if self.ema else F.mse_loss(z_q, z_e.detach())
            self._aux_loss = codebook_loss + self.beta * commitment
            self.last_indices = idx.view(z_e.shape[:-1])
        return z_e + (z_q - z_e).detach()

    def _random_rows(self, flat: torch.Tensor) -> torch.Tensor:
        """``K`` rows of ``flat`` in random order, one per code: a random permutation of the rows
        taken cyclically, so no row repeats while ``K <= M`` and each is used when ``K > M``."""
        m = flat.shape[0]
        perm = torch.rand(m, device=flat.device).argsort()
        return flat[perm[torch.arange(self.num_codes, device=flat.device) % m]].to(self.codebook)

    @torch.no_grad()
    def _init_from(self, flat: torch.Tensor) -> None:
        """Codes <- randomly chosen rows of ``flat`` where not ``initialized`` yet; mark it."""
        picks = self._random_rows(flat)
        self.codebook.copy_(torch.where(self.initialized, self.codebook, picks))
        self.initialized.fill_(True)

    @torch.no_grad()
    def _restart_dead(self, flat: torch.Tensor, transformed: bool) -> None:
        """Dead codes (EMA share < ``restart_threshold / K``) <- random rows of ``flat``, their
        EMA count <- a uniform share (and the EMA sum to match)."""
        total = self.ema_count.sum()
        # Before the first EMA update all counts are zero: nothing to judge yet.
        dead = (self.ema_count < self.restart_threshold / self.num_codes * total) & (total > 0)
        if not transformed and not bool(dead.any()):
            return
        picks = self._random_rows(flat)  # distinct rows for distinct dead codes
        share = (total / self.num_codes).expand(self.num_codes)
        self.codebook.copy_(torch.where(dead[:, None], picks, self.codebook))
        self.ema_count.copy_(torch.where(dead, share, self.ema_count))
        self.ema_sum.copy_(torch.where(dead[:, None], picks * share[:, None], self.ema_sum))
        self.restarts.add_(dead.sum())

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
                "(under vmap, e.g. in the reward ensemble, use aux_grad_in_transforms=True, the "
                "vq backbone's default, to apply its gradients in the backward pass, and/or "
                "ema=True: the codebook then learns without it)"
            )
        return self._aux_loss

    def code_stats(self) -> dict[str, float]:
        """Usage since the last ``reset_usage()``: ``dead_codes`` (count), ``dead_fraction``,
        ``perplexity`` (exp of the entropy of the code frequencies; K when all are equal) and
        ``restarts`` (codes re-set by dead-code restarts)."""
        counts = self.usage.double()
        total = counts.sum().clamp(min=1.0)
        p = counts / total
        entropy = -(p * torch.log(p.clamp(min=1e-12))).sum()
        dead = int((self.usage == 0).sum())
        return {
            "dead_codes": float(dead),
            "dead_fraction": dead / self.num_codes,
            "perplexity": float(torch.exp(entropy)),
            "restarts": float(self.restarts),
        }

    def dead_codes(self) -> torch.Tensor:
        """Indices of the codes unused since the last ``reset_usage()``: ``(n_dead,)`` long."""
        return torch.nonzero(self.usage == 0).flatten()

    def reset_usage(self) -> None:
        """Zero the usage counts and the restart count that :meth:`code_stats` reports."""
        self.usage.zero_()
        self.restarts.zero_()


class VQBottleneck(nn.Module):
    """An encoder backbone, a linear map to ``n_latents`` vectors of ``code_dim``, and their
    quantization; output ``(B, n_latents * code_dim)``, the concatenated codes.

    Args:
        encoder: the backbone under the bottleneck (any module with ``out_dim``).
        n_latents: how many codes describe one observation.
        data_init: initialize the codebook from the first training batch's encodings (on by
            default here, unlike in :class:`VectorQuantizer`).
        restart_threshold: dead-code restart threshold, a fraction of a uniform share (see
            :class:`VectorQuantizer`); ``None`` gives 0.1 with ``ema=True`` and 0 (off, restarts
            need EMA) otherwise.
        **quantizer_kwargs: :class:`VectorQuantizer` arguments (num_codes, code_dim, beta, ...);
            ``aux_grad_in_transforms`` defaults to True here.
    """

    def __init__(
        self,
        encoder: nn.Module,
        n_latents: int = 8,
        data_init: bool = True,
        restart_threshold: float | None = None,
        **quantizer_kwargs,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        if restart_threshold is None:
            restart_threshold = 0.1 if quantizer_kwargs.get("ema", False) else 0.0
        quantizer_kwargs.setdefault("aux_grad_in_transforms", True)
        self.quantizer = VectorQuantizer(
            data_init=data_init, restart_threshold=restart_threshold, **quantizer_kwargs
        )
        self.n_latents = n_latents
        self.project = nn.Linear(encoder.out_dim, n_latents * self.quantizer.code_dim)
        self.out_dim = int(n_latents * self.quantizer.code_dim)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """Continuous latents before quantization: ``(B, n_latents, code_dim)``."""
        z = self.project(self.encoder(obs))
        return z.view(z.shape[0], self.n_latents, self.quantizer.code_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Quantized latents, flattened: ``(B, *obs_shape) -> (B, n_latents * code_dim)``."""
        return self.quantizer(self.encode(obs)).flatten(1)

    def aux_loss(self) -> torch.Tensor:
        """The quantizer's codebook/commitment loss of the last forward pass (scalar)."""
        return self.quantizer.aux_loss()

    def code_stats(self) -> dict[str, float]:
        """The quantizer's code usage (see :meth:`VectorQuantizer.code_stats`)."""
        return self.quantizer.code_stats()

    def reset_usage(self) -> None:
        """Zero the quantizer's usage and restart counts."""
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
