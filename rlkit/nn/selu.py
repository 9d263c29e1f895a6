"""Self-normalizing network (Klambauer et al. 2017, "Self-Normalizing Neural Networks",
https://arxiv.org/abs/1706.02515).

``selu(x) = lambda * x`` for ``x > 0`` and ``lambda * alpha * (exp(x) - 1)`` otherwise, with
``alpha ~ 1.6733`` and ``lambda ~ 1.0507`` chosen so that zero mean and unit variance is a
stable fixed point of the layer map when weights have zero mean and variance ``1/fan_in``
(LeCun-normal init). Alpha-dropout keeps that fixed point in training by dropping units to the
negative saturation value ``-lambda * alpha`` and then correcting mean and variance affinely.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlkit.nn.registry import register_backbone

# The paper's closed forms (eq. 14); torch.nn.SELU uses the same constants.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_LAMBDA = 1.0507009873554804934193349852946


def lecun_normal_(weight: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """In place: ``N(0, 1/fan_in)``, the init the fixed-point analysis assumes."""
    fan_in = weight.shape[1] * int(np.prod(weight.shape[2:]))
    with torch.no_grad():
        return weight.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)


class SELUMLP(nn.Module):
    """Flatten, then ``Linear -> SELU -> AlphaDropout`` per hidden size, LeCun-normal weights and
    zero biases.

    Input ``(B, *obs_shape)``, output ``(B, out_dim)`` with ``out_dim = hidden[-1]``.

    Args:
        in_dim: flattened observation size.
        hidden: widths of the hidden layers.
        dropout: alpha-dropout rate (the paper uses 0.05 to 0.1; 0 disables it).
        seed: seed of the initial weights (``None`` uses torch's global generator).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (64, 64),
        dropout: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("a SELU MLP needs at least one hidden layer")
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_dim
        for width in hidden:
            linear = nn.Linear(prev, width)
            lecun_normal_(linear.weight, gen)
            nn.init.zeros_(linear.bias)
            layers += [linear, nn.SELU()]
            if dropout > 0:
                layers.append(nn.AlphaDropout(dropout))
            prev = width
        self.net = nn.Sequential(*layers)
        self.out_dim = int(prev)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``(B, *obs_shape) -> (B, out_dim)``, in the weights' dtype."""
        return self.net(obs.to(self.net[1].weight.dtype))


@register_backbone("selu_mlp")
def make_selu_mlp(observation_space: gym.spaces.Space, **kwargs) -> SELUMLP:
    """A :class:`SELUMLP` over the flattened observation space; ``kwargs`` go to :class:`SELUMLP`.

    Raises:
        ValueError: the space has no shape.
    """
    if observation_space.shape is None:
        raise ValueError("the selu_mlp backbone needs an observation space with a shape")
    return SELUMLP(int(np.prod(observation_space.shape)), **kwargs)
