"""Cross-Lipschitz regularization (Hein and Andriushchenko 2017, "Formal Guarantees on the
Robustness of a Classifier against Adversarial Manipulation", https://arxiv.org/abs/1705.08475).

The robustness guarantee of a classifier depends on how differently its outputs change with the
input, so the paper penalizes, at the training points,

    Omega(f) = 1 / (n L^2) * sum_i sum_{l, m} || grad_x f_l(x_i) - grad_x f_m(x_i) ||^2

(eq. 5, with n points and L outputs). It is computed from the per-sample Jacobian ``J`` (L x d)
with ``sum_{l,m} ||J_l - J_m||^2 = 2 L sum_l ||J_l - mean_m J_m||^2`` (the centred form does
not cancel catastrophically and is never negative). Note that a
model with one output (L = 1) has a zero penalty; for a reward model it applies to outputs
that compete, such as the two logits of a Bradley-Terry preference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def input_jacobian(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Per-sample Jacobians of ``f: (B, *in) -> (B, L)``: ``(B, L, prod(in))``, differentiable.

    Uses one backward pass per output, summed over the batch, which gives per-sample gradients
    because samples do not interact in ``f`` (no batch statistics in training mode).
    """
    x = x.detach().requires_grad_(True)
    out = f(x)
    if out.dim() != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(f"f must map (B, ...) to (B, L), got output {tuple(out.shape)}")
    rows = [
        torch.autograd.grad(out[:, l].sum(), x, create_graph=True)[0].flatten(1)
        for l in range(out.shape[1])  # noqa: E741 (the paper's index)
    ]
    return torch.stack(rows, dim=1)


def cross_lipschitz_penalty(
    f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """``Omega(f)`` at the points ``x`` ``(B, *in)`` for ``f: (B, *in) -> (B, L)``: a scalar
    tensor with a graph to ``f``'s parameters, so it can be added to a loss."""
    jac = input_jacobian(f, x)  # (B, L, d)
    n_out = jac.shape[1]
    centred = jac - jac.mean(dim=1, keepdim=True)
    return 2.0 * centred.pow(2).sum(dim=(1, 2)).mean() / n_out
