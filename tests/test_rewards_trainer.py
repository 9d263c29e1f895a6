import copy
import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlkit.core import Comparison, Segment
from rlkit.rewards.ensemble import RewardEnsemble
from rlkit.rewards.preference import preference_loss
from rlkit.rewards.trainer import (
    RewardTrainer,
    TrainerConfig,
    initial_weights,
    preference_backward_in_parts,
)

W = np.array([1.0, -2.0, 0.5, 0.0])


def make_data(n_segments: int, rng: np.random.Generator) -> list[Segment]:
    segs = []
    for i in range(n_segments):
        obs = rng.normal(size=(10, 4)).astype(np.float32)
        acts = rng.normal(size=(10, 1)).astype(np.float32)
        segs.append(Segment(obs=obs, acts=acts, true_rews=obs @ W, id=i))
    return segs


def test_trainer_learns_a_linear_reward_from_comparisons():
    rng = np.random.default_rng(0)
    segs = make_data(120, rng)
    ens = RewardEnsemble(
        gym.spaces.Box(-9, 9, (4,)), gym.spaces.Box(-9, 9, (1,)), n_members=3, seed=0
    )
    trainer = RewardTrainer(ens, TrainerConfig(lr=3e-3), rng)
    for _ in range(300):
        a, b = rng.choice(120, size=2, replace=False)
        mu = (1, 0) if segs[a].true_return > segs[b].true_return else (0, 1)
        trainer.add(Comparison(int(a), int(b), mu), segs[a], segs[b])
    before = trainer.evaluate()["charts/reward_val_accuracy"]
    stats = trainer.train(epochs=30)
    n_val = sum(trainer.is_val)
    assert 0.25 < n_val / len(trainer) < 0.5  # ~1/e held out
    assert stats["charts/reward_val_accuracy"] > 0.9 > before
    # each member has its own bootstrap resample
    assert trainer.counts.shape == (300, 3)
    assert not np.array_equal(trainer.counts[:, 0], trainer.counts[:, 1])


def test_l2_grows_when_validation_loss_is_far_above_training_loss():
    rng = np.random.default_rng(1)
    segs = make_data(40, rng)
    ens = RewardEnsemble(
        gym.spaces.Box(-9, 9, (4,)), gym.spaces.Box(-9, 9, (1,)), n_members=2, seed=0
    )
    trainer = RewardTrainer(ens, TrainerConfig(lr=1e-2, l2_init=1e-6), rng)
    # random labels: the model can only overfit, so validation loss >> training loss
    for _ in range(60):
        a, b = rng.choice(40, size=2, replace=False)
        trainer.add(Comparison(int(a), int(b), [(1, 0), (0, 1)][rng.integers(2)]), segs[a], segs[b])
    trainer.train(epochs=40)
    assert trainer.l2 > 1e-6 * 1.3


def test_round_metrics_describe_the_trained_model_and_validation_runs_once_per_epoch():
    rng = np.random.default_rng(2)
    segs = make_data(60, rng)
    ens = RewardEnsemble(
        gym.spaces.Box(-9, 9, (4,)), gym.spaces.Box(-9, 9, (1,)), n_members=3, seed=0
    )
    trainer = RewardTrainer(ens, TrainerConfig(batch_size=16, min_steps=1), rng)
    for _ in range(80):
        a, b = rng.choice(60, size=2, replace=False)
        mu = (1, 0) if segs[a].true_return > segs[b].true_return else (0, 1)
        trainer.add(Comparison(int(a), int(b), mu), segs[a], segs[b])
    passes = []
    losses = trainer._losses
    trainer._losses = lambda idx: passes.append(len(idx)) or losses(idx)
    stats = trainer.train(epochs=3)
    n_val = int(sum(trainer.is_val))
    # L2 adapts after each of the 3 epochs on a validation pass; the last one is shared
    # with the round's metrics, which add a single pass over the training labels.
    assert sorted(passes) == sorted([n_val, n_val, len(trainer) - n_val, n_val])
    trainer._losses = losses
    assert stats == trainer.evaluate()  # the final model's, with the L2 now in force


