"""Reversible residual network (Gomez et al. 2017, "The Reversible Residual Network:
Backpropagation Without Storing Activations", https://arxiv.org/abs/1707.04585).

A reversible block splits its input along the channel dimension into ``(x1, x2)`` and computes::

    y1 = x1 + F(x2)            x2 = y2 - G(y1)
    y2 = x2 + G(y1)            x1 = y1 - F(x2)      (the inverse)

A stack of blocks runs forward without recording a graph and keeps only its output. The
backward pass (the paper's Algorithm 1) walks the blocks in reverse: it rebuilds each block's
input from its output, recomputes F and G locally with grad enabled, and backpropagates through
them, so the memory held for the stack does not grow with its depth. Downsampling layers
(the stem) are not reversible and store their activations, as in the paper.

F and G must be deterministic (no dropout, no batch statistics), or the recomputation would
differ from the forward pass. Under ``torch.func`` transforms (the reward ensemble's vmap) the
stack falls back to ordinary autograd, which gives the same values and gradients. The
memory-saving backward is first-order only: for double backward (e.g. the cross-Lipschitz
penalty, a gradient of input gradients) build the network with ``reversible_backward=False``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from rlkit.nn.basic import is_channels_last
from rlkit.nn.registry import register_backbone


class ReversibleBlock(nn.Module):
    """``(x1, x2) -> (x1 + F(x2), x2 + G(y1))`` on ``(B, 2h, *spatial)``, split on dim 1."""

    def __init__(self, f: nn.Module, g: nn.Module) -> None:
        super().__init__()
        self.f = f
        self.g = g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 2h, *spatial) -> (B, 2h, *spatial)``, with grad recorded as usual."""
        x1, x2 = x.chunk(2, dim=1)
        y1 = x1 + self.f(x2)
        y2 = x2 + self.g(y1)
        return torch.cat([y1, y2], dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """The block's input from its output: ``(B, 2h, *spatial) -> (B, 2h, *spatial)``."""
        y1, y2 = y.chunk(2, dim=1)
        x2 = y2 - self.g(y1)
        x1 = y1 - self.f(x2)
        return torch.cat([x1, x2], dim=1)

    def block_params(self) -> list[nn.Parameter]:
        """F's parameters then G's, in the order :meth:`reverse_grad` returns their gradients."""
        return list(self.f.parameters()) + list(self.g.parameters())

    def reverse_grad(
        self, y: torch.Tensor, dy: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None]]:
        """Algorithm 1 of the paper: from output ``y`` and its gradient ``dy`` get the input
        ``x``, its gradient ``dx`` and the gradients of :meth:`block_params`."""
        y1, y2 = y.chunk(2, dim=1)
        dy1, dy2 = dy.chunk(2, dim=1)
        f_params, g_params = list(self.f.parameters()), list(self.g.parameters())
        with torch.enable_grad():
            z1 = y1.detach().requires_grad_(True)
            g_out = self.g(z1)
            dz1, *g_grads = torch.autograd.grad(g_out, [z1, *g_params], dy2, allow_unused=True)
        with torch.no_grad():
            x2 = y2 - g_out.detach()
            dx1 = dy1 + dz1
        with torch.enable_grad():
            x2 = x2.detach().requires_grad_(True)
            f_out = self.f(x2)
            dx2_f, *f_grads = torch.autograd.grad(f_out, [x2, *f_params], dx1, allow_unused=True)
        with torch.no_grad():
            x1 = y1 - f_out.detach()
            dx2 = dy2 + dx2_f
            x = torch.cat([x1, x2.detach()], dim=1)
            dx = torch.cat([dx1, dx2], dim=1)
        return x, dx, f_grads + g_grads


class _Tape:
    """Hands each block's reconstructed input to the previous block's backward pass."""

    def __init__(self) -> None:
        self.outputs: dict[int, torch.Tensor] = {}


