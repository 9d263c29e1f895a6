"""The Bradley-Terry preference model over segment returns, with a random-response term.

Christiano et al. (2017), eq. (1): P[s1 > s2] = exp(sum r(s1)) / (exp(sum r(s1)) + exp(sum r(s2))),
which is ``sigmoid(R1 - R2)`` for undiscounted segment returns R. Section 2.2.3 assumes the
human answers uniformly at random 10% of the time, so the modelled probability is
``(1 - eps) * sigmoid(R1 - R2) + eps / 2`` with ``eps = 0.1``. The loss is the cross-entropy
between this prediction and the label distribution mu.
"""

from __future__ import annotations

import torch

RANDOM_RESPONSE = 0.1


def preference_probs(
    returns_a: torch.Tensor, returns_b: torch.Tensor, random_response: float = RANDOM_RESPONSE
) -> torch.Tensor:
    """P[a preferred over b], elementwise over any shape (e.g. ``(K, N)``)."""
    return (1.0 - random_response) * torch.sigmoid(returns_a - returns_b) + random_response / 2


def preference_loss(
    returns_a: torch.Tensor,
    returns_b: torch.Tensor,
    mu_a: torch.Tensor,
    random_response: float = RANDOM_RESPONSE,
) -> torch.Tensor:
    """Cross-entropy ``-(mu_a log P + (1 - mu_a) log(1 - P))``, elementwise (not reduced).

    Written in log space so that large return gaps do not produce ``log(0)``:
    ``log P = log((1 - eps) * sigmoid(d) + eps / 2)`` via logaddexp.
    """
    d = returns_a - returns_b
    eps = random_response
    if eps > 0:
        log_eps_half = torch.log(torch.tensor(eps / 2, dtype=d.dtype, device=d.device))
        log_keep = torch.log(torch.tensor(1.0 - eps, dtype=d.dtype, device=d.device))
        log_p_a = torch.logaddexp(log_keep + torch.nn.functional.logsigmoid(d), log_eps_half)
        log_p_b = torch.logaddexp(log_keep + torch.nn.functional.logsigmoid(-d), log_eps_half)
    else:
        log_p_a = torch.nn.functional.logsigmoid(d)
        log_p_b = torch.nn.functional.logsigmoid(-d)
    return -(mu_a * log_p_a + (1.0 - mu_a) * log_p_b)
