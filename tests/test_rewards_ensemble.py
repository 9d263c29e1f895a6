import gymnasium as gym
import numpy as np
import pytest
import torch

from rlkit.rewards.ensemble import RewardEnsemble

VEC_OBS = gym.spaces.Box(-1, 1, (11,), dtype=np.float32)
VEC_ACT = gym.spaces.Box(-1, 1, (3,), dtype=np.float32)
PIX_OBS = gym.spaces.Box(0, 255, (84, 84, 4), dtype=np.uint8)


@pytest.mark.parametrize("fast", [True, False], ids=["stacked-matmul", "vmap"])
def test_batched_ensemble_equals_per_member_forward(fast):
    ens = RewardEnsemble(VEC_OBS, VEC_ACT, n_members=4, seed=0)
    ens._fast = fast
    obs, acts = torch.randn(32, 11), torch.randn(32, 3)
    batched = ens.member_rewards(obs, acts)
    assert batched.shape == (4, 32)
    for k in range(4):
        torch.testing.assert_close(batched[k], ens.member(k)(obs, acts), atol=1e-6, rtol=0)
    # per-member inputs: member k sees its own batch
    obs_k, acts_k = torch.randn(4, 8, 11), torch.randn(4, 8, 3)
    per = ens.member_rewards_per_member(obs_k, acts_k)
    for k in range(4):
        torch.testing.assert_close(per[k], ens.member(k)(obs_k[k], acts_k[k]), atol=1e-6, rtol=0)


def test_fast_path_and_vmap_agree_including_gradients():
    ens = RewardEnsemble(VEC_OBS, VEC_ACT, n_members=3, seed=1)
    obs, acts = torch.randn(4, 6, 11), torch.randn(4, 6, 3)
    grads = []
    for fast in (True, False):
        ens._fast = fast
        ens.zero_grad()
        out = ens.segment_returns(
            obs.expand(3, *obs.shape), acts.expand(3, *acts.shape), per_member=True
        )
        out.sum().backward()
        grads.append([p.grad.clone() for p in ens.params])
    for g_fast, g_vmap in zip(*grads, strict=True):
        torch.testing.assert_close(g_fast, g_vmap, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("act_space", [VEC_ACT, gym.spaces.Discrete(4)], ids=["box", "discrete"])
def test_mlp_shared_inputs_match_vmap_and_each_member_including_gradients(act_space):
    """Inputs every member shares (query scoring, the policy's reward: one batch expanded to K
    members) give vmap's values and gradients and each member's own returns, for float64
    observations and one-hot actions too."""
    ens = RewardEnsemble(VEC_OBS, act_space, 3, "mlp", {"hidden": [64, 32]}, seed=4)
    gen = torch.Generator().manual_seed(5)
    obs = torch.randn(5, 7, 11, generator=gen, dtype=torch.float64)
    acts = (
        torch.randn(5, 7, 3, generator=gen)
        if isinstance(act_space, gym.spaces.Box)
        else torch.randint(0, 4, (5, 7), generator=gen)
    )
    weights = torch.arange(1.0, 16.0).reshape(3, 5)
    outs, grads = [], []
    for fast in (True, False):
        ens._fast = fast
        ens.zero_grad()
        out = ens.segment_returns(obs, acts)
        (out * weights).sum().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in ens.params])
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # and equal to the loop over members on the same inputs
    flat_o, flat_a = obs.reshape(35, 11), acts.reshape(35, *acts.shape[2:])
    for k in range(3):
        ref = ens.member(k)(flat_o.float(), flat_a).reshape(5, 7).sum(-1)
        torch.testing.assert_close(outs[0][k], ref, atol=1e-5, rtol=1e-5)


CNN_KWARGS = {"channels": (4, 8, 8), "features_dim": 16}


