"""Size knobs of the image backbones: nature_cnn ``channels``, relation ``stem``, revnet
``stem_channels``."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlkit.nn import make_backbone

ATARI = gym.spaces.Box(0, 255, (84, 84, 4), dtype="uint8")


def _n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _frames(n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 255, (n, 84, 84, 4), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("channels", [(32, 64, 64), (8, 16, 16), (4, 6, 10)])
def test_nature_cnn_channels_set_the_conv_widths_and_parameter_count(channels):
    net = make_backbone("nature_cnn", ATARI, channels=channels, features_dim=32)
    convs = [m for m in net.conv if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == list(channels)
    assert [c.in_channels for c in convs] == [4, *channels[:2]]
    c1, c2, c3 = channels
    # 84 -> 20 (8x8/4) -> 9 (4x4/2) -> 7 (3x3/1); the head maps c3 * 7 * 7 to 32.
    expected = (4 * 64 * c1 + c1) + (c1 * 16 * c2 + c2) + (c2 * 9 * c3 + c3) + (c3 * 49 * 32 + 32)
    assert _n_params(net) == expected
    assert net(_frames()).shape == (2, 32)


@pytest.mark.parametrize("channels", [(8, 16), (8, 16, 16, 16), ()])
def test_nature_cnn_rejects_other_than_three_channels(channels):
    with pytest.raises(ValueError, match="3 channels"):
        make_backbone("nature_cnn", ATARI, channels=channels)


@pytest.mark.parametrize(
    ("stem", "cells", "obj_dim"),
    [
        (((8, 8, 4, 0), (16, 4, 2, 0), (16, 3, 2, 1)), 25, 18),  # 84 -> 20 -> 9 -> 5
        (((8, 8, 4, 0), (16, 4, 2, 0)), 81, 18),  # 84 -> 20 -> 9
        (((6, 3, 2, 1),) * 4, 36, 8),  # the default stem's geometry (84 -> 42 -> 21 -> 11 -> 6)
    ],
)
def test_relation_stem_sets_the_object_grid_and_keeps_order_invariance(stem, cells, obj_dim):
    torch.manual_seed(0)
    net = make_backbone("relation", ATARI, stem=stem, g_hidden=(16,), f_hidden=(8,))
    convs = [m for m in net.stem if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, *c.kernel_size[:1], *c.stride[:1], *c.padding[:1]) for c in convs] == [
        tuple(layer) for layer in stem
    ]
    obs = _frames()
    objs = net.objects(obs)
    assert objs.shape == (2, cells, obj_dim)  # last conv's channels + 2 coordinates
    out = net(obs)
    perm = torch.randperm(cells, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(net.relation(objs[:, perm]), out, rtol=1e-5, atol=1e-5)
    assert (net.relation(objs[:, perm[:-1]]) - out).abs().max() > 1e-4  # objects do matter


def test_relation_rejects_malformed_stems():
    for stem in ([], [(8, 3, 2)], [(8, 3, 2, 1, 0)]):
        with pytest.raises(ValueError, match="stem"):
            make_backbone("relation", ATARI, stem=stem)


@pytest.mark.parametrize("stem_channels", [4, 8, 32])
def test_revnet_stem_channels_set_the_stem_and_the_inverse_still_reconstructs(stem_channels):
    torch.manual_seed(0)
    kwargs = {"channels": 16, "n_blocks": 2, "features_dim": 18}
    net = make_backbone("revnet", ATARI, stem_channels=stem_channels, **kwargs).double()
    default = make_backbone("revnet", ATARI, **kwargs)  # stem_channels 32
    assert net.stem[0].out_channels == stem_channels == net.stem[2].in_channels
    # Only the two stem convolutions depend on stem_channels: 8x8x4 -> s, then 4x4xs -> 16.
    per_channel = 8 * 8 * 4 + 1 + 4 * 4 * 16
    assert _n_params(net) - _n_params(default) == (stem_channels - 32) * per_channel
    with torch.no_grad():
        x = _frames().double().permute(0, 3, 1, 2) * net.scale
        h = net.stem(x)
        assert h.shape == (2, 16, 9, 9)
        h = h + torch.randn_like(h)  # not only post-ReLU inputs
        y = net.blocks(h)
        assert (y - h).abs().max() > 1e-2
        assert (net.blocks.inverse(y) - h).abs().max() <= 1e-10
    assert net(_frames()).shape == (2, 18)


@pytest.mark.parametrize(
    ("obs_shape", "kwargs"), [((11,), {"n_blocks": -2}), ((84, 84, 4), {"n_blocks": -1})]
)
def test_revnet_rejects_a_negative_number_of_blocks(obs_shape, kwargs):
    space = gym.spaces.Box(0, 255, obs_shape, dtype=np.uint8 if len(obs_shape) == 3 else np.float32)
    with pytest.raises(ValueError, match="RevNet n_blocks must be >= 0"):
        make_backbone("revnet", space, **kwargs)
