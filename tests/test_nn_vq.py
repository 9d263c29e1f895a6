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
