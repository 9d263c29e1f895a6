"""The Value Prediction Network's modules (Oh, Singh & Lee 2017, section 3.1).

- encoding ``f_enc``: observation -> abstract state ``s``, a feature map ``(B, C, H, W)``;
- value ``f_value``: ``s -> V(s)``;
- outcome ``f_out``: ``(s, o) -> (r, t)``, the option's reward and predicted duration
  ``t >= 1`` (in primitive steps), whose discount is ``gamma ** t``;
- transition ``f_trans``: ``(s, o) -> s'``, an option-conditional conv with a gated residual.

All four are trained only through reward, discount and value prediction: nothing
reconstructs observations. Convolutions follow the paper's official code: ELU
activations, option-conditional 3x3 convs (one set of filters per option), abstract
states on a 5x5 grid for Collect.
"""

from __future__ import annotations

from typing import NamedTuple

import gymnasium as gym
import torch
from torch import nn
from torch.nn import functional as F

from rlkit.nn import make_backbone
from rlkit.nn.basic import is_channels_last


class Expansion(NamedTuple):
    """What the model predicts for every option from each of ``N`` abstract states.

    Attributes:
        reward: option rewards ``(N, O)``.
        duration: predicted durations ``(N, O)``, >= 1, in primitive steps.
        discount: ``gamma ** duration``, ``(N, O)``.
        value: value of each next abstract state ``(N, O)``.
        next_state: next abstract states ``(N, O, C, H, W)``.
    """

    reward: torch.Tensor
    duration: torch.Tensor
    discount: torch.Tensor
    value: torch.Tensor
    next_state: torch.Tensor


class CollectEncoder(nn.Module):
    """The paper's Collect encoder: convs (32, 3x3), (32, 3x3), (C, 4x4, stride 2), ELU.

    Input ``(B, 10, 10, 4)`` float (wall, agent, goal, time-remaining planes; the time is
    simply one more input channel), output ``(B, C, 5, 5)``.
    """

    def __init__(self, obs_shape: tuple[int, ...], channels: int) -> None:
        super().__init__()
        h, w, c = obs_shape
        self.net = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ELU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ELU(),
            nn.Conv2d(32, channels, 4, stride=2, padding=1), nn.ELU(),
        )  # fmt: skip
        with torch.no_grad():
            self.state_shape = tuple(self.net(torch.zeros(1, c, h, w)).shape[1:])

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Grids ``(B, H, W, C)`` -> abstract states ``(B, *state_shape)``."""
        return self.net(obs.float().permute(0, 3, 1, 2))


class BackboneEncoder(nn.Module):
    """A registry backbone (e.g. ``nature_cnn`` on Atari), its features mapped to a ``(C, S, S)``
    feature map so that the option-conditional conv transition applies unchanged."""

    def __init__(
        self, name: str, observation_space: gym.spaces.Space, channels: int, side: int = 5
    ) -> None:
        super().__init__()
        self.backbone = make_backbone(name, observation_space)
        self.proj = nn.Linear(self.backbone.out_dim, channels * side * side)
        self.state_shape = (channels, side, side)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations ``(B, *obs_shape)`` -> abstract states ``(B, C, S, S)``."""
        return F.elu(self.proj(self.backbone(obs))).view(-1, *self.state_shape)


class OptionConv(nn.Module):
    """A 3x3 conv with one filter bank per option: ``(N, C, H, W) -> (N, O, K, H, W)``.

    All options are computed by one conv with ``O * K`` output channels, which is what
    lets the planner expand every option of a node in one pass.
    """

    def __init__(self, in_channels: int, out_channels: int, num_options: int) -> None:
        super().__init__()
        self.num_options, self.out_channels = num_options, out_channels
        self.conv = nn.Conv2d(in_channels, num_options * out_channels, 3, padding=1)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> every option's features ``(N, O, K, H, W)``, ELU applied."""
        n, _, h, w = state.shape
        return F.elu(self.conv(state)).view(n, self.num_options, self.out_channels, h, w)


class Transition(nn.Module):
    """``s' = ELU(dec2(h) * sigmoid(gate(h)) + s)`` with ``h = ELU(dec1(option_conv(s, o)))``.

    The residual connection makes "nothing changes" the easy default; the gate decides
    per cell and channel how much of the option's effect is written.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dec1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.gate = nn.Conv2d(channels, channels, 1)
        self.dec2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, state: torch.Tensor, option_features: torch.Tensor) -> torch.Tensor:
        """``state (M, C, H, W)`` and its option's conv features ``(M, C, H, W)`` -> ``(M, C, H, W)``."""
        h = F.elu(self.dec1(option_features))
        return F.elu(self.dec2(h) * torch.sigmoid(self.gate(h)) + state)


