"""Choosing which pairs of segments to ask about (Christiano et al. 2017, sec. 2.2.4).

``disagreement`` (the paper's default) samples many more candidate pairs than needed
(``oversample`` times, ~10x) and keeps those whose predicted preference varies most across
ensemble members. ``entropy`` keeps the pairs whose ensemble-mean prediction is closest to
a coin flip; ``uniform`` keeps random pairs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch

from rlkit.core.buffers import SegmentPool
from rlkit.core.types import Segment
from rlkit.rewards.ensemble import RewardEnsemble
from rlkit.rewards.preference import preference_probs

QueryStrategy = Literal["disagreement", "uniform", "entropy"]
STRATEGIES: tuple[str, ...] = ("disagreement", "uniform", "entropy")


@torch.no_grad()
def member_segment_returns(
    ensemble: RewardEnsemble, segments: Mapping[int, Segment], ids: np.ndarray, chunk: int = 64
) -> np.ndarray:
    """Predicted returns ``(K, len(ids))`` of the given segments (eval mode), in chunks to bound
    memory. The ensemble's mode flag is left alone: a background thread may be training it."""
    out = []
    for start in range(0, len(ids), chunk):
        segs = [segments[int(i)] for i in ids[start : start + chunk]]
        obs = torch.as_tensor(np.stack([s.obs for s in segs]))
        acts = torch.as_tensor(np.stack([s.acts for s in segs]))
        out.append(ensemble.segment_returns(obs, acts, train=False).numpy())
    return np.concatenate(out, axis=1)


def pair_scores(returns_a: np.ndarray, returns_b: np.ndarray, strategy: str) -> np.ndarray:
    """Score ``(N,)`` of each pair from member returns ``(K, N)``: higher is asked first."""
    p = preference_probs(torch.as_tensor(returns_a), torch.as_tensor(returns_b), 0.0).numpy()
    if strategy == "disagreement":
        return p.var(axis=0)
    if strategy == "entropy":
        m = np.clip(p.mean(axis=0), 1e-12, 1 - 1e-12)
        return -(m * np.log(m) + (1 - m) * np.log(1 - m))
    raise ValueError(f"no score for strategy {strategy!r}")


def select_queries(
    ensemble: RewardEnsemble,
    pool: SegmentPool,
    n: int,
    strategy: str,
    rng: np.random.Generator,
    oversample: int = 10,
) -> list[tuple[int, int, float]]:
    """``n`` pairs ``(segment_a, segment_b, score)`` from the pool, best score first.

    Pairs are distinct as unordered pairs; fewer than ``n`` come back only if the pool
    cannot form that many.
    """
    if strategy not in STRATEGIES:
        raise ValueError(
            f"unknown query strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    if n <= 0:
        return []
    n_candidates = n if strategy == "uniform" else n * max(1, oversample)
    seen: set[tuple[int, int]] = set()
    cands: list[tuple[int, int]] = []
    for a, b in pool.sample_pairs(n_candidates * 2, rng):
        key = (min(a, b), max(a, b))
        if key not in seen:
            seen.add(key)
            cands.append((a, b))
        if len(cands) == n_candidates:
            break
    if strategy == "uniform":
        return [(a, b, 0.0) for a, b in cands[:n]]
    ids = np.unique(np.array(cands).reshape(-1))
    returns = member_segment_returns(ensemble, pool, ids)
    col = {int(i): j for j, i in enumerate(ids)}
    ia = np.array([col[a] for a, _ in cands])
    ib = np.array([col[b] for _, b in cands])
    scores = pair_scores(returns[:, ia], returns[:, ib], strategy)
    order = np.argsort(-scores, kind="stable")[:n]
    return [(cands[i][0], cands[i][1], float(scores[i])) for i in order]