def test_state_dict_round_trip():
    rng = np.random.default_rng(2)
    segs = make_data(10, rng)
    ens = RewardEnsemble(gym.spaces.Box(-9, 9, (4,)), gym.spaces.Box(-9, 9, (1,)), n_members=2)
    trainer = RewardTrainer(ens, TrainerConfig(), rng)
    for i in range(9):
        trainer.add(Comparison(i, i + 1, (1, 0)), segs[i], segs[i + 1])
    trainer.train(epochs=1)
    state = trainer.state_dict()
    other = RewardTrainer(ens, TrainerConfig(), np.random.default_rng(99))
    for i in range(9):
        other.add(Comparison(i, i + 1, (1, 0)), segs[i], segs[i + 1])
    other.load_state_dict(state)
    assert other.is_val == trainer.is_val and np.array_equal(other.counts, trainer.counts)
    assert other.l2 == trainer.l2
    # ... and the generator goes on where it was (minibatches, the next labels' splits)
    assert other.rng.random() == trainer.rng.random()


def test_a_resumed_trainer_keeps_its_mean_teacher_and_trains_on_as_the_original():
    rng = np.random.default_rng(4)
    segs = make_data(20, rng)

    def sampler(n, r):
        idx = r.integers(0, 20, size=n)
        return np.stack([segs[i].obs[0] for i in idx]), np.zeros((n, 1), np.float32)

    def trainer(seed: int) -> RewardTrainer:
        ens = RewardEnsemble(gym.spaces.Box(-9, 9, (4,)), gym.spaces.Box(-9, 9, (1,)), n_members=2)
        cfg = TrainerConfig(mean_teacher_weight=1.0, mean_teacher_rampup=5, min_steps=5)
        t = RewardTrainer(ens, cfg, np.random.default_rng(seed), unlabeled=sampler)
        for i in range(19):
            t.add(Comparison(i, i + 1, (1, 0)), segs[i], segs[i + 1])
        return t

    original = trainer(0)
    original.train(epochs=2)
    resumed = trainer(7)
    # copies, as a checkpoint holds (Adam's loaded state would share the original's tensors)
    resumed.ensemble.load_state_dict(copy.deepcopy(original.ensemble.state_dict()))
    resumed.load_state_dict(copy.deepcopy(original.state_dict()))
    ema = resumed.mean_teacher.teacher
    assert ema.num_updates == original.mean_teacher.teacher.num_updates > 0
    assert original.train(epochs=1) == resumed.train(epochs=1)
    for a, b in zip(original.ensemble.parameters(), resumed.ensemble.parameters(), strict=True):
        assert torch.equal(a, b)


def test_regularizers_train_and_cross_lipschitz_matches_brute_force():
    import torch

    from rlkit.rewards.regularizers import cross_lipschitz_preference

    rng = np.random.default_rng(3)
    segs = make_data(30, rng)
    ens = RewardEnsemble(
        gym.spaces.Box(-9, 9, (4,)), gym.spaces.Box(-9, 9, (1,)), n_members=2, seed=0
    )
    oa = torch.as_tensor(np.stack([segs[i].obs for i in range(6)])).reshape(2, 3, 10, 4)
    ob = torch.as_tensor(np.stack([segs[i].obs for i in range(6, 12)])).reshape(2, 3, 10, 4)
    aa = torch.zeros(2, 3, 10, 1)
    pen = cross_lipschitz_preference(ens, oa, aa, ob, aa)
    # brute force: for 2 outputs, sum_{l,m} ||J_l - J_m||^2 / (n L^2) = 2 ||gR_a||^2 + ... / 4
    total = 0.0
    for k in range(2):
        m = ens.member(k)
        for i in range(3):
            xa = oa[k, i].clone().requires_grad_(True)
            xb = ob[k, i].clone().requires_grad_(True)
            (ga,) = torch.autograd.grad(m(xa, aa[k, i]).sum(), xa)
            (gb,) = torch.autograd.grad(m(xb, aa[k, i]).sum(), xb)
            total += 2 * (ga.pow(2).sum() + gb.pow(2).sum()) / (3 * 4)
    torch.testing.assert_close(pen, torch.as_tensor(total, dtype=pen.dtype), rtol=1e-4, atol=1e-7)

    def sampler(n, r):
        idx = r.integers(0, 30, size=n)
        return np.stack([segs[i].obs[0] for i in idx]), np.zeros((n, 1), np.float32)

    cfg = TrainerConfig(
        lr=3e-3, cross_lipschitz=0.01, mean_teacher_weight=1.0, mean_teacher_rampup=10
    )
    trainer = RewardTrainer(ens, cfg, rng, unlabeled=sampler)
    for _ in range(60):
        a, b = rng.choice(30, size=2, replace=False)
        mu = (1, 0) if segs[a].true_return > segs[b].true_return else (0, 1)
        trainer.add(Comparison(int(a), int(b), mu), segs[a], segs[b])
    teacher_before = [p.clone() for p in trainer.mean_teacher.teacher.teacher.params]
    stats = trainer.train(epochs=20)
    assert stats["charts/reward_train_accuracy"] > 0.8
    moved = [
        not torch.equal(a, b)
        for a, b in zip(teacher_before, trainer.mean_teacher.teacher.teacher.params, strict=True)
    ]
    assert all(moved)  # the EMA teacher follows the student