class Outcome(nn.Module):
    """Option reward and duration from the option's conv features.

    ``duration = relu(raw) + 1`` keeps it >= 1 primitive step; the discount is
    ``gamma ** duration``.
    """

    def __init__(self, channels: int, cells: int, hidden: int) -> None:
        super().__init__()
        self.dec = nn.Conv2d(channels, channels, 3, padding=1)
        self.reward = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * cells, hidden), nn.ELU(), nn.Linear(hidden, 1)
        )
        self.duration = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * cells, hidden), nn.ELU(), nn.Linear(hidden, 1)
        )

    def forward(self, option_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(M, C, H, W)`` -> reward ``(M,)``, duration ``(M,)``."""
        h = F.elu(self.dec(option_features))
        return self.reward(h).squeeze(-1), F.relu(self.duration(h).squeeze(-1)) + 1.0


class Value(nn.Module):
    """``V(s)``: flatten, a hidden ELU layer, a scalar. ``(M, C, H, W) -> (M,)``."""

    def __init__(self, channels: int, cells: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * cells, hidden), nn.ELU(), nn.Linear(hidden, 1)
        )

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """Abstract states ``(M, C, H, W)`` -> values ``(M,)``."""
        return self.net(state).squeeze(-1)


def auto_backbone(observation_space: gym.spaces.Box) -> str:
    """``collect_conv`` for float ``(H, W, C)`` grids, ``nature_cnn`` for other images, else ``mlp``."""
    shape = tuple(observation_space.shape)
    if len(shape) == 3 and observation_space.dtype != "uint8" and is_channels_last(shape):
        return "collect_conv"
    return "nature_cnn" if len(shape) == 3 else "mlp"


class VPNetwork(nn.Module):
    """The whole VPN: encoder, value, outcome and transition modules.

    Args:
        observation_space: a Box; ``(H, W, C)`` float grids use the paper's conv encoder,
            other images (Atari's ``(84, 84, 4)`` uint8) the backbone ``backbone``.
        num_options: number of options (the env's discrete actions).
        gamma: per-primitive-step discount (0.98 for Collect, 0.99 for Atari).
        channels: abstract-state channels ``C``.
        hidden: width of the hidden layer of the value, reward and duration heads.
        backbone: ``"auto"`` (see :func:`auto_backbone`), ``"collect_conv"`` (the paper's conv),
            or a name in the :mod:`rlkit.nn` registry.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Box,
        num_options: int,
        gamma: float,
        channels: int = 32,
        hidden: int = 64,
        backbone: str = "auto",
    ) -> None:
        super().__init__()
        shape = tuple(observation_space.shape)
        self.num_options, self.gamma = num_options, gamma
        if backbone == "auto":
            backbone = auto_backbone(observation_space)
        if backbone == "collect_conv":
            self.encoder: nn.Module = CollectEncoder(shape, channels)
        else:
            self.encoder = BackboneEncoder(backbone, observation_space, channels)
        self.state_shape: tuple[int, int, int] = tuple(self.encoder.state_shape)
        c, h, w = self.state_shape
        self.option_conv = OptionConv(c, 2 * c, num_options)
        self.transition = Transition(c)
        self.outcome = Outcome(c, h * w, hidden)
        self.value = Value(c, h * w, hidden)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations ``(N, *obs_shape)`` -> abstract states ``(N, C, H, W)``."""
        return self.encoder(obs)

    def _predict(self, state: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c = self.state_shape[0]
        next_state = self.transition(state, feats[:, :c])
        reward, duration = self.outcome(feats[:, c:])
        discount = torch.pow(torch.as_tensor(self.gamma, dtype=duration.dtype), duration)
        return reward, duration, discount, self.value(next_state), next_state

    def expand(self, state: torch.Tensor) -> Expansion:
        """Predictions for every option from ``state (N, C, H, W)``, in one batched pass."""
        n, o = state.shape[0], self.num_options
        feats = self.option_conv(state).flatten(0, 1)  # (N*O, 2C, H, W)
        parents = state.unsqueeze(1).expand(n, o, *self.state_shape).flatten(0, 1)
        out = self._predict(parents, feats)
        return Expansion(*(x.view(n, o, *x.shape[1:]) for x in out))

    def step(self, state: torch.Tensor, option: torch.Tensor) -> Expansion:
        """Predictions for one given option per state: ``state (N, C, H, W)``, ``option (N,)``.

        Returns an Expansion whose fields have no option dimension (``(N,)`` and
        ``(N, C, H, W)``).
        """
        feats = self.option_conv(state)[torch.arange(len(state)), option]
        return Expansion(*self._predict(state, feats))
