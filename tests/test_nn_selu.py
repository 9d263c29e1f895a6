"""Self-normalizing networks: SELU constants, LeCun-normal init and the mean-0/variance-1 fixed
point through depth."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from rlkit.nn import make_backbone
from rlkit.nn.selu import SELU_ALPHA, SELU_LAMBDA, SELUMLP


def _layer_stats(model: SELUMLP, x: torch.Tensor) -> list[tuple[float, float]]:
    """(mean, variance) of the activations after each SELU (and its dropout)."""
    stats, h = [], x
    for layer in model.net[1:]:
        h = layer(h)
        if not isinstance(layer, nn.Linear):
            stats.append((h.mean().item(), h.var().item()))
    return stats


def test_constants_make_zero_mean_unit_variance_the_fixed_point():
    # E[selu(z)] = 0 and E[selu(z)^2] = 1 for z ~ N(0, 1), by quadrature on a fine grid.
    z = torch.linspace(-12, 12, 400_001, dtype=torch.float64)
    pdf = torch.exp(-(z**2) / 2) / np.sqrt(2 * np.pi)
    y = torch.where(z > 0, SELU_LAMBDA * z, SELU_LAMBDA * SELU_ALPHA * torch.expm1(z))
    dz = z[1] - z[0]
    assert float((y * pdf).sum() * dz) == pytest.approx(0.0, abs=1e-9)
    assert float((y**2 * pdf).sum() * dz) == pytest.approx(1.0, abs=1e-9)
    assert SELU_ALPHA == pytest.approx(1.6733, abs=1e-4)
    assert SELU_LAMBDA == pytest.approx(1.0507, abs=1e-4)
    assert torch.allclose(nn.SELU()(z[::1000]), y[::1000])


def test_lecun_normal_init():
    model = SELUMLP(400, hidden=(300,), seed=0)
    w = model.net[1].weight
    assert w.mean().item() == pytest.approx(0.0, abs=2e-3)
    assert w.var().item() == pytest.approx(1 / 400, rel=0.02)
    assert torch.count_nonzero(model.net[1].bias) == 0


def test_activations_keep_mean_zero_variance_one_through_32_layers():
    x = torch.randn(2048, 256, generator=torch.Generator().manual_seed(0))
    stats = _layer_stats(SELUMLP(256, hidden=[256] * 32, seed=0), x)
    assert len(stats) == 32
    for mean, var in stats:
        assert abs(mean) < 0.05
        assert 0.85 < var < 1.2


def test_same_net_with_relu_or_default_init_does_not_self_normalize():
    # The property needs both SELU and the LeCun init: swapping either one breaks it.
    x = torch.randn(2048, 256, generator=torch.Generator().manual_seed(0))
    relu_net = SELUMLP(256, hidden=[256] * 32, seed=0)
    for i, layer in enumerate(relu_net.net):
        if isinstance(layer, nn.SELU):
            relu_net.net[i] = nn.ReLU()
    assert _layer_stats(relu_net, x)[-1][1] < 1e-3
    torch.manual_seed(0)
    default_init = nn.Sequential(*[m for _ in range(32) for m in (nn.Linear(256, 256), nn.SELU())])
    h = x
    with torch.no_grad():
        h = default_init(h)
    assert h.var().item() < 0.5


def test_alpha_dropout_keeps_the_fixed_point_in_training():
    x = torch.randn(4096, 256, generator=torch.Generator().manual_seed(1))
    model = SELUMLP(256, hidden=[256] * 16, dropout=0.1, seed=1).train()
    torch.manual_seed(1)
    for mean, var in _layer_stats(model, x):
        assert abs(mean) < 0.1
        assert 0.8 < var < 1.25
    # ...because units are dropped: in training a tenth of each layer's outputs sit at alpha
    # dropout's one value for a dropped unit, a * alpha' + b (Klambauer et al. 2017, eq. 9)
    drops = [m for m in model.net if isinstance(m, nn.AlphaDropout)]
    assert len(drops) == 16 and all(m.p == 0.1 for m in drops)
    p, alpha = 0.1, -SELU_LAMBDA * SELU_ALPHA
    a = ((1 - p) * (1 + p * alpha**2)) ** -0.5
    dropped = a * alpha + a * -alpha * p
    with torch.no_grad():
        h = model.net[:4](x)  # flatten, linear, SELU, alpha dropout
        assert isinstance(model.net[3], nn.AlphaDropout)
        share = ((h - dropped).abs() < 1e-5).float().mean().item()
        assert share == pytest.approx(0.1, abs=0.005)
        assert not torch.equal(model(x[:64]), model.eval()(x[:64]))
        assert torch.equal(model(x[:64]), model(x[:64]))  # eval mode drops nothing


def test_registry_builds_selu_mlp_for_vector_observations():
    net = make_backbone("selu_mlp", gym.spaces.Box(-1, 1, (3, 4)), hidden=(32, 16), seed=0)
    out = net(torch.zeros(5, 3, 4))
    assert out.shape == (5, 16) and net.out_dim == 16