def test_a_round_trains_at_least_min_steps_and_the_default_depends_on_the_observations():
    from rlkit.loops.preference import trainer_config
    from rlkit.rewards.trainer import MIN_STEPS, MIN_STEPS_PIXELS

    rng = np.random.default_rng(3)
    segs = make_data(20, rng)
    space = gym.spaces.Box(-9, 9, (4,)), gym.spaces.Box(-9, 9, (1,))
    for config, steps in [(TrainerConfig(), MIN_STEPS), (TrainerConfig(min_steps=3), 3)]:
        trainer = RewardTrainer(RewardEnsemble(*space, n_members=2, seed=0), config, rng)
        for i in range(0, 20, 2):
            trainer.add(Comparison(i, i + 1, (1, 0)), segs[i], segs[i + 1])
        trainer.train(epochs=1)  # one epoch of 64-pair batches over ~6 labels: one step
        assert trainer.steps == steps
    assert MIN_STEPS == 30
    hopper = trainer_config(TrainerConfig(), "mujoco", "Hopper-v5")
    assert hopper.min_steps is None  # -> MIN_STEPS
    assert trainer_config(TrainerConfig(), "atari", "ALE/Pong-v5").min_steps == MIN_STEPS_PIXELS
    assert MIN_STEPS_PIXELS == 10
    assert trainer_config(TrainerConfig(min_steps=50), "atari", "ALE/Pong-v5").min_steps == 50


def test_l2_stops_at_its_cap_which_defaults_by_env():
    from rlkit.loops.preference import trainer_config
    from rlkit.rewards.trainer import L2_MAX

    space = gym.spaces.Box(-9, 9, (4,)), gym.spaces.Box(-9, 9, (1,))
    rng = np.random.default_rng(4)
    caps = []
    for config in [TrainerConfig(), TrainerConfig(l2_max=0.1)]:
        trainer = RewardTrainer(RewardEnsemble(*space, n_members=2, seed=0), config, rng)
        trainer.l2 = 0.005
        history = []
        for _ in range(20):  # validation loss 2x training loss: L2 grows by 1.3x an epoch
            trainer._adapt_l2(1.0, 2.0)
            history.append(trainer.l2)
        caps.append(history[-1])
        trainer._adapt_l2(1.0, 1.0)  # below 1.1x: it weakens again
        assert trainer.l2 == pytest.approx(history[-1] / 1.3)
    assert caps == [L2_MAX, 0.1] and L2_MAX == 1e-2
    caps = {
        env: trainer_config(TrainerConfig(), kind, env).l2_max
        for env, kind in [
            ("Walker2d-v5", "mujoco"), ("Walker2d-v4", "mujoco"), ("HalfCheetah-v5", "mujoco"),
            ("Hopper-v5", "mujoco"), ("ALE/Breakout-v5", "atari"),
        ]
    }  # fmt: skip
    assert caps == {
        "Walker2d-v5": 3e-2, "Walker2d-v4": 3e-2, "HalfCheetah-v5": 1e-2, "Hopper-v5": 1e-2,
        "ALE/Breakout-v5": 1e-2,
    }  # fmt: skip
    assert trainer_config(TrainerConfig(l2_max=0.05), "mujoco", "Walker2d-v5").l2_max == 0.05


