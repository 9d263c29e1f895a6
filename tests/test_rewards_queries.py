import itertools

import gymnasium as gym
import numpy as np
import pytest
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


def _keys(picked: list[tuple[int, int, float]]) -> set[tuple[int, int]]:
    return {(min(a, b), max(a, b)) for a, b, _ in picked}


def test_every_strategy_returns_n_distinct_pairs_unless_the_pool_has_fewer():
    """5 segments make 10 pairs: n=10 returns all 10 and n=5 returns 5, for every seed and
    strategy (uniform drew only 2 n pairs and returned 7-10 of 10, or 4 of 5)."""
    pool = _pool(5, np.random.default_rng(2))
    ens = RewardEnsemble(gym.spaces.Box(-5, 5, (4,)), gym.spaces.Box(-1, 1, (2,)), n_members=2)
    every = set(itertools.combinations(sorted(pool.ids()), 2))
    for strategy in ("uniform", "disagreement", "entropy"):
        for seed in range(40):
            for n, want in ((5, 5), (10, 10), (12, 10)):
                rng = np.random.default_rng(seed)
                picked = select_queries(ens, pool, n, strategy, rng, oversample=1)
                assert len(picked) == want and len(_keys(picked)) == want, (strategy, seed, n)
                assert _keys(picked) <= every and all(a != b for a, b, _ in picked)
    again = [select_queries(ens, pool, 5, "uniform", np.random.default_rng(9)) for _ in range(2)]
    assert again[0] == again[1]
    # a small pool's pairs still come up alike: each of the 10 is in half of the samples of 5
    counts = dict.fromkeys(every, 0)
    for seed in range(400):
        for key in _keys(select_queries(ens, pool, 5, "uniform", np.random.default_rng(seed))):
            counts[key] += 1
    assert 140 <= min(counts.values()) <= max(counts.values()) <= 260


def test_pairs_asked_before_are_never_asked_again():
    """``exclude`` (the pairs of earlier rounds, in either order) is never returned, and the
    pairs left are all returned when n asks for more."""
    pool = _pool(5, np.random.default_rng(3))
    ens = RewardEnsemble(gym.spaces.Box(-5, 5, (4,)), gym.spaces.Box(-1, 1, (2,)), n_members=2)
    ids = sorted(pool.ids())
    asked = {(ids[0], ids[1]), (ids[2], ids[0]), (ids[3], ids[4]), (ids[4], ids[1])}
    left = set(itertools.combinations(ids, 2)) - {(min(p), max(p)) for p in asked}
    for strategy in ("uniform", "disagreement", "entropy"):
        for seed in range(20):
            rng = np.random.default_rng(seed)
            assert _keys(select_queries(ens, pool, 10, strategy, rng, exclude=asked)) == left
            picked = select_queries(ens, pool, 3, strategy, rng, exclude=asked)
            assert len(_keys(picked)) == 3 and _keys(picked) <= left
    big = _pool(30, np.random.default_rng(4))  # 435 pairs: drawn, not listed
    asked = set(itertools.islice(itertools.combinations(sorted(big.ids()), 2), 400))
    picked = select_queries(ens, big, 30, "uniform", np.random.default_rng(0), exclude=asked)
    assert len(_keys(picked)) == 30 and not _keys(picked) & asked
    everything = set(itertools.combinations(ids, 2))
    assert select_queries(ens, pool, 4, "entropy", rng, exclude=everything) == []
    with pytest.raises(ValueError, match="exclude must hold"):
        select_queries(ens, pool, 2, "uniform", rng, exclude=[(1, 2, 3)])


def test_the_loop_never_asks_a_pair_twice_across_rounds(tmp_path):
    """The loop excludes every pair its store holds: with 4 segments (6 pairs), two rounds
    of 3 queries ask all 6 once each, and a third round has none left to ask."""
    from prefs_tiny import tiny_hopper
    from rich.console import Console

    from rlkit.loops.preference import PreferenceLoop

    cfg = tiny_hopper(steps=512, labels=10, seed=3, run_dir=tmp_path, pool_size=4)
    loop = PreferenceLoop(cfg, tmp_path, Console(quiet=True))
    try:
        loop.collect_random_segments(4)
        assert len(loop.pool) == 4
        assert loop.ask(3) == 3 and loop.ask(3) == 3
        asked = [tuple(sorted(pair)) for pair in loop.store.asked_pairs()]
        assert sorted(asked) == sorted(itertools.combinations(sorted(loop.pool.ids()), 2))
        assert loop.ask(3) == 0 and loop.store.count_queries() == 6
    finally:
        loop.close()
