"""Planners under the IRD posterior: objectives, and avoiding a terrain unseen in training."""

import numpy as np
import pytest

from envs.lavaland import tabular_mdp
from envs.lavaland_maps import LAVA, PROXY_WEIGHTS, add_lava, generate_map
from rlkit.rewards.ird.planners import (
    PLANNERS,
    normalize_scale,
    plan_all,
    plan_linear,
    plan_risk_averse,
    robust_values,
)
from rlkit.rewards.ird.posterior import GaussianPrior, sample_posterior, sample_z
from rlkit.rewards.ird.value_iteration import value_iteration


def test_robust_objectives_by_hand():
    samples = np.array([[1.0, -2.0], [3.0, 0.0], [-1.0, 1.0]])
    counts = np.array([[2.0, 1.0]])
    # returns per sample: 0, 6, -1
    assert robust_values(counts, samples, "trajectory")[0] == -1.0
    base = np.array([1.0, 1.0])  # x = (1, 0): returns 1, 3, -1
    assert robust_values(counts, samples, "trajectory", base)[0] == -1.0
    # per feature: 2 * min(1, 3, -1) + 1 * min(-2, 0, 1) = -4
    assert robust_values(counts, samples, "feature")[0] == -4.0
    # with baseline x = (1, 0): 1 * -1 + 0 = -1;  x = (-1, 0) takes the largest weight: -3
    assert robust_values(counts, samples, "feature", base)[0] == -1.0
    assert robust_values(np.array([[0.0, 1.0]]), samples, "feature", base)[0] == -3.0
    # CVaR: mean of the worst ceil(alpha n) returns
    assert robust_values(counts, samples, "cvar", alpha=0.34)[0] == pytest.approx(-0.5)
    assert robust_values(counts, samples, "cvar", alpha=1.0)[0] == pytest.approx(5 / 3)


def test_with_one_sample_every_planner_is_the_linear_optimum():
    mdp = tabular_mdp(generate_map(np.random.default_rng(0), 8))
    w = np.array([-0.2, -0.6, 1.0, -3.0, 0.0])
    best = value_iteration(mdp, w).values[0]
    for objective in ("trajectory", "feature", "cvar"):
        plan = plan_risk_averse(mdp, w[None], objective, rng=np.random.default_rng(0))
        assert w @ plan.feature_counts == pytest.approx(best, abs=1e-5)


def test_normalize_scale_gives_unit_reward_spread_on_the_reference_states():
    ref = np.eye(3)  # three reference states, one feature each
    samples = np.array([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0], [0.0, 0.0, 0.0]])
    out = normalize_scale(samples, ref)
    np.testing.assert_allclose((out[:2] @ ref.T).std(axis=1), 1.0)
    np.testing.assert_allclose(out[0], out[1])  # positive rescaling is undone
    assert np.isfinite(out).all()


def _lava_posterior(seed):
    rng = np.random.default_rng(0)
    train = tabular_mdp(generate_map(np.random.default_rng(seed), 10))
    prior = GaussianPrior.isotropic(5)
    baseline = value_iteration(train, PROXY_WEIGHTS).feature_counts[0]
    post = sample_posterior(baseline, sample_z(train, prior, 1000, 3.0, rng), prior, 1000, rng)
    return post.samples, baseline, train.features


@pytest.mark.parametrize("train_seed", [10, 11, 12])
def test_risk_averse_planner_avoids_a_terrain_unseen_in_training(train_seed):
    samples, baseline, reference = _lava_posterior(train_seed)
    rng = np.random.default_rng(1)
    proxy_hits, averse_hits = 0, 0
    for _ in range(8):
        lmap = add_lava(generate_map(rng, 10), rng)
        mdp = tabular_mdp(lmap)
        plans = plan_all(mdp, samples, PROXY_WEIGHTS, baseline, rng, scale_reference=reference)
        assert set(plans) == set(PLANNERS)
        lava = lmap.terrain.reshape(-1) == LAVA
        proxy_hits += int(lava[plans["proxy"].path].any())
        averse_hits += int(lava[plans["maxmin-traj-base"].path].any())
        for plan in plans.values():
            np.testing.assert_allclose(plan.feature_counts, mdp.features[plan.path[1:]].sum(0))
    assert proxy_hits >= 6
    assert averse_hits == 0


def test_unknown_planner_is_rejected():
    mdp = tabular_mdp(generate_map(np.random.default_rng(0), 6))
    with pytest.raises(ValueError, match="unknown planners"):
        plan_all(
            mdp, np.zeros((3, 5)), PROXY_WEIGHTS, np.zeros(5), np.random.default_rng(0), ("x",)
        )
    assert plan_linear(mdp, PROXY_WEIGHTS).path.shape == (mdp.horizon + 1,)
