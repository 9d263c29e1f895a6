"""K members' layers evaluated at once from stacked parameters, without ``vmap``.

The reward ensemble's fast path (:class:`rlkit.rewards.ensemble.RewardEnsemble`): every
parameter has a leading member dimension K, so a Linear is one ``bmm`` over members and a
convolution is one grouped convolution. These run cheaper than the same layers under
``torch.func.vmap`` at the ensemble's batch sizes (BENCHMARKS.md, "Reward ensemble"): vmap's
generic rules copy activations between layouts and broadcast biases at every layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rlkit.nn.basic import MLP, NatureCNN

# Layers applied as they are, element by element, to stacked activations.
ELEMENTWISE = (nn.Identity, nn.LeakyReLU, nn.ReLU, nn.Tanh, nn.ELU, nn.Dropout)
# Inputs at most this wide get their Linear's bias folded into the matmul (see affine).
_NARROW = 16


def stackable(backbone: nn.Module, head: nn.Sequential) -> bool:
    """Whether :func:`stacked_features` and :func:`stacked_layers` can evaluate a member."""
    if not all(isinstance(m, (nn.Linear, *ELEMENTWISE)) for m in head):
        return False
    # Exact types, not subclasses: a subclass's forward may differ from what is stacked here.
    if type(backbone) is MLP:
        return all(isinstance(m, (nn.Linear, nn.Flatten, *ELEMENTWISE)) for m in backbone.net)
    if type(backbone) is NatureCNN:
        return all(
            isinstance(m, (nn.Conv2d, nn.Flatten, *ELEMENTWISE)) for m in backbone.conv
        ) and all(isinstance(m, (nn.Linear, *ELEMENTWISE)) for m in backbone.head)
    return False


def affine(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Each member's Linear: ``(K, B, in)`` with weights ``(K, out, in)``, ``(K, out)`` -> ``(K, B, out)``.

    For a narrow input (observations, actions) the bias joins the matmul as a column of
    ones: copying a few input columns is cheaper than ``baddbmm`` broadcasting the bias
    into the whole ``(K, B, out)`` result first (one pass over it, memory-bound at 12k rows).
    """
    if x.shape[-1] <= _NARROW:
        x = torch.cat([x, x.new_ones(*x.shape[:-1], 1)], dim=-1)
        return torch.bmm(x, torch.cat([w, bias[:, :, None]], dim=-1).transpose(1, 2))
    return torch.baddbmm(bias[:, None, :], x, w.transpose(1, 2))


def stacked_layers(
    seq: nn.Sequential, prefix: str, x: torch.Tensor, params: dict[str, torch.Tensor],
    train: bool, start: int = 0, stop: int | None = None, fresh: bool = False,
) -> torch.Tensor:  # fmt: skip
    """``seq[start:stop]`` on ``(K, B, in)`` with each member's parameters: ``(K, B, out)``.

    ``params`` maps ``f"{prefix}.{i}.weight"`` to stacked tensors; ``train``: dropout on;
    ``fresh``: ``x`` is a Linear's output that nothing else reads.
    """
    for i in range(start, len(seq) if stop is None else stop):
        layer = seq[i]
        if isinstance(layer, nn.Linear):
            x = affine(x, params[f"{prefix}.{i}.weight"], params[f"{prefix}.{i}.bias"])
        elif isinstance(layer, (nn.LeakyReLU, nn.ReLU)) and fresh:
            # In place: an out-of-place activation allocates a fresh (K, B, width) tensor, and
            # at these sizes its page faults cost more than the op itself. (Neither a Linear
            # nor a convolution keeps its output for the backward pass.)
            slope = layer.negative_slope if isinstance(layer, nn.LeakyReLU) else 0.0
            x = F.leaky_relu_(x, slope) if slope else F.relu_(x)
        elif isinstance(layer, nn.Dropout):
            x = F.dropout(x, layer.p, train)
        elif not isinstance(layer, nn.Flatten):
            x = layer(x)
        fresh = isinstance(layer, (nn.Linear, nn.Conv2d)) or (
            fresh and isinstance(layer, nn.Identity)
        )
    return x


def stacked_cnn(
    cnn: NatureCNN, prefix: str, obs: torch.Tensor, params: dict[str, torch.Tensor],
    train: bool, k: int,
) -> torch.Tensor:  # fmt: skip
    """The Nature CNN of K members: ``(K, B, *obs_shape)`` images -> ``(K, B, features)``.

    Where ``obs`` is one batch expanded to K members (stride 0), the images are read once.
    The members' channels sit side by side in one channels-last tensor ``(B, K * C, H, W)``,
    so each layer is one grouped convolution (the first a plain one with K times the output
    channels when the input is shared). In channels-last layout oneDNN's grouped convolutions
    run ~1.4x faster than vmap's NCHW ones for a training step, ~2x for inference on shared
    images (BENCHMARKS.md).
    """
    shared = obs.stride(0) == 0  # every member sees the same images
    # To (B, H, W, [K,] C), converted and scaled in one copy.
    if shared:
        src = obs[0] if cnn.channels_last else obs[0].permute(0, 2, 3, 1)
    else:
        src = obs.permute(1, 2, 3, 0, 4) if cnn.channels_last else obs.permute(1, 3, 4, 0, 2)
    x = torch.empty(src.shape, dtype=torch.float32, device=obs.device).copy_(src)
    x = x.mul_(cnn.scale).reshape(*src.shape[:3], -1).permute(0, 3, 1, 2)  # channels-last
    groups, fresh = (1 if shared else k), False
    for i, layer in enumerate(cnn.conv):
        if isinstance(layer, nn.Conv2d):
            w = params[f"{prefix}.conv.{i}.weight"]  # (K, out, in, kh, kw)
            w = w.reshape(-1, *w.shape[2:]).contiguous(memory_format=torch.channels_last)
            bias = params[f"{prefix}.conv.{i}.bias"].reshape(-1)
            x = F.conv2d(x, w, bias, layer.stride, layer.padding, layer.dilation, groups)
            groups, fresh = k, True
        else:
            x = stacked_layers(cnn.conv, f"{prefix}.conv", x, params, train, i, i + 1, fresh)
            fresh = fresh and isinstance(layer, nn.Identity)
    # (B, K * C, H, W) channels-last -> (K, B, C * H * W), each member's nn.Flatten order.
    b, _, h, w = x.shape
    x = x.reshape(b, k, -1, h, w).permute(1, 0, 2, 3, 4).reshape(k, b, -1)
    return stacked_layers(cnn.head, f"{prefix}.head", x, params, train)


def stacked_features(
    backbone: nn.Module, prefix: str, obs: torch.Tensor, params: dict[str, torch.Tensor],
    train: bool, k: int,
) -> torch.Tensor:  # fmt: skip
    """A :func:`stackable` backbone of K members: ``(K, B, *obs_shape)`` -> ``(K, B, out_dim)``."""
    if isinstance(backbone, MLP):
        x = obs.reshape(*obs.shape[:2], -1).float()
        return stacked_layers(backbone.net, f"{prefix}.net", x, params, train)
    return stacked_cnn(backbone, prefix, obs, params, train, k)