class _ReversibleBlockFunction(torch.autograd.Function):
    """One block of a reversible stack that stores no activation (see the module docstring).

    Only the stack's last block saves its output; every other block gets its output from the
    next block's backward pass, which rebuilt it as that block's input. Each block returns its
    own parameter gradients, so autograd accumulates and frees them block by block.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        block: ReversibleBlock,
        tape: _Tape,
        index: int,
        is_last: bool,
        *params: nn.Parameter,
    ) -> torch.Tensor:
        """``block(x)``, ``(B, 2h, *spatial) -> (B, 2h, *spatial)``, without recording a graph;
        ``params`` (the block's) are inputs only so that autograd asks for their gradients."""
        with torch.no_grad():
            y = block(x)
        ctx.block, ctx.tape, ctx.index, ctx.is_last = block, tape, index, is_last
        if is_last:
            ctx.save_for_backward(y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """Rebuild the block's input, hand it to the previous block on the tape; return
        ``dx`` ``(B, 2h, *spatial)``, ``None`` for the non-tensor inputs, then the params' grads."""
        y = ctx.saved_tensors[0] if ctx.is_last else ctx.tape.outputs.pop(ctx.index)
        x, dx, grads = ctx.block.reverse_grad(y, dy)
        if ctx.index > 0:
            ctx.tape.outputs[ctx.index - 1] = x
        return (dx, None, None, None, None, *grads)


class ReversibleSequence(nn.Module):
    """A stack of :class:`ReversibleBlock` with the memory-saving backward pass.

    Args:
        blocks: the blocks, applied in order.
        reversible_backward: reconstruct activations in the backward pass (the RevNet way);
            ``False`` stores them like any network (same values and gradients, more memory).
    """

    def __init__(self, blocks: Sequence[ReversibleBlock], reversible_backward: bool = True) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.reversible_backward = reversible_backward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 2h, *spatial) -> (B, 2h, *spatial)``."""
        if (
            self.reversible_backward
            and torch.is_grad_enabled()
            and not torch._C._are_functorch_transforms_active()
        ):
            tape, last = _Tape(), len(self.blocks) - 1
            for i, block in enumerate(self.blocks):
                x = _ReversibleBlockFunction.apply(
                    x, block, tape, i, i == last, *block.block_params()
                )
            return x
        for block in self.blocks:
            x = block(x)
        return x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """The stack's input from its output."""
        for block in reversed(self.blocks):
            y = block.inverse(y)
        return y


def _as_dtype(obs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Observations (uint8 pixels, float64 MuJoCo states) in the network's float dtype."""
    return obs.to(weight.dtype)


class RevNetMLP(nn.Module):
    """RevNet for vector observations: ``Linear`` stem to ``width``, reversible blocks whose F
    and G are ``Linear(width/2, inner) -> ReLU -> Linear(inner, width/2)``, then ReLU.

    Input ``(B, *obs_shape)`` (flattened), output ``(B, width)``.
    """

    def __init__(
        self,
        in_dim: int,
        width: int = 128,
        n_blocks: int = 4,
        inner: int | None = None,
        reversible_backward: bool = True,
    ) -> None:
        super().__init__()
        if width % 2 or width < 2:
            raise ValueError(f"RevNet width must be even (it is split in two), got {width}")
        if n_blocks < 0:
            raise ValueError(f"RevNet n_blocks must be >= 0, got {n_blocks}")
        half, inner = width // 2, inner or width

        def residual() -> nn.Module:
            return nn.Sequential(nn.Linear(half, inner), nn.ReLU(), nn.Linear(inner, half))

        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, width))
        self.blocks = ReversibleSequence(
            [ReversibleBlock(residual(), residual()) for _ in range(n_blocks)], reversible_backward
        )
        self.out_dim = int(width)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``(B, *obs_shape) -> (B, width)``."""
        return torch.relu(self.blocks(self.stem(_as_dtype(obs, self.stem[1].weight))))


class RevNetCNN(nn.Module):
    """RevNet for images: a non-reversible strided stem (``Conv 8x8/4 -> ReLU -> Conv 4x4/2 ->
    ReLU``, the Nature-CNN front, with ``stem_channels`` then ``channels`` kernels), reversible
    blocks whose F and G are ``Conv3x3 -> ReLU -> Conv3x3`` on half the channels, then
    ``ReLU -> Flatten -> Linear -> ReLU``.

    Input ``(B, H, W, C)`` or ``(B, C, H, W)`` images (scaled by ``scale``), output
    ``(B, features_dim)``.
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        channels: int = 64,
        n_blocks: int = 4,
        features_dim: int = 256,
        reversible_backward: bool = True,
        scale: float = 1.0 / 255.0,
        stem_channels: int = 32,
    ) -> None:
        super().__init__()
        if channels % 2 or channels < 2:
            raise ValueError(f"RevNet channels must be even (they are split), got {channels}")
        if n_blocks < 0:
            raise ValueError(f"RevNet n_blocks must be >= 0, got {n_blocks}")
        self.channels_last = is_channels_last(obs_shape)
        c, h, w = (obs_shape[2], obs_shape[0], obs_shape[1]) if self.channels_last else obs_shape
        self.scale = scale
        half = channels // 2

        def residual() -> nn.Module:
            return nn.Sequential(
                nn.Conv2d(half, half, 3, padding=1), nn.ReLU(), nn.Conv2d(half, half, 3, padding=1)
            )

        self.stem = nn.Sequential(
            nn.Conv2d(c, stem_channels, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(stem_channels, channels, 4, stride=2),
            nn.ReLU(),
        )
        self.blocks = ReversibleSequence(
            [ReversibleBlock(residual(), residual()) for _ in range(n_blocks)], reversible_backward
        )
        with torch.no_grad():
            n_flat = int(np.prod(self.stem(torch.zeros(1, c, h, w)).shape[1:]))
        self.head = nn.Sequential(
            nn.ReLU(), nn.Flatten(), nn.Linear(n_flat, features_dim), nn.ReLU()
        )
        self.out_dim = int(features_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` or ``(B, C, H, W)`` -> ``(B, features_dim)``."""
        x = _as_dtype(obs, self.stem[0].weight) * self.scale
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        return self.head(self.blocks(self.stem(x)))


@register_backbone("revnet")
def make_revnet(observation_space: gym.spaces.Space, **kwargs) -> nn.Module:
    """``RevNetCNN`` for 3-dim (image) spaces, ``RevNetMLP`` for anything else with a shape."""
    shape = observation_space.shape
    if shape is None:
        raise ValueError("the revnet backbone needs an observation space with a shape")
    if len(shape) == 3:
        return RevNetCNN(shape, **kwargs)
    return RevNetMLP(int(np.prod(shape)), **kwargs)
