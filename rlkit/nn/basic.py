"""The two basic backbones: an MLP for vector observations and the Nature DQN CNN for pixels."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlkit.nn.registry import register_backbone

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
}


def make_norm(kind: str, num_features: int, conv: bool = False, **kwargs) -> nn.Module:
    """A normalization layer by name: ``none``, ``batchnorm`` or ``batch_renorm``.

    Further kinds (batch renormalization) are added to ``NORMS`` by their own modules;
    ``kwargs`` (e.g. batch renorm's r_max/d_max schedule) go to the layer's constructor.
    """
    if kind not in NORMS:
        raise ValueError(f"unknown norm {kind!r}; known: {', '.join(sorted(NORMS))}")
    return NORMS[kind](num_features, conv, **kwargs)


NORMS: dict[str, callable] = {
    "none": lambda n, conv: nn.Identity(),
    "batchnorm": lambda n, conv: nn.BatchNorm2d(n) if conv else nn.BatchNorm1d(n),
}


class MLP(nn.Module):
    """Flatten, then ``Linear -> norm -> activation -> dropout`` for each hidden size.

    Input ``(B, *obs_shape)``, output ``(B, out_dim)`` with ``out_dim = hidden[-1]``.
    ``norm_kwargs`` go to each norm layer (e.g. batch renorm's r_max/d_max schedule).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "leaky_relu",
        norm: str = "none",
        dropout: float = 0.0,
        norm_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        norm_kwargs = norm_kwargs or {}
        if not hidden:
            raise ValueError("an MLP needs at least one hidden layer")
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_dim
        for width in hidden:
            norm_layer = make_norm(norm, width, **norm_kwargs)
            layers += [nn.Linear(prev, width), norm_layer, _ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = width
        self.net = nn.Sequential(*layers)
        self.out_dim = int(prev)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``(B, *obs_shape) -> (B, out_dim)``, observations cast to float32."""
        return self.net(obs.float())


@register_backbone("mlp")
def make_mlp(observation_space: gym.spaces.Space, **kwargs) -> MLP:
    """An :class:`MLP` over the flattened observation space; ``kwargs`` go to :class:`MLP`.

    Raises:
        ValueError: the space has no shape.
    """
    if observation_space.shape is None:
        raise ValueError("the mlp backbone needs an observation space with a shape")
    return MLP(int(np.prod(observation_space.shape)), **kwargs)


def is_channels_last(shape: Sequence[int]) -> bool:
    """Image layout guess: SB3's Atari stack is ``(84, 84, 4)``, PyTorch's ``(4, 84, 84)``."""
    return len(shape) == 3 and shape[-1] < shape[0] and shape[-1] <= 16


class NatureCNN(nn.Module):
    """The DQN Nature network (Mnih et al. 2015) as a feature extractor.

    Input ``(B, H, W, C)`` or ``(B, C, H, W)`` images (uint8 scaled by 1/255), output
    ``(B, features_dim)``. ``channels`` are the kernel counts of the three conv layers (the
    paper's 32, 64, 64; smaller ones make a cheaper network). ``norm_kwargs`` go to each norm
    layer (e.g. batch renorm's schedule).
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        features_dim: int = 512,
        norm: str = "none",
        dropout: float = 0.0,
        scale: float = 1.0 / 255.0,
        norm_kwargs: dict | None = None,
        channels: Sequence[int] = (32, 64, 64),
    ) -> None:
        super().__init__()
        nk = norm_kwargs or {}
        if len(channels) != 3:
            raise ValueError(f"nature_cnn has three conv layers: give 3 channels, got {channels}")
        c1, c2, c3 = (int(n) for n in channels)
        self.channels_last = is_channels_last(obs_shape)
        c, h, w = (obs_shape[2], obs_shape[0], obs_shape[1]) if self.channels_last else obs_shape
        self.scale = scale
        act = nn.ReLU
        self.conv = nn.Sequential(
            nn.Conv2d(c, c1, 8, stride=4), make_norm(norm, c1, conv=True, **nk), act(),
            nn.Conv2d(c1, c2, 4, stride=2), make_norm(norm, c2, conv=True, **nk), act(),
            nn.Conv2d(c2, c3, 3, stride=1), make_norm(norm, c3, conv=True, **nk), act(),
            nn.Flatten(),
        )  # fmt: skip
        with torch.no_grad():
            n_flat = self.conv(torch.zeros(1, c, h, w)).shape[1]
        head: list[nn.Module] = [nn.Linear(n_flat, features_dim), act()]
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        self.head = nn.Sequential(*head)
        self.out_dim = int(features_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` or ``(B, C, H, W)`` -> ``(B, features_dim)``."""
        x = obs.float() * self.scale
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        return self.head(self.conv(x))


@register_backbone("nature_cnn")
def make_nature_cnn(observation_space: gym.spaces.Space, **kwargs) -> NatureCNN:
    """A :class:`NatureCNN` for image observations; ``kwargs`` go to :class:`NatureCNN`.

    Raises:
        ValueError: the space is not 3-dimensional.
    """
    shape = observation_space.shape
    if shape is None or len(shape) != 3:
        raise ValueError(f"the nature_cnn backbone needs image observations (3 dims), got {shape}")
    return NatureCNN(shape, **kwargs)
