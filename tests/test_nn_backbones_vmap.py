"""Every plain backbone works in the reward ensemble's batched call: K stacked copies through
``vmap(functional_call)`` give each copy's own output."""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from rlkit.nn import backbone_names, make_backbone

VECTOR = gym.spaces.Box(-1, 1, (6,))
ENTITIES = gym.spaces.Box(-1, 1, (5, 3))
IMAGE = gym.spaces.Box(0, 255, (36, 36, 3), dtype="uint8")

CASES = [
    ("mlp", VECTOR, {"hidden": (8,)}),
    ("selu_mlp", VECTOR, {"hidden": (8, 8)}),
    ("revnet", VECTOR, {"width": 8, "n_blocks": 2}),
    ("revnet", IMAGE, {"channels": 4, "n_blocks": 2, "features_dim": 8}),
    ("relation", ENTITIES, {"g_hidden": (8,), "f_hidden": (8,)}),
    ("relation", IMAGE, {"conv_layers": 3, "channels": 4, "g_hidden": (8,), "f_hidden": (8,)}),
]


def test_all_issue_backbones_are_registered():
    assert {"mlp", "nature_cnn", "selu_mlp", "revnet", "relation", "vq"} <= set(backbone_names())


@pytest.mark.parametrize(("name", "space", "kwargs"), CASES, ids=lambda c: getattr(c, "shape", c))
def test_vmapped_copies_match_each_copy(name: str, space: gym.spaces.Box, kwargs: dict):
    torch.manual_seed(0)
    members = [make_backbone(name, space, **kwargs) for _ in range(3)]
    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")
    rng = np.random.default_rng(0)
    obs = torch.as_tensor(rng.uniform(space.low, space.high, (4, *space.shape)).astype(space.dtype))
    out = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)), in_dims=(0, 0, None))(
        params, buffers, obs
    )
    assert out.shape == (3, 4, members[0].out_dim)
    for k, member in enumerate(members):
        torch.testing.assert_close(out[k], member(obs), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize(("name", "space", "kwargs"), CASES, ids=lambda c: getattr(c, "shape", c))
def test_observations_are_cast_to_the_weights_dtype(name: str, space: gym.spaces.Box, kwargs: dict):
    # MuJoCo observations arrive as float64, Atari frames as uint8; weights are float32.
    net = make_backbone(name, space, **kwargs)
    rng = np.random.default_rng(0)
    obs = rng.uniform(space.low, space.high, (2, *space.shape)).astype(space.dtype)
    as_f64 = torch.as_tensor(obs.astype(np.float64))
    out = net(as_f64)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, net(torch.as_tensor(obs).float()))
