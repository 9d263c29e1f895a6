"""Lavaland: map generator, Gymnasium env and tabular view."""

from collections import deque

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers rlkit/Lavaland-v0)
from envs.lavaland import GridMDP, LavalandEnv, grid_next_state, tabular_mdp
from envs.lavaland_maps import (
    DIRT,
    GRASS,
    LAVA,
    TARGET,
    TRUE_WEIGHTS,
    LatentTerrain,
    LavalandMap,
    add_lava,
    generate_map,
    onehot_features,
)


def _reachable_without_lava(lmap: LavalandMap) -> bool:
    nxt = grid_next_state(lmap)
    lava = lmap.terrain.reshape(-1) == LAVA
    seen, todo = {lmap.cell_index(lmap.start)}, deque([lmap.cell_index(lmap.start)])
    while todo:
        s = todo.popleft()
        for s2 in nxt[s]:
            if not lava[s2] and s2 not in seen:
                seen.add(int(s2))
                todo.append(int(s2))
    return lmap.cell_index(lmap.target) in seen


@pytest.mark.parametrize("size", [6, 10, 25])
def test_maps_are_seeded_and_test_maps_block_the_way_with_a_detour(size):
    a = generate_map(np.random.default_rng(3), size)
    b = generate_map(np.random.default_rng(3), size)
    c = generate_map(np.random.default_rng(4), size)
    assert np.array_equal(a.terrain, b.terrain) and a.start == b.start
    assert not np.array_equal(a.terrain, c.terrain)
    assert not a.has_lava and {DIRT, GRASS, TARGET} <= set(np.unique(a.terrain))
    rng = np.random.default_rng(0)
    for _ in range(20):
        base = generate_map(rng, size)
        test = add_lava(base, rng)
        assert test.has_lava and test.start == base.start and test.target == base.target
        lava_cols = np.where((test.terrain == LAVA).any(axis=0))[0]
        assert base.start[1] < lava_cols.min() and lava_cols.max() < base.target[1]
        assert _reachable_without_lava(test)


def test_tabular_view_moves_and_absorbs_at_the_target():
    lmap = generate_map(np.random.default_rng(0), 10)
    mdp = tabular_mdp(lmap)
    assert isinstance(mdp, GridMDP) and mdp.next_state.shape == (100, 4)
    assert mdp.horizon == 30 and mdp.start == lmap.cell_index(lmap.start)
    corner = 0  # (0, 0): up and left stay put, right and down move
    assert list(mdp.next_state[corner]) == [0, 1, 10, 0]
    t = lmap.cell_index(lmap.target)
    assert (mdp.next_state[t] == t).all()
    np.testing.assert_array_equal(mdp.features.sum(axis=1), 2.0)  # one-hot + constant


def test_env_reward_matches_the_tabular_features_and_truncates_at_the_horizon():
    env = gym.make("rlkit/Lavaland-v0", size=8)
    obs, info = env.reset(seed=5)
    assert obs.shape == (8, 8, 5) and obs[..., 0].sum() == 1.0
    mdp = env.unwrapped.tabular()
    rng = np.random.default_rng(0)
    total, counts, steps = 0.0, np.zeros(5), 0
    truncated = False
    while not truncated:
        obs, reward, terminated, truncated, info = env.step(int(rng.integers(4)))
        total += reward
        counts += info["features"]
        steps += 1
        assert not terminated
    assert steps == mdp.horizon == 24
    assert total == pytest.approx(TRUE_WEIGHTS @ counts)
    assert counts[:4].sum() == steps


def test_latent_observations_cluster_by_terrain_and_lava_lies_far_out():
    latent = LatentTerrain(dim=16, noise=0.5, seed=1)
    lmap = add_lava(generate_map(np.random.default_rng(0), 10), np.random.default_rng(1))
    obs = latent.observe(lmap.terrain, np.random.default_rng(2))
    assert obs.shape == (10, 10, 16)
    means = latent.means
    nearest = np.argmin(((obs[:, :, None] - means) ** 2).sum(-1), axis=-1)
    assert (nearest == lmap.terrain).mean() > 0.95
    known = np.linalg.norm(means[:3], axis=1).mean()
    assert np.linalg.norm(means[LAVA]) > 1.5 * known
    env = LavalandEnv(size=10, observation="latent", latent=latent)
    assert env.reset(seed=0)[0].shape == (10, 10, 17)


def test_bad_maps_and_actions_are_rejected():
    with pytest.raises(ValueError):
        LavalandMap(np.full((4, 4), GRASS), (0, 0), (3, 3))  # no target cell
    with pytest.raises(ValueError):
        generate_map(np.random.default_rng(0), 3)
    env = LavalandEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(7)
    assert onehot_features(np.array([[LAVA]])).tolist() == [[0, 0, 0, 1, 1]]


@pytest.mark.filterwarnings("ignore:.*Box observation space m:UserWarning")  # latent: unbounded
@pytest.mark.parametrize("observation", ["onehot", "latent"])
def test_passes_the_gymnasium_env_checker(observation):
    from gymnasium.utils.env_checker import check_env

    check_env(LavalandEnv(size=6, observation=observation), skip_render_check=True)
