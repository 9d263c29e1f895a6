"""Batched value iteration and the MaxEnt partition function against hand and brute force."""

import itertools

import numpy as np
import pytest

from envs.lavaland import tabular_mdp
from envs.lavaland_maps import DIRT, GRASS, TARGET, LavalandMap, generate_map
from rlkit.rewards.ird.value_iteration import log_partition, value_iteration

# row 0: start(dirt) grass target / row 1: dirt dirt dirt; start (0, 0), target (0, 2)
HAND = LavalandMap(
    np.array([[DIRT, GRASS, TARGET], [DIRT, DIRT, DIRT]]), start=(0, 0), target=(0, 2)
)


def _hand_mdp(horizon=4):
    return tabular_mdp(HAND, horizon=horizon)


def test_hand_solved_grid():
    mdp = _hand_mdp()
    # grass -1: right, right then 2 steps on the target: -1 + 1 + 1 + 1 = 2
    # (the dirt detour earns -0.1 * 3 + 1 = 0.7).
    # grass -3: over the grass -3 + 3 = 0 loses to the dirt detour's 0.7.
    w = np.array([[-0.1, -1.0, 1.0, 0.0, 0.0], [-0.1, -3.0, 1.0, 0.0, 0.0]])
    plans = value_iteration(mdp, w, return_paths=True, return_policies=True)
    np.testing.assert_allclose(plans.values, [2.0, 0.7], atol=1e-6)
    assert plans.paths[0].tolist() == [0, 1, 2, 2, 2]
    assert plans.paths[1].tolist() == [0, 3, 4, 5, 2]
    np.testing.assert_allclose(plans.feature_counts[0], [0, 1, 3, 0, 4])
    np.testing.assert_allclose(plans.feature_counts[1], [3, 0, 1, 0, 4])
    assert plans.policies.shape == (2, 4, 6)
    assert plans.policies[0, 0, 0] == 1  # move right first


def test_feature_counts_sum_to_the_horizon_for_thousands_of_rewards():
    mdp = tabular_mdp(generate_map(np.random.default_rng(0), 10))
    w = np.random.default_rng(1).normal(size=(3000, 5))
    plans = value_iteration(mdp, w, chunk=1024)
    np.testing.assert_allclose(plans.feature_counts[:, :4].sum(axis=1), mdp.horizon)
    np.testing.assert_allclose(plans.feature_counts[:, 4], mdp.horizon)
    np.testing.assert_allclose(plans.values, np.einsum("nd,nd->n", plans.feature_counts, w))
    # chunking changes nothing, and each plan is optimal among a batch's alternatives
    small = value_iteration(mdp, w[:50], chunk=7)
    np.testing.assert_allclose(small.feature_counts, plans.feature_counts[:50])
    cross = w[:50] @ plans.feature_counts[:50].T
    assert (np.diag(cross)[:, None] >= cross - 1e-4).all()


def test_values_match_brute_force_over_every_action_sequence():
    mdp = _hand_mdp(horizon=4)
    w = np.random.default_rng(2).normal(size=(5, 5))
    seqs = list(itertools.product(range(4), repeat=4))
    counts = []
    for seq in seqs:
        s, c = mdp.start, np.zeros(5)
        for a in seq:
            s = mdp.next_state[s, a]
            c += mdp.features[s]
        counts.append(c)
    returns = w @ np.array(counts).T  # (5, 256)
    plans = value_iteration(mdp, w)
    np.testing.assert_allclose(plans.values, returns.max(axis=1), atol=1e-5)
    beta = 0.7
    brute = np.log(np.exp(beta * returns).sum(axis=1))
    np.testing.assert_allclose(log_partition(mdp, w, beta), brute, rtol=1e-10)


def test_bad_weight_shapes_are_rejected():
    with pytest.raises(ValueError):
        value_iteration(_hand_mdp(), np.zeros((2, 3)))
