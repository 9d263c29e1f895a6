"""VQ bottleneck: nearest-code forward, straight-through gradient, the codebook moving toward its
assigned encodings (loss and EMA), and dead-code reporting."""

import gymnasium as gym
import pytest
import torch

from rlkit.nn import make_backbone
from rlkit.nn.vq import VectorQuantizer


def _encodings_near(vq: VectorQuantizer, codes: list[int], n: int, seed: int = 0) -> torch.Tensor:
    """``n`` encodings per listed code, each within 0.05 of it: ``(n * len(codes), D)``."""
    g = torch.Generator().manual_seed(seed)
    centers = vq.codebook.detach()[codes].repeat_interleave(n, dim=0)
    return centers + 0.05 * torch.randn(centers.shape, generator=g)


def test_forward_gives_nearest_codes_and_gradient_passes_straight_through():
    vq = VectorQuantizer(num_codes=16, code_dim=4, seed=0)
    z_e = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    z_q = vq(z_e)
    dist = torch.cdist(z_e.detach().reshape(-1, 4), vq.codebook.detach())
    torch.testing.assert_close(vq.last_indices.flatten(), dist.argmin(1))
    torch.testing.assert_close(z_q, vq.codebook.detach()[vq.last_indices])
    upstream = torch.randn(z_q.shape, generator=torch.Generator().manual_seed(2))
    (grad,) = torch.autograd.grad((upstream * z_q).sum(), z_e)
    torch.testing.assert_close(grad, upstream)  # identity in the backward pass, exactly


