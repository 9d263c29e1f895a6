"""Cross-Lipschitz penalty: equals a brute-force per-sample, per-pair computation and is
differentiable in the model's parameters."""

import pytest
import torch
from torch import nn

from rlkit.nn.cross_lipschitz import cross_lipschitz_penalty


def _model(out_dim: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, out_dim)).double()


def _brute_force(f: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """1/(n L^2) sum_i sum_{l,m} ||grad f_l(x_i) - grad f_m(x_i)||^2, one sample at a time."""
    n, total = x.shape[0], torch.zeros((), dtype=x.dtype)
    n_out = f(x[:1]).shape[1]
    for i in range(n):
        xi = x[i : i + 1].clone().requires_grad_(True)
        out = f(xi)[0]
        grads = [torch.autograd.grad(out[l], xi, retain_graph=True)[0][0] for l in range(n_out)]  # noqa: E741
        for l in range(n_out):  # noqa: E741
            for m in range(n_out):
                total = total + (grads[l] - grads[m]).pow(2).sum()
    return total / (n * n_out**2)


def test_equals_brute_force():
    f = _model()
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    penalty = cross_lipschitz_penalty(f, x)
    assert penalty.dim() == 0 and penalty.item() > 0
    torch.testing.assert_close(penalty, _brute_force(f, x), rtol=1e-12, atol=1e-14)


def test_zero_for_a_single_output_or_identical_outputs():
    x = torch.randn(3, 5, dtype=torch.float64)
    assert cross_lipschitz_penalty(_model(1), x).item() == 0.0
    f = _model(1)
    twin = nn.Sequential(f, nn.Linear(1, 2, bias=True).double())
    with torch.no_grad():
        twin[1].weight.fill_(1.0)
    assert cross_lipschitz_penalty(twin, x).item() == pytest.approx(0.0, abs=1e-20)


def test_differentiable_in_parameters():
    f = _model()
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    weight = f[0].weight

    def penalty_of(w: torch.Tensor) -> torch.Tensor:
        return cross_lipschitz_penalty(lambda inp: torch.func.functional_call(
            f, {"0.weight": w}, (inp,)), x)  # fmt: skip

    assert torch.autograd.gradcheck(penalty_of, (weight.detach().clone().requires_grad_(),))
    cross_lipschitz_penalty(f, x).backward()
    assert f[2].weight.grad.abs().sum() > 0