@pytest.mark.parametrize("fast", [True, False], ids=["grouped-conv", "vmap"])
@pytest.mark.parametrize("shape", [(84, 84, 4), (4, 84, 84)], ids=["hwc", "chw"])
def test_cnn_members_match_each_member_on_shared_and_own_inputs(fast, shape):
    space = gym.spaces.Box(0, 255, shape, dtype=np.uint8)
    ens = RewardEnsemble(space, gym.spaces.Discrete(6), 3, "nature_cnn", CNN_KWARGS, seed=0)
    assert ens._fast  # the Nature CNN without norm layers has the stacked path
    ens._fast = fast
    gen = torch.Generator().manual_seed(0)
    obs = torch.randint(0, 256, (5, *shape), dtype=torch.uint8, generator=gen)
    acts = torch.tensor([0, 3, 5, 1, 2])
    out = ens.member_rewards(obs, acts)
    for k in range(3):
        torch.testing.assert_close(out[k], ens.member(k)(obs, acts), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[0], out[1])
    own = torch.randint(0, 256, (3, 5, *shape), dtype=torch.uint8, generator=gen)
    per = ens.member_rewards_per_member(own, acts.expand(3, 5))
    for k in range(3):
        torch.testing.assert_close(per[k], ens.member(k)(own[k], acts), atol=1e-5, rtol=1e-5)