def test_the_initial_l2_is_checked_against_the_cap_the_env_gets():
    from rlkit.core.errors import ConfigError
    from rlkit.loops.preference import trainer_config
    from rlkit.rewards.trainer import L2_MAX

    config = TrainerConfig(l2_init=0.02)  # unset cap: the env decides
    assert trainer_config(config, "mujoco", "Walker2d-v5").l2_max == 3e-2
    with pytest.raises(ConfigError, match=r"--trainer.l2-init 0.02 is above the L2 cap 0.01"):
        trainer_config(config, "mujoco", "Hopper-v5")
    with pytest.raises(ConfigError, match="above the L2 cap"):
        TrainerConfig(l2_init=0.02, l2_max=0.01)
    space = gym.spaces.Box(-9, 9, (4,)), gym.spaces.Box(-9, 9, (1,))
    ensemble, rng = RewardEnsemble(*space, n_members=2, seed=0), np.random.default_rng(0)
    assert RewardTrainer(ensemble, TrainerConfig(), rng).config.l2_max == L2_MAX
    with pytest.raises(ConfigError, match="above the L2 cap"):
        RewardTrainer(ensemble, config, rng)  # built on its own, the cap is L2_MAX


def test_trainer_normalizes_inputs_with_its_labelled_segments_and_still_learns():
    rng = np.random.default_rng(3)
    scale = np.array([10, 0.1, 3, 1], np.float32)  # far from zero mean and unit scale
    segs = [
        Segment(obs=s.obs * scale + 5, acts=s.acts, true_rews=(s.obs * scale + 5) @ W, id=s.id)
        for s in make_data(120, rng)
    ]
    ens = RewardEnsemble(
        gym.spaces.Box(-99, 99, (4,)), gym.spaces.Box(-9, 9, (1,)), 3, seed=0,
        normalize_inputs=True,
    )  # fmt: skip
    trainer = RewardTrainer(ens, TrainerConfig(lr=3e-3), rng)
    used = set()
    for _ in range(300):
        a, b = rng.choice(100, size=2, replace=False)  # segments 100-119 are never labelled
        used |= {int(a), int(b)}
        mu = (1, 0) if segs[a].true_return > segs[b].true_return else (0, 1)
        trainer.add(Comparison(int(a), int(b), mu), segs[a], segs[b])
    stats = trainer.train(epochs=30)
    labelled = np.concatenate([segs[i].obs for i in sorted(used)])
    np.testing.assert_allclose(ens.in_mean.numpy(), labelled.mean(0), rtol=1e-4)
    np.testing.assert_allclose(ens.in_std.numpy(), labelled.std(0, ddof=1), rtol=1e-4)
    assert stats["charts/reward_val_accuracy"] > 0.9


def _normalized_trainer(input_stats_segments: int | None) -> tuple[RewardTrainer, list[Segment]]:
    rng = np.random.default_rng(5)
    segs = make_data(40, rng)
    ens = RewardEnsemble(
        gym.spaces.Box(-99, 99, (4,)), gym.spaces.Box(-9, 9, (1,)), 2, seed=0,
        normalize_inputs=True,
    )  # fmt: skip
    config = TrainerConfig(min_steps=1, input_stats_segments=input_stats_segments)
    return RewardTrainer(ens, config, rng), segs


def _label(trainer: RewardTrainer, segs: list[Segment], pairs: range, shift: float) -> None:
    for i in pairs:
        a, b = (
            Segment(obs=s.obs + shift, acts=s.acts, true_rews=s.true_rews, id=s.id)
            for s in (segs[2 * i], segs[2 * i + 1])
        )
        trainer.add(Comparison(a.id, b.id, (1, 0)), a, b)


