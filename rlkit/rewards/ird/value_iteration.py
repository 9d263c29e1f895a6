"""Vectorized finite-horizon value iteration over thousands of linear rewards at once.

Every reward vector ``w`` (a row of ``weights``, shape ``(N, d)``) defines per-state rewards
``r = w^T phi(s)``, earned on entering ``s``. The transition structure is shared, so one
backward pass handles the whole batch as ``(N, S)`` tensors; rewards are processed in chunks
to bound memory (a chunk keeps ``(T, chunk, S)`` float32 values).

Finite horizon ``T``: ``V_T = 0`` and ``V_t(s) = max_a [r(s') + V_{t+1}(s')]`` with
``s' = next(s, a)``. The greedy policy is deterministic (ties go to the lowest action
index), and so are the dynamics, so a policy's expected feature counts are the feature sums
along its single path and sum (for one-hot features) to exactly ``T``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from rlkit.rewards.ird.mdp import TabularMDP


@dataclasses.dataclass(frozen=True)
class Plans:
    """Optimal plans for a batch of ``N`` reward vectors.

    Attributes:
        feature_counts: expected feature counts of each optimal policy from the start state,
            shape ``(N, d)``, float64.
        values: optimal return ``w^T feature_counts`` of each, shape ``(N,)``, float64.
        paths: states visited, start first, shape ``(N, T + 1)``, int64; or None.
        policies: greedy action per (reward, time, state), shape ``(N, T, S)``, uint8; or None.
    """

    feature_counts: np.ndarray
    values: np.ndarray
    paths: np.ndarray | None = None
    policies: np.ndarray | None = None


def _as_weights(weights: np.ndarray | torch.Tensor, d: int) -> torch.Tensor:
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[1] != d:
        raise ValueError(f"weights must have shape (N, {d}), got {tuple(w.shape)}")
    return w


def _max_backup(u: torch.Tensor, columns: list[torch.Tensor]) -> torch.Tensor:
    """``max_a u[:, next(s, a)]`` per state, shape ``(n, S)``.

    One gather per action and an elementwise maximum, instead of an ``(n, S, A)`` tensor and
    ``max(dim=2)`` with its argmax bookkeeping: several times faster on CPU.
    """
    best = u.index_select(1, columns[0])
    for col in columns[1:]:
        best = torch.maximum(best, u.index_select(1, col))
    return best


def value_iteration(
    mdp: TabularMDP,
    weights: np.ndarray,
    *,
    return_paths: bool = False,
    return_policies: bool = False,
    chunk: int = 512,
) -> Plans:
    """Solve ``mdp`` for every reward vector in ``weights`` (shape ``(N, d)`` or ``(d,)``).

    The backward pass keeps ``U_t = r + V_{t+1}`` (the value of entering each state at step
    ``t + 1``, ``(T, chunk, S)`` float32) rather than a policy table; the forward pass then
    takes the argmax only at the states the plans visit.
    """
    feats = torch.as_tensor(np.asarray(mdp.features, dtype=np.float64))
    w_all = _as_weights(weights, feats.shape[1])
    nxt = torch.as_tensor(np.asarray(mdp.next_state, dtype=np.int64))
    s_count, horizon = nxt.shape[0], int(mdp.horizon)
    feats32 = feats.to(torch.float32)
    columns = [nxt[:, a].contiguous() for a in range(nxt.shape[1])]
    counts, paths, policies = [], [], []
    with torch.no_grad():
        for lo in range(0, w_all.shape[0], chunk):
            w = w_all[lo : lo + chunk]
            n = w.shape[0]
            reward = w.to(torch.float32) @ feats32.T  # (n, S)
            entering = torch.empty(horizon, n, s_count)
            entering[horizon - 1] = reward
            for t in range(horizon - 1, 0, -1):
                torch.add(reward, _max_backup(entering[t], columns), out=entering[t - 1])
            state = torch.full((n,), int(mdp.start), dtype=torch.int64)
            path = torch.empty(n, horizon + 1, dtype=torch.int64)
            path[:, 0] = state
            rows = torch.arange(n)[:, None]
            for t in range(horizon):
                succ = nxt[state]  # (n, A)
                best = entering[t][rows, succ].argmax(dim=1, keepdim=True)  # first max on ties
                state = succ.gather(1, best)[:, 0]
                path[:, t + 1] = state
            counts.append(feats[path[:, 1:]].sum(dim=1))
            if return_paths:
                paths.append(path)
            if return_policies:
                policies.append(entering[:, :, nxt].argmax(dim=3).permute(1, 0, 2).to(torch.uint8))
    fc = torch.cat(counts).numpy()
    return Plans(
        feature_counts=fc,
        values=np.einsum("nd,nd->n", fc, w_all.numpy()),
        paths=torch.cat(paths).numpy() if return_paths else None,
        policies=torch.cat(policies).numpy() if return_policies else None,
    )


def log_partition(
    mdp: TabularMDP, weights: np.ndarray, beta: float, *, chunk: int = 2048
) -> np.ndarray:
    """Maximum-entropy IRL partition function ``log sum_xi exp(beta w^T phi(xi))``, shape ``(N,)``.

    The sum runs over every length-``T`` action sequence ``xi`` from the start state; soft
    value iteration computes it exactly (``V_t(s) = logsumexp_a [beta r(s') + V_{t+1}(s')]``,
    ``log Z = V_0(start)``), in float64.
    """
    feats = torch.as_tensor(np.asarray(mdp.features, dtype=np.float64))
    w_all = _as_weights(weights, feats.shape[1])
    nxt = torch.as_tensor(np.asarray(mdp.next_state, dtype=np.int64))
    columns = [nxt[:, a].contiguous() for a in range(nxt.shape[1])]
    out = []
    with torch.no_grad():
        for lo in range(0, w_all.shape[0], chunk):
            reward = beta * (w_all[lo : lo + chunk] @ feats.T)
            value = torch.zeros_like(reward)
            for _ in range(int(mdp.horizon)):
                u = reward + value
                top = _max_backup(u, columns)
                total = torch.zeros_like(top)
                for col in columns:
                    total += torch.exp(u.index_select(1, col) - top)
                value = top + torch.log(total)
            out.append(value[:, int(mdp.start)])
    return torch.cat(out).numpy()
