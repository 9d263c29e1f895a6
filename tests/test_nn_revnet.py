"""RevNet: exact inverse, gradients equal to stored-activation backprop, and memory that does not
grow with depth."""

import copy

import gymnasium as gym
import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from rlkit.nn import make_backbone
from rlkit.nn.revnet import RevNetCNN, RevNetMLP


def _models() -> list[tuple[torch.nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    vec = RevNetMLP(6, width=16, n_blocks=5).double()
    img = RevNetCNN((3, 36, 36), channels=8, n_blocks=3, features_dim=12).double()
    return [
        (vec, torch.randn(4, 6, generator=g, dtype=torch.float64)),
        (img, 255 * torch.rand(2, 3, 36, 36, generator=g, dtype=torch.float64)),
    ]


@pytest.mark.parametrize("which", [0, 1], ids=["vector", "image"])
def test_inverse_reconstructs_inputs(which: int):
    model, obs = _models()[which]
    with torch.no_grad():
        h = model.stem(obs * getattr(model, "scale", 1.0))
        h = h + torch.randn_like(h)  # not only post-ReLU inputs
        rebuilt = model.blocks.inverse(model.blocks(h))
    assert (rebuilt - h).abs().max().item() <= 1e-10
    assert (model.blocks(h) - h).abs().max().item() > 1e-2  # the blocks do change their input


@pytest.mark.parametrize("which", [0, 1], ids=["vector", "image"])
def test_gradients_equal_stored_activation_backprop(which: int):
    model, obs = _models()[which]
    stored = copy.deepcopy(model)
    stored.blocks.reversible_backward = False

    def grads(net: torch.nn.Module) -> list[torch.Tensor]:
        x = obs.clone().requires_grad_(True)
        out = net(x)
        weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        return torch.autograd.grad((weights * out).sum() + out.pow(2).sum(), [x, *net.parameters()])

    for a, b in zip(grads(model), grads(stored), strict=True):
        assert b.norm() > 0
        assert ((a - b).norm() / b.norm()).item() <= 1e-6


def _saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of ``model(x)``."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    return total


def test_stored_activations_do_not_grow_with_depth():
    x = torch.randn(64, 10)
    torch.manual_seed(0)
    rev = [_saved_bytes(RevNetMLP(10, width=64, n_blocks=n), x) for n in (2, 8, 32)]
    stored = []
    for n in (2, 8, 32):
        net = RevNetMLP(10, width=64, n_blocks=n, reversible_backward=False)
        stored.append(_saved_bytes(net, x))
    assert rev[0] == rev[1] == rev[2]
    assert stored[2] > 10 * stored[0] and stored[2] > 10 * rev[2]


def test_backbone_trains_and_registry_handles_vector_and_channels_last_images():
    vec = make_backbone("revnet", gym.spaces.Box(-1, 1, (7,)), width=32, n_blocks=2)
    assert vec(torch.randn(3, 7)).shape == (3, 32) and vec.out_dim == 32
    img_space = gym.spaces.Box(0, 255, (84, 84, 4), dtype="uint8")
    img = make_backbone("revnet", img_space, channels=16, n_blocks=2, features_dim=24)
    obs = torch.randint(0, 255, (2, 84, 84, 4), dtype=torch.uint8)
    out = img(obs)
    assert out.shape == (2, 24)
    out.sum().backward()
    assert all(p.grad is not None for p in img.parameters())
    with pytest.raises(ValueError, match="even"):
        make_backbone("revnet", gym.spaces.Box(-1, 1, (7,)), width=9)


def test_vmapped_ensemble_matches_each_member():
    # The reward ensemble stacks K copies and vmaps functional_call; RevNet falls back to
    # ordinary autograd there and must give the members' outputs and gradients.
    torch.manual_seed(0)
    members = [RevNetMLP(5, width=8, n_blocks=3) for _ in range(3)]
    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")
    x = torch.randn(4, 5)

    def call(p: dict, b: dict, obs: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (obs,))

    out = vmap(call, in_dims=(0, 0, None))(params, buffers, x)
    out.sum().backward()
    for k, member in enumerate(members):
        expected = member(x)
        torch.testing.assert_close(out[k], expected)
        expected.sum().backward()
        for name, p in member.named_parameters():
            torch.testing.assert_close(params[name].grad[k], p.grad)


def test_backward_twice_with_retained_graph():
    model, obs = _models()[0]
    out = model(obs)  # the input needs no gradient; the parameters do
    out.sum().backward(retain_graph=True)
    once = [p.grad.clone() for p in model.parameters()]
    out.sum().backward()
    for p, g in zip(model.parameters(), once, strict=True):
        torch.testing.assert_close(p.grad, 2 * g)
