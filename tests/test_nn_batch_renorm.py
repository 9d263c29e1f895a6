"""Batch renormalization: equals batch norm at r_max=1, d_max=0; training output equals the
inference output when r and d are not clipped; clipping, no gradient, and the schedule."""

import copy

import gymnasium as gym
import pytest
import torch
from torch import nn

from rlkit.nn import make_backbone
from rlkit.nn.basic import NORMS
from rlkit.nn.batch_renorm import BatchRenorm, renorm_corrections


def _x(*shape: int, seed: int = 0, loc: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (loc + scale * torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_()


def _with_stats(layer: BatchRenorm, seed: int = 3) -> BatchRenorm:
    """Non-trivial moving statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    c = layer.num_features
    with torch.no_grad():
        layer.running_mean.copy_(torch.randn(c, generator=g))
        layer.running_std.copy_(0.5 + torch.rand(c, generator=g))
        layer.weight.copy_(torch.randn(c, generator=g))
        layer.bias.copy_(torch.randn(c, generator=g))
    return layer


@pytest.mark.parametrize("conv", [False, True])
def test_equals_batch_norm_with_r_max_1_and_d_max_0(conv: bool):
    renorm = _with_stats(BatchRenorm(6, r_max=1.0, d_max=0.0, momentum=0.1).double())
    bn = (nn.BatchNorm2d(6) if conv else nn.BatchNorm1d(6)).double()
    with torch.no_grad():
        bn.weight.copy_(renorm.weight)
        bn.bias.copy_(renorm.bias)
    x = _x(16, 6, 5, 5, loc=2.0, scale=3.0) if conv else _x(16, 6, loc=2.0, scale=3.0)
    y_renorm, y_bn = renorm(x), bn(x)
    torch.testing.assert_close(y_renorm, y_bn, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(y_bn)
    g_renorm = torch.autograd.grad((w * y_renorm).sum(), [x, renorm.weight, renorm.bias])
    g_bn = torch.autograd.grad((w * y_bn).sum(), [x, bn.weight, bn.bias])
    for a, b in zip(g_renorm, g_bn, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("conv", [False, True])
def test_unclipped_training_output_equals_inference_output(conv: bool):
    renorm = _with_stats(BatchRenorm(4, r_max=1e6, d_max=1e6, warmup_steps=0, r_max_steps=1,
                                     d_max_steps=1).double())  # fmt: skip
    renorm.num_batches_tracked.fill_(10)  # past the schedule: limits are 1e6
    x = _x(8, 4, 3, 3, scale=2.0) if conv else _x(8, 4, scale=2.0)
    inference = copy.deepcopy(renorm).eval()(x)
    training = renorm.train()(x)
    torch.testing.assert_close(training, inference, rtol=1e-12, atol=1e-12)
    # Same values, but training still backpropagates through the batch statistics.
    w = torch.randn_like(training)
    g_train = torch.autograd.grad((w * training).sum(), x)[0]
    g_inf = torch.autograd.grad((w * inference).sum(), x)[0]
    assert not torch.allclose(g_train, g_inf)


def test_corrections_are_clipped_and_carry_no_gradient():
    mean = torch.tensor([0.0, 10.0, -10.0], requires_grad=True)
    std = torch.tensor([100.0, 1.0, 0.01], requires_grad=True)
    r, d = renorm_corrections(mean, std, torch.zeros(3), torch.ones(3), r_max=3.0, d_max=5.0)
    torch.testing.assert_close(r, torch.tensor([3.0, 1.0, 1 / 3]))
    torch.testing.assert_close(d, torch.tensor([0.0, 5.0, -5.0]))
    assert not r.requires_grad and not d.requires_grad


def test_moving_statistics_update_and_are_used_at_inference():
    layer = BatchRenorm(3, momentum=0.5)
    x = _x(64, 3, loc=4.0, scale=2.0).float().detach()
    layer.train()(x)
    mean = x.mean(0)
    std = torch.sqrt(x.var(0, unbiased=False) + layer.eps)
    torch.testing.assert_close(layer.running_mean, 0.5 * mean)
    torch.testing.assert_close(layer.running_std, 0.5 + 0.5 * std)
    assert int(layer.num_batches_tracked) == 1
    y = layer.eval()(x)
    torch.testing.assert_close(y, (x - layer.running_mean) / layer.running_std)
    assert int(layer.num_batches_tracked) == 1  # inference does not step the schedule


def test_schedule_relaxes_r_max_to_3_and_d_max_to_5():
    layer = BatchRenorm(2, warmup_steps=10, r_max_steps=40, d_max_steps=20)
    expected = {0: (1.0, 0.0), 10: (1.0, 0.0), 20: (1.5, 2.5), 30: (2.0, 5.0), 50: (3.0, 5.0),
                1000: (3.0, 5.0)}  # fmt: skip
    for step, (r_max, d_max) in expected.items():
        layer.num_batches_tracked.fill_(step)
        got = layer.limits()
        assert (float(got[0]), float(got[1])) == pytest.approx((r_max, d_max))


def test_mlp_and_nature_cnn_take_batch_renorm_with_its_schedule():
    assert "batch_renorm" in NORMS
    mlp = make_backbone("mlp", gym.spaces.Box(-1, 1, (5,)), hidden=(8, 8), norm="batch_renorm",
                        norm_kwargs={"r_max": 2.0, "warmup_steps": 7})  # fmt: skip
    layers = [m for m in mlp.modules() if isinstance(m, BatchRenorm)]
    assert len(layers) == 2 and all(m.r_max_final == 2.0 and m.warmup_steps == 7 for m in layers)
    assert mlp(torch.randn(4, 5)).shape == (4, 8)
    cnn = make_backbone("nature_cnn", gym.spaces.Box(0, 255, (84, 84, 4), dtype="uint8"),
                        features_dim=16, norm="batch_renorm")  # fmt: skip
    assert sum(isinstance(m, BatchRenorm) for m in cnn.modules()) == 3
    assert cnn(torch.randint(0, 255, (2, 84, 84, 4), dtype=torch.uint8)).shape == (2, 16)
    # Default norm unchanged.
    plain = make_backbone("mlp", gym.spaces.Box(-1, 1, (5,)), hidden=(8,))
    assert not any(isinstance(m, BatchRenorm | nn.BatchNorm1d) for m in plain.modules())
