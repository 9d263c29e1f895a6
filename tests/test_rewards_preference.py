import math

import torch

from rlkit.rewards.preference import preference_loss, preference_probs


def test_probability_matches_the_papers_formula_with_random_response():
    ra, rb = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 3.0])
    expected = [
        0.9 * math.exp(2.0) / (math.exp(2.0) + math.exp(0.5)) + 0.05,
        0.9 * math.exp(-1.0) / (math.exp(-1.0) + math.exp(3.0)) + 0.05,
    ]
    torch.testing.assert_close(preference_probs(ra, rb), torch.tensor(expected), atol=1e-7, rtol=0)
    # without the noise term it is the plain Bradley-Terry model
    torch.testing.assert_close(preference_probs(ra, rb, 0.0), torch.sigmoid(ra - rb))


def test_loss_is_cross_entropy_against_mu():
    ra, rb = torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0.0, 0.0, 0.0])
    mu = torch.tensor([1.0, 0.0, 0.5])
    p = 0.9 / (1 + math.exp(-1.0)) + 0.05
    expected = torch.tensor(
        [-math.log(p), -math.log(1 - p), -0.5 * (math.log(p) + math.log(1 - p))]
    )
    torch.testing.assert_close(preference_loss(ra, rb, mu), expected, atol=1e-6, rtol=0)


def test_noise_term_bounds_the_loss_for_huge_gaps():
    # A confidently wrong prediction costs at most -log(0.05) thanks to the 10% random term.
    loss = preference_loss(torch.tensor([1000.0]), torch.tensor([0.0]), torch.tensor([0.0]))
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss, torch.tensor([-math.log(0.05)]), atol=1e-5, rtol=0)
