"""Planning in the VPN's latent space: top-b expansion and the mixed value backup.

With branching ``(b_1, ..., b_D)`` (e.g. ``4,4,4,1,1``, so ``D = 5``) the planner expands
the root's options, keeps at depth ``i`` the ``b_i`` options of each node with the highest
one-step estimate ``r + gamma^t V(s')``, and recurses on the kept children. It then backs
values up from the leaves (paper, eq. 1, as in its official code):

    U_1(s) = V(s)
    U_k(s) = V(s) / k + (k - 1) / k * max_{o kept} [ r(s, o) + gamma^t(s, o) * U_{k-1}(s') ]

and scores each root option by ``Q(s, o) = r + gamma^t * U_D(s')``. Options pruned at the
root get ``-inf``. The planning value of ``s`` is ``max_o Q(s, o)``.

Every node of one depth goes through the model in a single batched ``expand`` call, so a
plan costs ``D`` forward passes whatever the batch size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import torch

from agents.vpn.modules import Expansion
from rlkit.core.errors import UserError


class LatentModel(Protocol):
    """What the planner needs: ``num_options`` and ``expand(states (M, *S)) -> Expansion``."""

    num_options: int

    def expand(self, state: torch.Tensor) -> Expansion:
        """Every option's predictions from abstract states ``(M, *S)``."""
        ...


class Plan(NamedTuple):
    """A plan for ``N`` root states.

    Attributes:
        q: ``(N, O)`` planned option values, ``-inf`` for options pruned at the root.
        value: ``(N,)`` planning value ``max_o q``.
        option: ``(N,)`` the greedy option ``argmax_o q``.
    """

    q: torch.Tensor
    value: torch.Tensor
    option: torch.Tensor


MAX_PLAN_LEAVES = 100_000
"""The most paths a plan may expand per decision (the product of its branching factors)."""


def parse_branching(text: str | Sequence[int], num_options: int | None = None) -> tuple[int, ...]:
    """``"4,4,4,1,1"`` -> ``(4, 4, 4, 1, 1)``; UserError for anything but positive integers.

    A branching factor above ``num_options`` is clipped to it (as in the official code).
    """
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",")] if text.strip() else []
        try:
            values = [int(p) for p in parts]  # an empty part ("4,,4") is no integer either
        except ValueError:
            raise UserError(
                f"--plan must be comma-separated integers like 4,4,4,1,1, got {text!r}"
            ) from None
    else:
        values = [int(v) for v in text]
    if not values or any(v < 1 for v in values):
        raise UserError(f"--plan needs one or more branching factors >= 1, got {text!r}")
    if num_options is not None:
        values = [min(v, num_options) for v in values]
    leaves = math.prod(values)
    if leaves > MAX_PLAN_LEAVES:
        raise UserError(
            f"--plan {','.join(map(str, values))} expands {leaves:,} paths per decision (more than"
            f" {MAX_PLAN_LEAVES:,}: hours per step); the paper's deepest is 4,4,4,1,1 (64)"
        )
    return tuple(values)


def plan(model: LatentModel, state: torch.Tensor, branching: Sequence[int]) -> Plan:
    """Plan from abstract states ``state (N, *S)`` with per-depth branching ``branching``."""
    n, o = state.shape[0], model.num_options
    rewards, discounts, values, kept = [], [], [], []
    nodes = state
    for b in branching:
        exp = model.expand(nodes)  # fields (M, O) and (M, O, *S)
        one_step = exp.reward + exp.discount * exp.value
        idx = one_step.topk(min(b, o), dim=1).indices  # (M, b)
        rewards.append(exp.reward.gather(1, idx))
        discounts.append(exp.discount.gather(1, idx))
        values.append(exp.value.gather(1, idx))
        kept.append(idx)
        rows = torch.arange(len(nodes), device=state.device).unsqueeze(1)
        nodes = exp.next_state[rows, idx].flatten(0, 1)  # (M * b, *S)
    # Backup from the deepest kept children (U_1 = V) to the root's children (U_D).
    depth = len(branching)
    u = values[-1]  # U_1 of the deepest children, (M_last, b_last)
    for i in range(depth - 1, 0, -1):
        q = rewards[i] + discounts[i] * u  # (M_i, b_i): options of the depth-i nodes
        k = depth - i + 1  # the depth-i nodes are children at depth i-1, holding U_k
        best = q.max(dim=1).values.view(values[i - 1].shape)
        u = values[i - 1] / k + (k - 1) / k * best
    q_kept = rewards[0] + discounts[0] * u  # (N, b_0)
    q_root = torch.full((n, o), float("-inf"), dtype=q_kept.dtype, device=state.device)
    q_root.scatter_(1, kept[0], q_kept)
    value, option = q_root.max(dim=1)
    return Plan(q=q_root, value=value, option=option)
