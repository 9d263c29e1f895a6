import itertools

import gymnasium as gym
import numpy as np
import torch

from rlkit.core import Segment, SegmentPool
from rlkit.rewards.ensemble import RewardEnsemble
from rlkit.rewards.queries import pair_scores, select_queries


def _pool(n: int, rng: np.random.Generator) -> SegmentPool:
    pool = SegmentPool(capacity=n)
    for _ in range(n):
        pool.add(Segment(obs=rng.normal(size=(6, 4)).astype(np.float32),
                         acts=rng.normal(size=(6, 2)).astype(np.float32), true_rews=np.zeros(6)))  # fmt: skip
    return pool


def test_disagreement_picks_the_highest_variance_pairs():
    rng = np.random.default_rng(0)
    pool = _pool(6, rng)  # 15 unordered pairs; 10x oversampling covers them all
    ens = RewardEnsemble(
        gym.spaces.Box(-5, 5, (4,)), gym.spaces.Box(-1, 1, (2,)), n_members=5, seed=3
    )
    picked = select_queries(ens, pool, n=4, strategy="disagreement", rng=rng, oversample=10)
    # brute force: variance across members of sigmoid(R_a - R_b) for every pair
    with torch.no_grad():
        rets = {i: [float(ens.member(k)(torch.as_tensor(pool[i].obs), torch.as_tensor(pool[i].acts)).sum())
                    for k in range(5)] for i in pool.ids()}  # fmt: skip
    var = {}
    for a, b in itertools.combinations(pool.ids(), 2):
        p = 1 / (1 + np.exp(-(np.array(rets[a]) - np.array(rets[b]))))
        var[(a, b)] = p.var()
    best = sorted(var, key=var.get, reverse=True)[:4]
    assert {tuple(sorted((a, b))) for a, b, _ in picked} == set(best)
    scores = [s for _, _, s in picked]
    assert scores == sorted(scores, reverse=True)
    np.testing.assert_allclose(scores, [var[k] for k in best], rtol=1e-4)


def test_entropy_prefers_coin_flips_and_uniform_is_random():
    # the entropy of the members' mean preference (no random-answer term), not the members'
    # mean entropy: two members sure of opposite answers make a coin flip (ln 2)
    ra = np.array([[-3.0, 0.0, 5.0], [3.0, 0.0, 5.0]])
    rb = np.zeros((2, 3))
    ent = pair_scores(ra, rb, "entropy")
    q = 1 / (1 + np.exp(-5.0))
    np.testing.assert_allclose(
        ent, [np.log(2), np.log(2), -(q * np.log(q) + (1 - q) * np.log(1 - q))]
    )
    pool = _pool(10, np.random.default_rng(1))
    ens = RewardEnsemble(gym.spaces.Box(-5, 5, (4,)), gym.spaces.Box(-1, 1, (2,)), n_members=2)
    a = select_queries(ens, pool, 5, "uniform", np.random.default_rng(0))
    b = select_queries(ens, pool, 5, "uniform", np.random.default_rng(0))
    assert a == b and len({tuple(sorted(p[:2])) for p in a}) == 5
    # uniform over the 45 pairs: the generator decides, and over 400 draws every pair comes up
    # about as often as any other (expected 44.4 times each; a count outside 20-75 has
    # probability < 1e-4 for any one pair)
    counts = dict.fromkeys(itertools.combinations(sorted(pool.ids()), 2), 0)
    for seed in range(400):
        for i, j, _ in select_queries(ens, pool, 5, "uniform", np.random.default_rng(seed)):
            counts[min(i, j), max(i, j)] += 1
    assert select_queries(ens, pool, 5, "uniform", np.random.default_rng(1)) != a
    assert sum(counts.values()) == 2000 and 20 <= min(counts.values()) <= max(counts.values()) <= 75