def test_codebook_loss_trains_codes_commitment_trains_encoder():
    vq = VectorQuantizer(num_codes=8, code_dim=3, beta=0.25, seed=0)
    z_e = torch.randn(20, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    vq(z_e)
    idx = vq.last_indices
    loss = vq.aux_loss()
    g_code, g_enc = torch.autograd.grad(loss, [vq.codebook, z_e])
    codes = vq.codebook.detach()
    n = z_e.numel()
    # d/d e_k of mean ||sg(z_e) - e_k||^2 = 2/n * sum_{j assigned k} (e_k - z_j)
    expected_code = torch.zeros_like(codes).index_add_(0, idx, 2 / n * (codes[idx] - z_e.detach()))
    torch.testing.assert_close(g_code, expected_code)
    torch.testing.assert_close(g_enc, 0.25 * 2 / n * (z_e.detach() - codes[idx]))


def test_codebook_moves_toward_assigned_encodings_by_gradient():
    vq = VectorQuantizer(num_codes=8, code_dim=4, seed=0)
    z_e = _encodings_near(vq, [1, 5], n=10) + torch.tensor([0.3, 0.0, 0.0, 0.0])
    before = vq.codebook.detach().clone()
    opt = torch.optim.SGD(vq.parameters(), lr=1.0)
    for _ in range(20):
        opt.zero_grad()
        vq(z_e)
        vq.aux_loss().backward()
        opt.step()
    for k, rows in ((1, slice(0, 10)), (5, slice(10, 20))):
        target = z_e[rows].mean(0)
        assert (vq.codebook[k] - target).norm() < 0.5 * (before[k] - target).norm()
    unused = [k for k in range(8) if k not in (1, 5)]
    torch.testing.assert_close(vq.codebook.detach()[unused], before[unused])


def test_ema_codebook_becomes_mean_of_assigned_encodings():
    vq = VectorQuantizer(num_codes=8, code_dim=4, ema=True, decay=0.9, seed=0)
    assert "codebook" not in dict(vq.named_parameters())
    before = vq.codebook.clone()
    z_e = _encodings_near(vq, [2, 6], n=10) + 0.1
    vq.train()(z_e)
    # After one update the ratio of the two EMAs is exactly the mean (Laplace smoothing ~1e-6).
    torch.testing.assert_close(vq.codebook[2], z_e[:10].mean(0), atol=1e-4, rtol=0)
    torch.testing.assert_close(vq.codebook[6], z_e[10:].mean(0), atol=1e-4, rtol=0)
    unused = [k for k in range(8) if k not in (2, 6)]
    torch.testing.assert_close(vq.codebook[unused], before[unused])
    frozen = vq.codebook.clone()
    vq.eval()(z_e + 1.0)
    torch.testing.assert_close(vq.codebook, frozen)  # no update at inference
    assert vq.aux_loss().requires_grad is False  # commitment only; z_e needs no grad here


def test_dead_codes_are_reported():
    vq = VectorQuantizer(num_codes=10, code_dim=3, seed=0)
    vq(_encodings_near(vq, [0, 3, 7], n=4))
    stats = vq.code_stats()
    assert stats["dead_codes"] == 7 and stats["dead_fraction"] == pytest.approx(0.7)
    assert stats["perplexity"] == pytest.approx(3.0)
    assert vq.dead_codes().tolist() == [1, 2, 4, 5, 6, 8, 9]
    vq(_encodings_near(vq, [1], n=4))
    assert vq.code_stats()["dead_codes"] == 6  # usage accumulates until reset
    vq.reset_usage()
    assert vq.code_stats()["dead_codes"] == 10


@pytest.mark.parametrize("ema", [False, True])
def test_vq_backbone_on_vector_and_image_observations(ema: bool):
    torch.manual_seed(0)
    vec = make_backbone("vq", gym.spaces.Box(-1, 1, (6,)), n_latents=4, num_codes=32, code_dim=8,
                        ema=ema, encoder_kwargs={"hidden": (16,)})  # fmt: skip
    assert vec.out_dim == 32
    out = vec(torch.randn(5, 6))
    assert out.shape == (5, 32)
    (out.sum() + vec.aux_loss()).backward()
    assert vec.encoder.net[1].weight.grad.abs().sum() > 0
    assert vec.code_stats()["dead_codes"] <= 32 - 1
    img = make_backbone("vq", gym.spaces.Box(0, 255, (84, 84, 4), dtype="uint8"), ema=ema,
                        encoder_kwargs={"features_dim": 32})  # fmt: skip
    assert type(img.encoder).__name__ == "NatureCNN"
    assert img(torch.randint(0, 255, (2, 84, 84, 4), dtype=torch.uint8)).shape == (2, img.out_dim)
    with pytest.raises(ValueError, match="cannot itself be vq"):
        make_backbone("vq", gym.spaces.Box(-1, 1, (6,)), encoder="vq")


def test_ema_codebooks_update_per_member_under_vmap():
    # The reward ensemble calls backbones through vmap(functional_call): EMA still learns there,
    # and the auxiliary loss (which would escape the transform) is not kept.
    from torch.func import functional_call, stack_module_state, vmap

    torch.manual_seed(0)
    members = [VectorQuantizer(num_codes=6, code_dim=2, ema=True, decay=0.5) for _ in range(2)]
    params, buffers = stack_module_state(members)
    before = buffers["codebook"].clone()
    z_e = torch.randn(2, 30, 2, generator=torch.Generator().manual_seed(1))
    base = VectorQuantizer(num_codes=6, code_dim=2, ema=True, decay=0.5)
    vmap(lambda p, b, z: functional_call(base, (p, b), (z,)))(params, buffers, z_e)
    for k, member in enumerate(members):
        member(z_e[k])
        torch.testing.assert_close(buffers["codebook"][k], member.codebook)
        torch.testing.assert_close(buffers["usage"][k], member.usage)
    assert not torch.allclose(buffers["codebook"], before)
    with pytest.raises(RuntimeError, match="ema=True"):
        base.aux_loss()


# -- codebook collapse remedies: data-dependent initialization and dead-code restarts ----------


def _on_rows(codes: torch.Tensor, batch: torch.Tensor) -> bool:
    """Whether every code is exactly one of the rows of ``batch``."""
    same = (codes.detach()[:, None, :] == batch.detach()[None, :, :]).all(-1)
    return bool(same.any(1).all())


def test_data_init_puts_the_codebook_on_encodings_of_the_first_training_batch():
    torch.manual_seed(0)
    vq = VectorQuantizer(num_codes=16, code_dim=4, data_init=True)
    assert not bool(vq.initialized)
    z_e = 0.01 * torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    vq.eval()(z_e)  # no initialization at inference
    assert not bool(vq.initialized) and not _on_rows(vq.codebook[:1], z_e)
    vq.train()(z_e)
    assert bool(vq.initialized)
    assert _on_rows(vq.codebook, z_e)  # every code is one of the batch's encodings
    assert len(torch.unique(vq.codebook.detach(), dim=0)) == 16  # without replacement
    assert vq.code_stats()["dead_codes"] == 0  # so each code is nearest to (at least) itself
    # It happens once, and a reloaded quantizer does not redo it.
    frozen = vq.codebook.detach().clone()
    vq(z_e + 5.0)
    torch.testing.assert_close(vq.codebook.detach(), frozen)
    fresh = VectorQuantizer(num_codes=16, code_dim=4, data_init=True)
    fresh.load_state_dict(vq.state_dict())
    assert bool(fresh.initialized)
    fresh.train()(z_e + 5.0)
    torch.testing.assert_close(fresh.codebook.detach(), frozen)


def test_data_init_with_ema_starts_from_encodings_then_takes_their_means():
    torch.manual_seed(0)
    vq = VectorQuantizer(num_codes=16, code_dim=4, ema=True, decay=0.9, data_init=True)
    z_e = 0.01 * torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    vq.train()(z_e)
    assert bool(vq.initialized) and vq.code_stats()["dead_codes"] == 0
    # After the first EMA update each code is the mean of the encodings nearest to it, so it
    # lies in their hull: at the encodings' scale (0.01), not the N(0, 1) codebook's.
    idx = vq.last_indices
    for k in range(16):
        torch.testing.assert_close(vq.codebook[k], z_e[idx == k].mean(0), atol=1e-6, rtol=1e-4)
    assert vq.codebook.norm(dim=1).max() < 0.1


def test_checkpoints_from_before_data_init_load_as_initialized():
    old = VectorQuantizer(num_codes=4, code_dim=2, ema=True).state_dict()
    del old["initialized"], old["restarts"]
    vq = VectorQuantizer(num_codes=4, code_dim=2, ema=True, data_init=True)
    vq.load_state_dict(old)
    assert bool(vq.initialized)


def test_data_init_cycles_through_a_batch_smaller_than_the_codebook():
    vq = VectorQuantizer(num_codes=8, code_dim=2, data_init=True)
    z_e = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    vq.train()(z_e)
    assert _on_rows(vq.codebook, z_e)
    assert len(torch.unique(vq.codebook.detach(), dim=0)) == 3  # each encoding used


def _codes_used_after_training(fix: bool, seed: int = 0, steps: int = 20) -> int:
    """A vq backbone whose encoder outputs (sd ~0.05) are tiny next to the N(0, 1) codebook
    (norm ~2.8), trained ``steps`` Adam steps on a regression; codes used on 1024 inputs."""
    torch.manual_seed(seed)
    off = {} if fix else {"data_init": False, "restart_threshold": 0.0}
    net = make_backbone("vq", gym.spaces.Box(-1, 1, (10,)), n_latents=2, num_codes=64,
                        code_dim=8, ema=True, encoder_kwargs={"hidden": (32,)}, **off)  # fmt: skip
    with torch.no_grad():
        net.project.weight.mul_(0.01)
        net.project.bias.zero_()
    head = torch.nn.Linear(net.out_dim, 1)
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(10, generator=g)
    for _ in range(steps):
        x = 2 * torch.rand(256, 10, generator=g) - 1
        loss = (head(net(x)).squeeze(-1) - x @ w).pow(2).mean() + net.aux_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert net.encode(x).std() < 0.1  # tiny encodings
    net.eval()
    net.reset_usage()
    net(2 * torch.rand(1024, 10, generator=g) - 1)
    return 64 - int(net.code_stats()["dead_codes"])


def test_tiny_encodings_collapse_the_random_codebook_but_not_the_fixed_one():
    with_fix = _codes_used_after_training(fix=True)
    without = _codes_used_after_training(fix=False)
    assert with_fix > 40, with_fix  # most of the 64 codes
    assert without <= 4, without  # the N(0, 1) codebook: nearly every encoding on one code


@pytest.mark.parametrize("restart", [True, False])
def test_dead_code_is_restarted_to_an_encoding_of_the_batch(restart: bool):
    vq = VectorQuantizer(num_codes=8, code_dim=2, ema=True, decay=0.9,
                         restart_threshold=0.1 if restart else 0.0, seed=0)  # fmt: skip
    # Codes 5 and 6 have had (almost) no assignments; the others 10 per batch.
    counts = torch.full((8,), 10.0)
    counts[5], counts[6] = 0.0, 0.05
    vq.ema_count.copy_(counts)
    vq.ema_sum.copy_(vq.codebook * counts[:, None])
    before = vq.codebook.clone()
    # Two encodings far from every code.
    x1, x2 = torch.tensor([20.0, 0.0]), torch.tensor([0.0, -20.0])
    z_e = torch.stack([x1, x2])
    vq.train()(z_e)
    if not restart:  # x1 and x2 go to live codes; the dead ones stay where they were
        torch.testing.assert_close(vq.codebook[[5, 6]], before[[5, 6]], atol=1e-3, rtol=0)
        assert vq.code_stats()["restarts"] == 0
        return
    live = [0, 1, 2, 3, 4, 7]
    torch.testing.assert_close(vq.codebook[live], before[live])  # not restarted, not assigned
    # Each dead code is now one of the batch's encodings (distinct ones), which it then won.
    restarted = sorted(vq.codebook[[5, 6]].tolist())
    torch.testing.assert_close(torch.tensor(restarted), torch.stack([x2, x1]), atol=1e-4, rtol=0)
    assert vq.code_stats()["restarts"] == 2
    vq.reset_usage()
    assert vq.code_stats()["restarts"] == 0


def test_restarts_need_ema():
    with pytest.raises(ValueError, match="ema=True"):
        VectorQuantizer(restart_threshold=0.1)
    assert make_backbone("vq", gym.spaces.Box(-1, 1, (3,))).quantizer.restart_threshold == 0.0
    assert (
        make_backbone("vq", gym.spaces.Box(-1, 1, (3,)), ema=True).quantizer.restart_threshold > 0
    )


@pytest.mark.parametrize("ema", [False, True])
def test_init_and_restarts_run_per_member_under_vmap(ema: bool):
    # As in the reward ensemble: stacked buffers (and parameters) updated in place per member,
    # vmap with randomness="different".
    from torch.func import functional_call, stack_module_state, vmap

    torch.manual_seed(0)
    kwargs = {"num_codes": 6, "code_dim": 2, "ema": ema, "data_init": True,
              "restart_threshold": 0.5 if ema else 0.0}  # fmt: skip
    members = [VectorQuantizer(**kwargs) for _ in range(2)]
    params, buffers = stack_module_state(members)
    base = VectorQuantizer(**kwargs)
    call = vmap(lambda p, b, z: functional_call(base, (p, b), (z,)), randomness="different")
    g = torch.Generator().manual_seed(1)
    z_e = torch.stack([torch.randn(30, 2, generator=g), 10 + torch.randn(30, 2, generator=g)])
    if ema:
        base.ema = False  # look at the initialization before the EMA moves the codes
        call(params, buffers, z_e)
        base.ema = True
    else:
        call(params, buffers, z_e)
    codebook = (buffers if ema else params)["codebook"]
    assert buffers["initialized"].all()
    for k in range(2):
        assert _on_rows(codebook[k], z_e[k])  # member k's own encodings
    frozen = codebook.detach().clone()
    call(params, buffers, z_e)
    if not ema:
        torch.testing.assert_close(codebook.detach(), frozen)  # initialized once
        return
    # Member 1's encodings jump far away: its codes lose their share and restart onto them.
    moved = z_e.clone()
    moved[1] += 100.0
    for _ in range(10):
        call(params, buffers, moved)
    assert buffers["restarts"][1] > 0
    assert torch.cdist(codebook[1], moved[1]).min(1).values.max() < 5.0


@pytest.mark.parametrize("ema", [False, True])
def test_aux_loss_gradients_reach_encoder_and_codes_under_vmap(ema: bool):
    # Under vmap aux_loss() cannot be handed out; with aux_grad_in_transforms its gradients are
    # added in the backward pass: the same as each member's loss + aux_loss() without vmap.
    from torch.func import functional_call, stack_module_state, vmap

    torch.manual_seed(0)
    kwargs = {"num_codes": 6, "code_dim": 3, "ema": ema, "aux_grad_in_transforms": True}
    members = [VectorQuantizer(**kwargs) for _ in range(2)]
    g = torch.Generator().manual_seed(1)
    z_e = torch.randn(2, 5, 4, 3, generator=g, requires_grad=True)
    upstream = torch.randn(2, 5, 4, 3, generator=g)
    expected = []
    for k, member in enumerate(members):
        z = z_e[k].detach().clone().requires_grad_(True)
        loss = (member.eval()(z) * upstream[k]).sum() + member.aux_loss()
        wrt = [z] if ema else [z, member.codebook]
        expected.append(torch.autograd.grad(loss, wrt))
    params, buffers = stack_module_state(members)
    base = VectorQuantizer(**kwargs)  # training mode: EMA updates after the lookup
    out = vmap(lambda p, b, z: functional_call(base, (p, b), (z,)), randomness="different")(
        params, buffers, z_e
    )
    torch.testing.assert_close(out, torch.stack([m(z_e[k]) for k, m in enumerate(members)]))
    wrt = [z_e] if ema else [z_e, params["codebook"]]
    got = torch.autograd.grad((out * upstream).sum(), wrt)
    for k in range(2):
        for a, b in zip(got, expected[k], strict=True):
            torch.testing.assert_close(a[k], b)
    # Without it the encoder gets the straight-through gradient only.
    base.aux_grad_in_transforms = False
    out = vmap(lambda p, b, z: functional_call(base, (p, b), (z,)), randomness="different")(
        params, buffers, z_e
    )
    (plain,) = torch.autograd.grad((out * upstream).sum(), z_e)
    torch.testing.assert_close(plain, upstream)
    assert make_backbone("vq", gym.spaces.Box(-1, 1, (3,))).quantizer.aux_grad_in_transforms