@pytest.mark.parametrize("threshold", [10, 30, None])
def test_input_statistics_are_kept_once_they_come_from_enough_segments(threshold):
    trainer, segs = _normalized_trainer(threshold)
    _label(trainer, segs, range(0, 10), shift=0.0)  # 20 segments
    trainer.train(epochs=0)
    first = trainer.ensemble.in_mean.clone(), trainer.ensemble.in_std.clone()
    np.testing.assert_allclose(
        first[0].numpy(), np.concatenate([s.obs for s in segs[:20]]).mean(0), rtol=1e-5
    )
    assert trainer.input_stats_from == 20
    _label(trainer, segs, range(10, 20), shift=50.0)  # 20 more, far off
    trainer.train(epochs=0)
    kept = threshold is not None and threshold <= 20
    assert trainer.input_stats_kept == (threshold is not None and threshold <= 40)
    assert torch.equal(trainer.ensemble.in_mean, first[0]) == kept
    assert torch.equal(trainer.ensemble.in_std, first[1]) == kept
    if not kept:  # taken again, over all 40 segments
        both = np.concatenate([s.obs + 50.0 * (i >= 20) for i, s in enumerate(segs)])
        np.testing.assert_allclose(trainer.ensemble.in_mean.numpy(), both.mean(0), rtol=1e-5)
        assert trainer.input_stats_from == 40


def test_kept_input_statistics_stay_kept_after_a_resume():
    trainer, segs = _normalized_trainer(10)
    _label(trainer, segs, range(0, 10), shift=0.0)
    trainer.train(epochs=0)
    resumed, _ = _normalized_trainer(10)
    resumed.ensemble.load_state_dict(trainer.ensemble.state_dict())
    _label(resumed, segs, range(0, 10), shift=0.0)
    resumed.load_state_dict(trainer.state_dict())
    _label(resumed, segs, range(10, 20), shift=50.0)
    resumed.train(epochs=0)
    assert torch.equal(resumed.ensemble.in_mean, trainer.ensemble.in_mean)
    old_state = {k: v for k, v in trainer.state_dict().items() if k != "input_stats_from"}
    fresh, _ = _normalized_trainer(10)
    _label(fresh, segs, range(0, 10), shift=0.0)
    fresh.load_state_dict(old_state)  # saved before the field existed: not kept yet
    assert fresh.input_stats_from == 0 and not fresh.input_stats_kept


def test_initial_weights_fall_once_later_labels_outnumber_the_initial_ones():
    np.testing.assert_allclose(initial_weights(5, 3), np.ones(5))  # 2 later < 3 initial
    np.testing.assert_allclose(initial_weights(6, 3), np.ones(6))  # equal: still 1
    np.testing.assert_allclose(initial_weights(12, 3), [1 / 3] * 3 + [1] * 9)
    w = initial_weights(700, 175)  # the MuJoCo default's end: share 0.1 instead of 0.25
    assert w[:175].sum() / w.sum() == pytest.approx(0.1)
    np.testing.assert_allclose(initial_weights(4, 0), np.ones(4))


