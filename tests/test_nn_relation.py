"""Relation Network: g over all pairs summed, then f; invariant to the order of the objects."""

import gymnasium as gym
import pytest
import torch

from rlkit.nn import make_backbone
from rlkit.nn.relation import RelationModule, RelationNet, cell_objects


def test_pair_sum_equals_brute_force_over_all_ordered_pairs():
    torch.manual_seed(0)
    rn = RelationModule(obj_dim=3, cond_dim=2, g_hidden=(8, 8), f_hidden=(5,)).double()
    objects = torch.randn(2, 4, 3, dtype=torch.float64)
    cond = torch.randn(2, 2, dtype=torch.float64)
    expected = torch.zeros(2, 8, dtype=torch.float64)
    for b in range(2):
        for i in range(4):
            for j in range(4):  # all ordered pairs, i == j included
                pair = torch.cat([objects[b, i], objects[b, j], cond[b]])
                expected[b] += rn.g_rest(torch.relu(rn.g_in(pair)))
    torch.testing.assert_close(rn.pair_sum(objects, cond), expected)
    torch.testing.assert_close(rn(objects, cond), rn.f(expected))


def test_entity_output_is_invariant_to_object_order_but_not_to_objects():
    torch.manual_seed(0)
    net = make_backbone("relation", gym.spaces.Box(-1, 1, (6, 4)), cond_dim=3)
    obs = torch.randn(5, 6, 4)
    cond = torch.randn(5, 3)
    out = net(obs, cond)
    for seed in range(3):
        perm = torch.randperm(6, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(net(obs[:, perm], cond), out, rtol=1e-5, atol=1e-5)
    changed = obs.clone()
    changed[:, 2] += 1.0
    assert (net(changed, cond) - out).abs().max() > 1e-3
    assert (net(obs, cond + 1.0) - out).abs().max() > 1e-3  # the condition matters
    with pytest.raises(ValueError, match="cond"):
        net(obs)


def test_image_objects_are_cells_with_coordinates_and_their_order_does_not_matter():
    fmap = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).view(2, 3, 2, 4)
    objects = cell_objects(fmap)
    assert objects.shape == (2, 8, 5)
    torch.testing.assert_close(objects[1, 6, :3], fmap[1, :, 1, 2])
    torch.testing.assert_close(objects[1, 6, 3:], torch.tensor([1 / 3, 1.0]))  # (x, y)
    torch.testing.assert_close(objects[0, 0, 3:], torch.tensor([-1.0, -1.0]))

    torch.manual_seed(0)
    net = RelationNet((84, 84, 4))  # channels-last, as SB3's Atari stack
    obs = torch.randint(0, 255, (2, 84, 84, 4), dtype=torch.uint8)
    objs = net.objects(obs)
    assert objs.shape == (2, 36, 26)  # 84 -> 42 -> 21 -> 11 -> 6: 36 cells of 24 + 2 coords
    perm = torch.randperm(36, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(net.relation(objs[:, perm]), net(obs), rtol=1e-5, atol=1e-5)
    assert net(obs).shape == (2, net.out_dim)


def test_registry_rejects_flat_vectors():
    with pytest.raises(ValueError, match="entity"):
        make_backbone("relation", gym.spaces.Box(-1, 1, (7,)))
