"""Relation Network (Santoro et al. 2017, "A simple neural network module for relational
reasoning", https://arxiv.org/abs/1706.01427).

``RN(O, q) = f( sum_{i,j} g([o_i, o_j, q]) )`` over all ordered pairs of objects ``o_1..o_N``
(``i = j`` included, as in the paper), optionally conditioned on a vector ``q``. The objects are
either the rows of an ``(N, d)`` observation (entity vectors) or the cells of a CNN feature map,
each tagged with its ``(x, y)`` coordinate in ``[-1, 1]`` (the paper's CLEVR-from-pixels setup).
The sum makes the output invariant to the order of the objects.

g's first layer is linear in ``[o_i, o_j, q]``, so it is computed as ``W_i o_i + W_j o_j + W_q q
+ b`` from per-object products and broadcast over pairs: the same function as concatenating each
pair, without materializing the ``(B, N, N, 2d + |q|)`` pair tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import torch
from torch import nn

from rlkit.nn.basic import is_channels_last
from rlkit.nn.registry import register_backbone


def _mlp(sizes: Sequence[int], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class RelationModule(nn.Module):
    """``(B, N, obj_dim)`` objects (and ``(B, cond_dim)`` condition) -> ``(B, out_dim)``.

    Args:
        obj_dim: size of one object vector.
        cond_dim: size of the conditioning vector q (0: unconditioned).
        g_hidden: widths of g's layers (each followed by ReLU).
        f_hidden: widths of f's layers (each followed by ReLU); ``out_dim = f_hidden[-1]``.
        dropout: dropout after each layer of f (the paper uses 0.5 before its last layer).
    """

    def __init__(
        self,
        obj_dim: int,
        cond_dim: int = 0,
        g_hidden: Sequence[int] = (64, 64),
        f_hidden: Sequence[int] = (64,),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not g_hidden or not f_hidden:
            raise ValueError("g_hidden and f_hidden need at least one layer each")
        self.obj_dim, self.cond_dim = obj_dim, cond_dim
        self.g_in = nn.Linear(2 * obj_dim + cond_dim, g_hidden[0])
        self.g_rest = _mlp(g_hidden)
        self.f = _mlp([g_hidden[-1], *f_hidden], dropout)
        self.out_dim = int(f_hidden[-1])

    def pair_sum(self, objects: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``sum_{i,j} g([o_i, o_j, q])``: ``(B, N, d) -> (B, g_hidden[-1])``."""
        d = self.obj_dim
        w = self.g_in.weight
        left = objects @ w[:, :d].T  # (B, N, h): W_i o_i
        right = objects @ w[:, d : 2 * d].T  # (B, N, h): W_j o_j
        bias = self.g_in.bias
        if self.cond_dim:
            if cond is None:
                raise ValueError(
                    f"this relation network is conditioned: pass cond (B, {self.cond_dim})"
                )
            bias = bias + cond @ w[:, 2 * d :].T  # (B, h)
            bias = bias[:, None, None, :]
        pre = left[:, :, None, :] + right[:, None, :, :] + bias  # (B, N, N, h)
        return self.g_rest(torch.relu(pre)).sum(dim=(1, 2))

    def forward(self, objects: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``f(sum_{i,j} g([o_i, o_j, q]))``: objects ``(B, N, obj_dim)`` and ``cond``
        ``(B, cond_dim)`` (needed iff ``cond_dim > 0``) -> ``(B, out_dim)``."""
        return self.f(self.pair_sum(objects, cond))


def cell_objects(feature_map: torch.Tensor) -> torch.Tensor:
    """Feature-map cells as objects tagged with coordinates: ``(B, C, H, W) -> (B, H*W, C+2)``.

    The coordinates ``(x, y)`` are in ``[-1, 1]``, x along the width.
    """
    b, _, h, w = feature_map.shape
    ys = torch.linspace(-1.0, 1.0, h, dtype=feature_map.dtype, device=feature_map.device)
    xs = torch.linspace(-1.0, 1.0, w, dtype=feature_map.dtype, device=feature_map.device)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    coords = torch.stack([xx, yy]).expand(b, 2, h, w)
    return torch.cat([feature_map, coords], dim=1).flatten(2).transpose(1, 2)


class RelationNet(nn.Module):
    """Relation-network backbone for entity observations ``(B, N, d)`` or images.

    Images ``(B, H, W, C)`` or ``(B, C, H, W)`` (scaled by ``scale``) go through the paper's
    stem of ``conv_layers`` ``Conv3x3/2 -> ReLU`` layers with ``channels`` kernels; each cell of
    the resulting map is an object. ``stem`` replaces that stem with one ``Conv -> ReLU`` layer
    per ``(out_channels, kernel, stride, padding)`` tuple, e.g. a Nature-CNN-like front that
    ends in a small map (fewer cells: the pair sum costs the square of their number).
    Output ``(B, out_dim)``; ``forward(obs, cond)`` takes the optional conditioning vector
    ``(B, cond_dim)``.
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        cond_dim: int = 0,
        g_hidden: Sequence[int] = (64, 64),
        f_hidden: Sequence[int] = (64,),
        dropout: float = 0.0,
        channels: int = 24,
        conv_layers: int = 4,
        scale: float = 1.0 / 255.0,
        stem: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        self.image = len(obs_shape) == 3
        self.channels_last = self.image and is_channels_last(obs_shape)
        self.scale = scale
        if self.image:
            c = obs_shape[2] if self.channels_last else obs_shape[0]
            if stem is None:
                stem = [(channels, 3, 2, 1)] * conv_layers
            if not stem or any(len(layer) != 4 for layer in stem):
                raise ValueError(
                    f"stem needs at least one (out_channels, kernel, stride, padding), got {stem}"
                )
            convs: list[nn.Module] = []
            for out, kernel, stride, padding in stem:
                convs += [nn.Conv2d(c, int(out), int(kernel), int(stride), int(padding)), nn.ReLU()]
                c = int(out)
            self.stem = nn.Sequential(*convs)
            obj_dim = c + 2
        elif len(obs_shape) == 2:
            self.stem = nn.Identity()
            obj_dim = int(obs_shape[1])
        else:
            raise ValueError(
                f"the relation backbone needs (N, d) entity or (H, W, C)/(C, H, W) image "
                f"observations, got shape {tuple(obs_shape)}"
            )
        self.relation = RelationModule(obj_dim, cond_dim, g_hidden, f_hidden, dropout)
        self.out_dim = self.relation.out_dim

    def objects(self, obs: torch.Tensor) -> torch.Tensor:
        """The objects of a batch of observations: ``(B, N, obj_dim)``."""
        x = obs.to(self.relation.g_in.weight.dtype)  # uint8 pixels, float64 states
        if not self.image:
            return x
        x = x * self.scale
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        return cell_objects(self.stem(x))

    def forward(self, obs: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Entities ``(B, N, d)`` or images ``(B, H, W, C)``/``(B, C, H, W)``, and ``cond``
        ``(B, cond_dim)`` if conditioned -> ``(B, out_dim)``."""
        return self.relation(self.objects(obs), cond)


@register_backbone("relation")
def make_relation(observation_space: gym.spaces.Space, **kwargs) -> RelationNet:
    """A :class:`RelationNet` for the space's shape; ``kwargs`` go to :class:`RelationNet`.

    Raises:
        ValueError: the space has no shape, or one neither ``(N, d)`` nor an image's.
    """
    if observation_space.shape is None:
        raise ValueError("the relation backbone needs an observation space with a shape")
    return RelationNet(observation_space.shape, **kwargs)