@pytest.mark.parametrize("rebalance", [False, True])
def test_rebalanced_minibatches_draw_initial_labels_by_their_weight(rebalance, monkeypatch):
    rng = np.random.default_rng(3)
    segs = make_data(80, rng)
    ens = RewardEnsemble(
        gym.spaces.Box(-9, 9, (4,)), gym.spaces.Box(-9, 9, (1,)), n_members=2, seed=0
    )
    config = TrainerConfig(holdout=0.0, rebalance_initial=rebalance, min_steps=0)
    trainer = RewardTrainer(ens, config, rng)
    for i in range(10):  # up front
        trainer.add(Comparison(2 * i, 2 * i + 1, (1, 0)), segs[2 * i], segs[2 * i + 1])
    trainer.train(epochs=1)
    assert trainer.n_initial == 10
    for i in range(10, 40):  # later: 30 labels, so each initial one weighs 1/3
        trainer.add(Comparison(2 * i, 2 * i + 1, (0, 1)), segs[2 * i], segs[2 * i + 1])
    drawn: list[np.ndarray] = []
    batch = trainer._batch

    def recording_batch(idx: torch.Tensor):
        drawn.append(idx.numpy().copy())
        return batch(idx)

    monkeypatch.setattr(trainer, "_batch", recording_batch)
    trainer.train(epochs=100)
    idx = np.concatenate(drawn, axis=1)  # (K, draws)
    w = trainer.counts.T * (initial_weights(40, 10) if rebalance else 1.0)  # (K, 40)
    for m in range(2):
        expected = w[m, :10].sum() / w[m].sum()
        assert np.mean(idx[m] < 10) == pytest.approx(expected, abs=0.02)
    # the split point survives a checkpoint
    restored = RewardTrainer(ens, config, np.random.default_rng(4))
    restored.load_state_dict(trainer.state_dict())
    assert restored.n_initial == 10


def _trained(seed_data: int = 3, **config) -> tuple[RewardTrainer, list[Segment]]:
    """A 2-member ensemble trained 10 epochs on 60 comparisons of 30 linear-reward segments;
    the same data, draws and initial weights whatever ``config`` says."""
    rng = np.random.default_rng(seed_data)
    segs = make_data(30, rng)
    ens = RewardEnsemble(
        gym.spaces.Box(-9, 9, (4,)), gym.spaces.Box(-9, 9, (1,)), n_members=2, seed=0
    )

    def sampler(n, r):
        idx = r.integers(0, 30, size=n)
        return np.stack([segs[i].obs[0] for i in idx]), np.zeros((n, 1), np.float32)

    trainer = RewardTrainer(ens, TrainerConfig(lr=3e-3, **config), rng, unlabeled=sampler)
    for _ in range(60):
        a, b = rng.choice(30, size=2, replace=False)
        mu = (1, 0) if segs[a].true_return > segs[b].true_return else (0, 1)
        trainer.add(Comparison(int(a), int(b), mu), segs[a], segs[b])
    trainer.train(epochs=10)
    return trainer, segs


def test_each_regularizer_changes_what_the_members_learn():
    """Each term is in the loss that is minimized: the same run with a weight ~1e9 times
    smaller (same code path, same random draws) ends elsewhere, in the direction the term
    pulls."""

    def fixed_l2(value: float) -> dict:
        return {"l2_init": value, "l2_min": value, "l2_max": value}

    def weights_l2(trainer: RewardTrainer) -> float:
        return float(trainer.ensemble.parameter_l2().sum().detach())

    strong, _ = _trained(**fixed_l2(0.1))
    weak, _ = _trained(**fixed_l2(1e-7))
    assert strong.l2 == 0.1 and weak.l2 == 1e-7
    assert weights_l2(strong) < 0.7 * weights_l2(weak)

    from rlkit.rewards.regularizers import cross_lipschitz_preference

    def penalty(trainer: RewardTrainer, segs: list[Segment]) -> float:
        oa = torch.as_tensor(np.stack([s.obs for s in segs[:12]])).reshape(2, 6, 10, 4)
        ob = torch.as_tensor(np.stack([s.obs for s in segs[12:24]])).reshape(2, 6, 10, 4)
        acts = torch.zeros(2, 6, 10, 1)
        return float(cross_lipschitz_preference(trainer.ensemble, oa, acts, ob, acts).detach())

    on, segs = _trained(cross_lipschitz=1.0)
    off, _ = _trained(cross_lipschitz=1e-9)
    assert penalty(on, segs) < 0.7 * penalty(off, segs)

    on, _ = _trained(mean_teacher_weight=1.0, mean_teacher_rampup=5)
    off, _ = _trained(mean_teacher_weight=1e-9, mean_teacher_rampup=5)
    moved = max(
        float((a - b).abs().max().detach())
        for a, b in zip(on.ensemble.parameters(), off.ensemble.parameters(), strict=True)
    )
    assert moved > 1e-3