def test_cnn_fast_path_and_vmap_agree_including_gradients():
    ens = RewardEnsemble(PIX_OBS, gym.spaces.Discrete(4), 3, "nature_cnn", CNN_KWARGS, seed=2)
    gen = torch.Generator().manual_seed(1)
    obs = torch.randint(0, 256, (3, 2, 4, 84, 84, 4), dtype=torch.uint8, generator=gen)
    acts = torch.randint(0, 4, (3, 2, 4), generator=gen)
    results = []
    for fast in (True, False):
        ens._fast = fast
        ens.zero_grad()
        out = ens.segment_returns(obs, acts, per_member=True)
        (out * torch.arange(1.0, 7.0).reshape(3, 2)).sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in ens.params]))
    (out_fast, g_fast), (out_vmap, g_vmap) = results
    torch.testing.assert_close(out_fast, out_vmap, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_fast, g_vmap, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_cnn_shared_images_path_gradients_match_vmap():
    """Shared images go through one plain first convolution (mean-teacher training needs its
    gradients); they must equal vmap's."""
    ens = RewardEnsemble(PIX_OBS, gym.spaces.Discrete(4), 3, "nature_cnn", CNN_KWARGS, seed=3)
    gen = torch.Generator().manual_seed(2)
    obs = torch.randint(0, 256, (6, 84, 84, 4), dtype=torch.uint8, generator=gen)
    acts = torch.randint(0, 4, (6,), generator=gen)
    grads = []
    for fast in (True, False):
        ens._fast = fast
        ens.zero_grad()
        (ens.member_rewards(obs, acts) * torch.arange(1.0, 19.0).reshape(3, 6)).sum().backward()
        grads.append([p.grad.clone() for p in ens.params])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_cnn_with_norm_layers_uses_vmap():
    kwargs = {**CNN_KWARGS, "norm": "batchnorm"}
    ens = RewardEnsemble(PIX_OBS, gym.spaces.Discrete(4), 2, "nature_cnn", kwargs, seed=0)
    assert not ens._fast


def test_normalized_reward_is_mean_of_standardized_members():
    ens = RewardEnsemble(VEC_OBS, VEC_ACT, n_members=3, seed=0)
    obs, acts = torch.randn(500, 11), torch.randn(500, 3)
    ens.update_normalization(obs, acts)
    raw = ens.member_rewards(obs, acts).detach()
    z = (raw - raw.mean(1, keepdim=True)) / raw.std(1, keepdim=True)
    # members correlate imperfectly: their mean alone has std < 1, so it is divided by it
    assert 0.5 < float(z.mean(0).std()) < 0.95
    torch.testing.assert_close(
        ens.reward(obs, acts), z.mean(0) / z.mean(0).std(), atol=1e-5, rtol=0
    )
    # the policy's reward over the sample: mean 0 and std 1 (the paper's normalized r-hat)
    assert abs(float(ens.reward(obs, acts).mean())) < 1e-5
    assert abs(float(ens.reward(obs, acts).std()) - 1.0) < 1e-5


def test_an_ensemble_saved_before_the_mean_was_rescaled_loads_with_its_old_reward():
    ens = RewardEnsemble(VEC_OBS, VEC_ACT, n_members=3, seed=0)
    obs, acts = torch.randn(200, 11), torch.randn(200, 3)
    ens.update_normalization(obs, acts)
    old = {k: v for k, v in ens.state_dict().items() if k != "out_scale"}
    loaded = RewardEnsemble(VEC_OBS, VEC_ACT, n_members=3, seed=1)
    loaded.load_state_dict(old)
    assert float(loaded.out_scale) == 1.0 and "out_scale" not in old
    torch.testing.assert_close(loaded.reward(obs, acts), ens.reward(obs, acts) * ens.out_scale)
    loaded.update_normalization(obs, acts)
    torch.testing.assert_close(loaded.reward(obs, acts), ens.reward(obs, acts))
    # weights alone (the reward learner's, strict=False) leave the normalization as it is
    from rlkit.rewards.learner import NORMALIZATION

    scale = float(loaded.out_scale)
    loaded.load_state_dict({k: v for k, v in old.items() if k not in NORMALIZATION}, strict=False)
    assert float(loaded.out_scale) == scale != 1.0


def test_segment_returns_sum_over_steps():
    ens = RewardEnsemble(VEC_OBS, VEC_ACT, n_members=2, seed=0)
    obs, acts = torch.randn(5, 7, 11), torch.randn(5, 7, 3)
    ret = ens.segment_returns(obs, acts)
    flat = ens.member_rewards(obs.reshape(35, 11), acts.reshape(35, 3)).reshape(2, 5, 7).sum(-1)
    torch.testing.assert_close(ret, flat)


# Train/eval behaviour: dropout and batch statistics. The vmap path (batchnorm, CNN) used to
# evaluate every call in train mode whatever ``eval()`` said.
MODE_CASES = [
    pytest.param(VEC_OBS, VEC_ACT, "mlp", {}, id="mlp-fast"),
    pytest.param(VEC_OBS, VEC_ACT, "mlp", {"norm": "batchnorm"}, id="mlp-batchnorm-vmap"),
    pytest.param(
        PIX_OBS, gym.spaces.Discrete(4), "nature_cnn",
        {"channels": (4, 4, 4), "features_dim": 8}, id="cnn-grouped-conv",
    ),
]  # fmt: skip


def _inputs(obs_space, act_space, n):
    gen = torch.Generator().manual_seed(1)
    if obs_space.dtype == np.uint8:
        obs = torch.randint(0, 256, (n, *obs_space.shape), dtype=torch.uint8, generator=gen)
    else:
        obs = torch.randn(n, *obs_space.shape, generator=gen)
    if isinstance(act_space, gym.spaces.Discrete):
        return obs, torch.randint(0, act_space.n, (n,), generator=gen)
    return obs, torch.randn(n, *act_space.shape, generator=gen)


@pytest.mark.parametrize(("obs_space", "act_space", "backbone", "kwargs"), MODE_CASES)
def test_eval_mode_and_policy_reward_use_no_dropout_or_batch_statistics(
    obs_space, act_space, backbone, kwargs
):
    torch.manual_seed(0)
    ens = RewardEnsemble(obs_space, act_space, 2, backbone, kwargs, dropout=0.5, seed=0)
    obs, acts = _inputs(obs_space, act_space, 6)
    with torch.no_grad():
        ens.train()
        noisy = [ens.member_rewards(obs, acts) for _ in range(2)]
        assert not torch.allclose(noisy[0], noisy[1])  # train mode: dropout is on
        expected = torch.stack([ens.member(k).eval()(obs, acts) for k in range(2)])
        # Explicit eval, whatever the flag says; the flag itself is left alone.
        assert torch.allclose(ens.member_rewards(obs, acts, train=False), expected, atol=1e-5)
        assert ens.training
        ens.eval()
        assert torch.allclose(ens.member_rewards(obs, acts), expected, atol=1e-5)
        # Each input's eval-mode reward does not depend on what else is in the batch (no batch
        # statistics), and a single observation works.
        one = ens.member_rewards(obs[:1], acts[:1])
        assert torch.allclose(one, expected[:, :1], atol=1e-5)
        # The policy's reward is eval-mode even while the ensemble is in train mode.
        ens.train()
        raw = (expected - ens.out_mean[:, None]) / ens.out_std[:, None]
        assert torch.allclose(ens.reward(obs, acts), raw.mean(0), atol=1e-5)
        assert ens.training
        seg = ens.segment_returns(obs[None], acts[None], train=False)
        assert torch.allclose(seg[:, 0], expected.sum(1), atol=1e-4)


@pytest.mark.parametrize("fast", [True, False], ids=["stacked-matmul", "vmap"])
def test_input_normalization_standardizes_what_every_member_sees(fast):
    plain = RewardEnsemble(VEC_OBS, VEC_ACT, n_members=3, seed=2)
    norm = RewardEnsemble(VEC_OBS, VEC_ACT, n_members=3, seed=2, normalize_inputs=True)
    plain._fast = norm._fast = fast
    data = torch.randn(500, 11, dtype=torch.float64) * torch.linspace(0.1, 10, 11) + 3.0
    norm.set_input_normalization(data)
    torch.testing.assert_close(norm.in_mean, data.float().mean(0))
    torch.testing.assert_close(norm.in_std, data.float().std(0))
    obs, acts = data[:40].reshape(4, 10, 11), torch.randn(4, 10, 3)
    scaled = (obs.float() - norm.in_mean) / norm.in_std
    torch.testing.assert_close(
        norm.segment_returns(obs, acts), plain.segment_returns(scaled, acts), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        norm.member_rewards(obs[0], acts[0]), plain.member_rewards(scaled[0], acts[0])
    )
    per = norm.segment_returns(obs.expand(3, *obs.shape), acts.expand(3, *acts.shape), True)
    torch.testing.assert_close(per, plain.segment_returns(scaled, acts), atol=1e-5, rtol=0)
    # The statistics travel with the weights; a dimension that never varies is not blown up.
    assert {"in_mean", "in_std"} <= set(norm.state_dict())
    norm.set_input_normalization(torch.ones(10, 11))
    assert torch.all(norm.in_std == 1e-2)


def test_input_normalization_is_for_vector_observations():
    with pytest.raises(ValueError, match="vector"):
        RewardEnsemble(PIX_OBS, gym.spaces.Discrete(4), n_members=2, normalize_inputs=True)
    with pytest.raises(RuntimeError, match="without normalize_inputs"):
        RewardEnsemble(VEC_OBS, VEC_ACT, n_members=2).set_input_normalization(torch.zeros(4, 11))


def test_output_normalization_needs_two_rows():
    """The std of one row is NaN (clamp_min keeps it), which made every reward NaN."""
    ens = RewardEnsemble(VEC_OBS, VEC_ACT, n_members=2, seed=0)
    with pytest.raises(ValueError, match=r"^output normalization needs at least two rows, got"):
        ens.update_normalization(torch.randn(1, 11), torch.randn(1, 3))
    assert torch.equal(ens.out_std, torch.ones(2)) and torch.equal(ens.out_mean, torch.zeros(2))
    ens.update_normalization(torch.randn(2, 11), torch.randn(2, 3))
    assert torch.isfinite(ens.reward(torch.randn(4, 11), torch.randn(4, 3))).all()


def test_dropout_outside_0_1_is_refused():
    for dropout in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"^dropout must be in \[0, 1\)"):
            RewardEnsemble(VEC_OBS, VEC_ACT, n_members=2, dropout=dropout)


