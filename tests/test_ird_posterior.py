"""The IRD posterior: concentration, normalizers (Sample-Z, MaxEnt-Z, exact), samplers, seeding."""

import itertools
import math

import numpy as np
import pytest

from envs.lavaland import tabular_mdp
from envs.lavaland_maps import DIRT, GRASS, TARGET, LavalandMap, add_lava, generate_map
from rlkit.rewards.ird.posterior import (
    EnumeratedZ,
    GaussianPrior,
    Posterior,
    exact_posterior,
    exact_z,
    maxent_z,
    sample_posterior,
    sample_z,
)
from rlkit.rewards.ird.value_iteration import value_iteration

PROXY = np.array([-0.1, -0.5, 1.0, -1.0, 0.0])
# w and w + c * SHIFT give every trajectory the same return (one-hot + constant features)
SHIFT = np.array([1.0, 1.0, 1.0, 1.0, -1.0]) / math.sqrt(5)


def _identified_cosine(a, b):
    a, b = a - (a @ SHIFT) * SHIFT, b - (b @ SHIFT) * SHIFT
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _posterior(with_lava: bool, seed: int = 0, method="mcmc", n=2000):
    rng = np.random.default_rng(seed)
    base = generate_map(np.random.default_rng(0), 8)
    lmap = add_lava(base, np.random.default_rng(1)) if with_lava else base
    mdp = tabular_mdp(lmap)
    prior = GaussianPrior.isotropic(5)
    counts = value_iteration(mdp, PROXY).feature_counts[0]
    return sample_posterior(counts, sample_z(mdp, prior, 2000, 3.0, rng), prior, n, rng, method)


def test_posterior_concentrates_near_the_proxy_when_training_covers_every_terrain():
    covered = _posterior(with_lava=True)
    assert _identified_cosine(covered.mean(), PROXY) > 0.9
    assert covered.std()[3] < 0.85  # lava's weight is learned from the proxy avoiding it
    assert covered.mean()[3] < -0.5


def test_unseen_terrain_keeps_its_prior():
    lava_free = _posterior(with_lava=False)
    assert lava_free.std()[3] > 0.9  # prior std 1: the proxy says nothing about lava
    assert abs(lava_free.mean()[3]) < 0.2
    assert _identified_cosine(lava_free.mean(), PROXY) < _identified_cosine(
        _posterior(with_lava=True).mean(), PROXY
    )


def test_mcmc_and_importance_sampling_agree():
    mcmc = _posterior(with_lava=True, seed=1)
    imp = _posterior(with_lava=True, seed=2, method="importance", n=20000)
    assert imp.effective_sample_size() > 500
    np.testing.assert_allclose(mcmc.mean(), imp.mean(), atol=0.15)
    np.testing.assert_allclose(mcmc.std(), imp.std(), atol=0.15)


def _small_problem():
    lmap = LavalandMap(
        np.array([[DIRT, GRASS, TARGET], [DIRT, DIRT, DIRT]]), start=(0, 0), target=(0, 2)
    )
    full = tabular_mdp(lmap, horizon=4)
    mdp = full.with_features(full.features[:, :3])  # dirt, grass, target
    space = np.array(list(itertools.product([-1.0, 0.0, 1.0], repeat=3)))
    return mdp, space


def test_sample_z_agrees_with_exact_enumeration_on_a_small_space():
    mdp, space = _small_problem()
    beta = 1.0
    exact = exact_z(mdp, space, beta)
    draws = space[np.random.default_rng(0).integers(len(space), size=20000)]
    counts = value_iteration(mdp, draws).feature_counts
    sampled = EnumeratedZ(counts, np.full(len(draws), -math.log(len(draws))), beta)
    np.testing.assert_allclose(sampled.log_z(space), exact.log_z(space), atol=0.05)
    proxy_counts = value_iteration(mdp, np.array([-0.0, -1.0, 1.0])).feature_counts[0]
    p_exact = exact_posterior(space, proxy_counts, exact)
    p_sampled = exact_posterior(space, proxy_counts, sampled)
    assert 0.5 * np.abs(p_exact - p_sampled).sum() < 0.02
    assert p_exact.argmax() == p_sampled.argmax()
    # exact enumeration equals brute force: Z(w) = mean_k exp(beta w . c_k)
    all_counts = value_iteration(mdp, space).feature_counts  # (27, 3), duplicates included
    brute = [np.log(np.mean(np.exp(beta * all_counts @ w))) for w in space]
    assert len(exact.proxy_counts) < len(space)  # identical count rows were merged
    np.testing.assert_allclose(exact.log_z(space), brute, rtol=1e-9, atol=1e-12)


def test_maxent_z_is_the_maxent_partition_function():
    mdp, space = _small_problem()
    z = maxent_z(mdp, 0.5)
    # horizon 4, 4 actions: exp(beta w . phi(xi)) summed over all 256 action sequences
    w = space[5]
    total = 0.0
    for seq in itertools.product(range(4), repeat=4):
        s, c = mdp.start, np.zeros(3)
        for a in seq:
            s = mdp.next_state[s, a]
            c += mdp.features[s]
        total += math.exp(0.5 * w @ c)
    assert z.log_z(w[None])[0] == pytest.approx(math.log(total))


def test_sampling_is_seeded():
    a, b, c = (
        _posterior(True, seed=7, n=300),
        _posterior(True, seed=7, n=300),
        _posterior(True, 8, n=300),
    )
    np.testing.assert_array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, c.samples)
    r1 = a.resample(50, np.random.default_rng(0))
    r2 = a.resample(50, np.random.default_rng(0))
    np.testing.assert_array_equal(r1.samples, r2.samples)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError):
        Posterior(np.zeros((3, 2)), np.array([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError):
        GaussianPrior(np.zeros(2), np.array([1.0, 0.0]))
    mdp, _ = _small_problem()
    with pytest.raises(ValueError):
        sample_z(mdp, GaussianPrior.isotropic(3), 0, 1.0, np.random.default_rng(0))