def _small_trainer(n_segments: int = 6) -> tuple[RewardTrainer, list[Segment]]:
    rng = np.random.default_rng(5)
    ens = RewardEnsemble(gym.spaces.Box(-9, 9, (4,)), gym.spaces.Box(-9, 9, (1,)), n_members=2)
    return RewardTrainer(ens, TrainerConfig(), rng), make_data(n_segments, rng)


def _snapshot(trainer: RewardTrainer) -> tuple:
    """What ``add`` may change: labels, their splits and counts, the cache, the generator."""
    return (
        list(trainer.seg_a), list(trainer.seg_b), list(trainer.mu_a), list(trainer.is_val),
        trainer.counts.copy(), dict(trainer.cache.row), trainer.cache.size,
        copy.deepcopy(trainer.rng.bit_generator.state),
    )  # fmt: skip


def _assert_same(before: tuple, after: tuple) -> None:
    for x, y in zip(before, after, strict=True):
        assert np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y


def test_an_add_naming_a_segment_never_given_fails_and_leaves_the_trainer_as_it_was():
    """The comparison's segment_b was never given (None): nothing is appended, so the labels
    that follow still pair the right segments."""
    trainer, segs = _small_trainer()
    trainer.add(Comparison(0, 1, (1, 0)), segs[0], segs[1])
    before = _snapshot(trainer)
    with pytest.raises(ValueError, match=r"comparison\.segment_b=3 was never given"):
        trainer.add(Comparison(2, 3, (1, 0)), segs[2], None)
    _assert_same(before, _snapshot(trainer))
    trainer.add(Comparison(2, 3, (0, 1)), segs[2], segs[3])
    assert len(trainer.seg_a) == len(trainer.seg_b) == len(trainer.mu_a) == len(trainer) == 2
    obs = trainer.cache.obs
    for label, (a, b) in enumerate([(0, 1), (2, 3)]):
        assert torch.equal(obs[trainer.seg_a[label]], torch.as_tensor(segs[a].obs))
        assert torch.equal(obs[trainer.seg_b[label]], torch.as_tensor(segs[b].obs))
    assert trainer.mu_a == [1.0, 0.0]


def test_segments_must_carry_the_ids_their_comparison_names():
    trainer, segs = _small_trainer()
    before = _snapshot(trainer)
    unpooled = dataclasses.replace(segs[0], id=-1)  # never went through SegmentPool.add
    with pytest.raises(
        ValueError,
        match=r"^segment given for comparison\.segment_a=0 has id -1; give segments their pool"
        r" ids \(SegmentPool\.add sets them\)$",
    ):
        trainer.add(Comparison(0, 1, (1, 0)), unpooled, segs[1])
    with pytest.raises(ValueError, match=r"comparison\.segment_b=1 has id 5;"):
        trainer.add(Comparison(0, 1, (1, 0)), segs[0], segs[5])
    _assert_same(before, _snapshot(trainer))  # neither segment was cached


def test_segments_with_other_action_shapes_are_refused_before_anything_is_cached():
    """Acts ``(L, 1)`` after ``(L, 2)`` ones were broadcast into the cache; both the
    observations' and the actions' shapes are checked, for every segment, before any is
    stored."""
    trainer, segs = _small_trainer()
    segs = [dataclasses.replace(s, acts=np.zeros((10, 2), np.float32)) for s in segs[:3]] + [
        segs[3]  # acts (10, 1)
    ]
    trainer.add(Comparison(0, 1, (1, 0)), segs[0], segs[1])
    before = _snapshot(trainer)
    with pytest.raises(
        ValueError, match=r"^segment 3 has acts of shape \(10, 1\), expected \(10, 2\)"
    ):
        trainer.add(Comparison(2, 3, (1, 0)), segs[2], segs[3])
    _assert_same(before, _snapshot(trainer))  # segment 2 (fine on its own) not cached either
    wide = dataclasses.replace(segs[2], obs=np.zeros((10, 5), np.float32))
    with pytest.raises(ValueError, match=r"^segment 2 has shape \(10, 5\), expected \(10, 4\)"):
        trainer.add(Comparison(2, 0, (1, 0)), wide, None)
    _assert_same(before, _snapshot(trainer))