def test_input_normalization_refuses_observations_of_another_width():
    """(11, 5) has 55 elements, which reshape to five 11-wide rows: no longer accepted."""
    ens = RewardEnsemble(VEC_OBS, VEC_ACT, n_members=2, normalize_inputs=True)
    with pytest.raises(ValueError, match=r"^obs must be \(\.\.\., 11\), got \(11, 5\)$"):
        ens.set_input_normalization(torch.randn(11, 5))
    assert torch.equal(ens.in_std, torch.ones(11))
    ens.set_input_normalization(torch.randn(3, 4, 11))  # any leading dims


@pytest.mark.parametrize("fast", [True, False], ids=["stacked-matmul", "vmap"])
def test_wrong_inputs_are_refused_with_one_line_naming_the_shapes(fast):
    ens = RewardEnsemble(VEC_OBS, VEC_ACT, n_members=2, seed=0)
    ens._fast = fast
    obs, acts = torch.randn(5, 11), torch.randn(5, 3)
    cases = [
        (lambda: ens.reward(torch.randn(5, 10), acts), r"obs must be \(B, 11\), got \(5, 10\)"),
        (lambda: ens.reward(obs, torch.randn(5, 2)), r"acts must be \(B, 3\), got \(5, 2\)"),
        (lambda: ens.member_rewards(obs[None], acts), r"obs must be \(B, 11\), got \(1, 5, 11\)"),
        (
            lambda: ens.reward(obs, acts[:4]),
            r"obs and acts must share their leading dims \(B\), got obs \(5, 11\) and acts \(4, 3\)",
        ),
        (
            lambda: ens.segment_returns(torch.randn(2, 4, 10), torch.randn(2, 4, 3)),
            r"obs must be \(N, L, 11\), got \(2, 4, 10\)",
        ),
        (
            lambda: ens.segment_returns(torch.randn(2, 4, 11), torch.randn(2, 4, 1)),
            r"acts must be \(N, L, 3\), got \(2, 4, 1\)",
        ),
        (
            lambda: ens.segment_returns(torch.randn(3, 2, 4, 11), torch.randn(3, 2, 4, 3), True),
            r"obs must be \(K, N, L, 11\) with K=2 \(the members\), got \(3, 2, 4, 11\)",
        ),
        (
            lambda: ens.update_normalization(torch.randn(5, 3), acts),
            r"obs must be \(B, 11\), got \(5, 3\)",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=f"^{message}$"):
            call()
    # The documented input is a tensor: a numpy array is refused, not met with AttributeError.
    with pytest.raises(TypeError, match=r"^obs must be a torch\.Tensor, got numpy\.ndarray"):
        ens.reward(obs.numpy(), acts)
    with pytest.raises(TypeError, match=r"^acts must be a torch\.Tensor, got numpy\.ndarray"):
        ens.segment_returns(obs[None], acts[None].numpy())


def test_actions_may_also_come_flattened_as_sb3_buffers_hold_them():
    """Discrete actions ``(B,)`` or ``(B, 1)`` (SB3's rollout buffer), Box ones of shape
    ``(2, 3)`` also as ``(B, 6)``; each gives the same rewards."""
    discrete = RewardEnsemble(VEC_OBS, gym.spaces.Discrete(4), n_members=2, seed=0)
    obs, acts = torch.randn(5, 11), torch.randint(0, 4, (5,))
    torch.testing.assert_close(discrete.reward(obs, acts[:, None]), discrete.reward(obs, acts))
    with pytest.raises(ValueError, match=r"^acts must be \(B,\) or \(B, 1\), got \(5, 4\)$"):
        discrete.reward(obs, torch.zeros(5, 4))
    box = RewardEnsemble(VEC_OBS, gym.spaces.Box(-1, 1, (2, 3)), n_members=2, seed=0)
    acts = torch.randn(5, 2, 3)
    torch.testing.assert_close(box.reward(obs, acts.reshape(5, 6)), box.reward(obs, acts))
    with pytest.raises(
        ValueError, match=r"^acts must be \(B, 2, 3\) or \(B, 6\), got \(5, 3, 2\)$"
    ):
        box.reward(obs, acts.reshape(5, 3, 2))
