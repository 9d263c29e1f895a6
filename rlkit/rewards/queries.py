"""Choosing which pairs of segments to ask about (Christiano et al. 2017, sec. 2.2.4).

``disagreement`` (the paper's default) samples many more candidate pairs than needed
(``oversample`` times, ~10x) and keeps those whose predicted preference varies most across
ensemble members. ``entropy`` keeps the pairs whose ensemble-mean prediction is closest to
a coin flip; ``uniform`` keeps random pairs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np
import torch

from rlkit.core.buffers import SegmentPool
from rlkit.core.types import Segment
from rlkit.rewards.ensemble import RewardEnsemble
from rlkit.rewards.preference import preference_probs

QueryStrategy = Literal["disagreement", "uniform", "entropy"]
STRATEGIES: tuple[str, ...] = ("disagreement", "uniform", "entropy")
#: The most candidate pairs :func:`select_queries` draws at once.
MAX_DRAWS = 1 << 20


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
    exclude: Iterable[tuple[int, int]] = (),
) -> list[tuple[int, int, float]]:
    """``n`` pairs ``(segment_a, segment_b, score)`` from the pool, best score first.

    Pairs are distinct as unordered pairs, and none is in ``exclude``; fewer than ``n`` come
    back only if the pool cannot form that many (``min(n, pairs possible)`` always).

    Args:
        ensemble: scores the candidates (``disagreement``, ``entropy``).
        pool: the segments to pair.
        n: how many pairs to return.
        strategy: one of :data:`STRATEGIES`.
        rng: draws the candidates (and, for ``uniform``, the pairs themselves).
        oversample: candidates per pair returned, for the scored strategies.
        exclude: ``(segment_a, segment_b)`` pairs never to return, in either order (the
            pairs already asked in earlier rounds).

    Raises:
        ValueError: an unknown ``strategy``, or an ``exclude`` item that is not a pair.
    """
    if strategy not in STRATEGIES:
        raise ValueError(
            f"unknown query strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    excluded = _pair_keys(exclude)
    if n <= 0 or len(pool) < 2:
        return []
    n_candidates = n if strategy == "uniform" else n * max(1, oversample)
    cands = _candidate_pairs(pool, n_candidates, excluded, rng)
    if not cands:
        return []
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


def _pair_keys(pairs: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
    """``pairs`` as order-insensitive keys ``(low id, high id)``."""
    keys: set[tuple[int, int]] = set()
    for pair in pairs:
        try:
            a, b = (int(x) for x in pair)
        except (TypeError, ValueError):
            raise ValueError(
                f"exclude must hold (segment_a, segment_b) pairs of ids, got {pair!r}"
            ) from None
        keys.add((min(a, b), max(a, b)))
    return keys


def _candidate_pairs(
    pool: SegmentPool, n: int, excluded: set[tuple[int, int]], rng: np.random.Generator
) -> list[tuple[int, int]]:
    """``min(n, pairs possible)`` random pairs of the pool, distinct as unordered pairs and
    none in ``excluded``: each a uniformly random one of the pairs left, in a random
    orientation.

    ``2 n`` pairs are drawn (more in proportion where some are excluded) and repeats
    skipped. If that left some missing, more are drawn, twice as many as missing, while
    many pairs are left to draw from; once few are (at most twice as many as missing), the
    draws could take long to hit them, so the pairs left are listed and a random subset
    taken, which gives them the same chances.
    """
    ids = [int(i) for i in pool.ids()]
    members = set(ids)
    total = len(ids) * (len(ids) - 1) // 2
    possible = total - sum(a != b and a in members and b in members for a, b in excluded)
    want = min(n, possible)
    seen = set(excluded)
    cands: list[tuple[int, int]] = []
    draws = 2 * n
    while len(cands) < want:
        missing, left = want - len(cands), possible - len(cands)
        if cands and left <= 2 * missing:
            rest = [p for p in itertools.combinations(ids, 2) if (min(p), max(p)) not in seen]
            order = rng.permutation(len(rest))[:missing]
            flip = rng.integers(0, 2, size=missing).astype(bool)
            cands += [rest[i][::-1] if f else rest[i] for i, f in zip(order, flip, strict=True)]
            break
        # More draws where most would hit excluded or taken pairs (none excluded: 2 n first).
        for a, b in pool.sample_pairs(min(math.ceil(draws * total / left), MAX_DRAWS), rng):
            key = (min(a, b), max(a, b))
            if key not in seen:
                seen.add(key)
                cands.append((a, b))
            if len(cands) == want:
                break
        draws = 2 * (want - len(cands))
    return cands