def test_a_minibatch_backward_in_parts_gives_the_gradients_of_one_pass():
    """Each part's segments a and b in one pass, its loss backward at once: the gradients in
    .grad and the loss are those of one backward of the whole minibatch."""
    rng = np.random.default_rng(4)
    ens = RewardEnsemble(
        gym.spaces.Box(-9, 9, (4,)), gym.spaces.Box(-9, 9, (1,)), n_members=3, seed=0
    )
    gen = torch.Generator().manual_seed(4)
    obs, acts = torch.randn(30, 10, 4, generator=gen), torch.randn(30, 10, 1, generator=gen)
    rows_a, rows_b = (torch.as_tensor(rng.integers(0, 30, (3, 16))) for _ in range(2))
    mu = torch.as_tensor(rng.choice([0.0, 0.5, 1.0], (3, 16)), dtype=torch.float32)
    ret_a = ens.segment_returns(obs[rows_a], acts[rows_a], per_member=True)
    ret_b = ens.segment_returns(obs[rows_b], acts[rows_b], per_member=True)
    whole = preference_loss(ret_a, ret_b, mu, 0.1).mean(1)
    whole.sum().backward()
    grads = [p.grad.clone() for p in ens.parameters()]
    ens.zero_grad()
    parts = preference_backward_in_parts(ens, obs, acts, rows_a, rows_b, mu, 0.1, pairs=5)
    torch.testing.assert_close(parts, whole.detach(), rtol=1e-6, atol=1e-6)
    assert sum(int((g != 0).sum()) for g in grads) > 0.9 * sum(g.numel() for g in grads)
    for p, g in zip(ens.parameters(), grads, strict=True):  # (the output bias's is 0: a - b)
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("regularized", [False, True])
def test_a_trainer_takes_long_segments_in_parts_and_learns_as_with_one_pass(
    monkeypatch, regularized
):
    """Stacked MLP members take a minibatch of long segments in parts (``pairs_per_pass``),
    the cross-Lipschitz penalty and a custom loss beside them: they learn as with one pass
    (the same losses but for float rounding, which training amplifies)."""
    import rlkit.rewards.ensemble as ensemble_module

    def extra(ens, obs_a, acts_a, obs_b, acts_b):
        return 1e-2 * ens.segment_returns(obs_a[0], acts_a[0]).pow(2).mean()

    import rlkit.rewards.trainer as trainer_module

    in_parts = trainer_module.preference_backward_in_parts
    calls: list[int] = []

    def counted(*args, **kwargs):
        calls.append(1)
        return in_parts(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "preference_backward_in_parts", counted)

    def trained(pass_rows: int) -> tuple[int | None, dict]:
        monkeypatch.setattr(ensemble_module, "PASS_ROWS", pass_rows)
        rng = np.random.default_rng(3)
        segs = make_data(60, rng)
        ens = RewardEnsemble(
            gym.spaces.Box(-9, 9, (4,)), gym.spaces.Box(-9, 9, (1,)), n_members=3, seed=0
        )
        cfg = TrainerConfig(lr=3e-3, batch_size=16, cross_lipschitz=0.1 if regularized else 0.0)
        trainer = RewardTrainer(ens, cfg, rng, extra_loss=extra if regularized else None)
        for _ in range(80):
            a, b = rng.choice(60, size=2, replace=False)
            mu = (1, 0) if segs[a].true_return > segs[b].true_return else (0, 1)
            trainer.add(Comparison(int(a), int(b), mu), segs[a], segs[b])
        return ens.pairs_per_pass(10), trainer.train(epochs=4)

    whole = trained(10**9)
    assert not calls  # one pass: the parts path was not taken
    parts = trained(60)
    assert calls  # ... and here it was
    assert whole[0] >= 16 and parts[0] == 3  # 16 pairs: one pass, or 6 parts (the last of 1)
    assert parts[1] == pytest.approx(whole[1], rel=1e-2, abs=1e-6)
    assert parts[1]["losses/reward_train"] < 0.6  # it learned: not two untrained models alike
