"""The VPN planner: backup against hand-computed trees, top-b expansion, batched == recursive."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.vpn.modules import Expansion, VPNetwork
from agents.vpn.planner import parse_branching, plan
from rlkit.core.errors import UserError


class TableModel:
    """A latent model whose states are node ids ``(M, 1)``; child of node ``i`` by option ``o``
    is ``i * O + o + 1``. ``edges[(node, option)] = (reward, discount, value of child)``."""

    def __init__(
        self, num_options: int, edges: dict[tuple[int, int], tuple[float, float, float]]
    ) -> None:
        self.num_options, self.edges = num_options, edges
        self.expanded: list[int] = []

    def expand(self, state: torch.Tensor) -> Expansion:
        self.expanded.append(len(state))
        ids = state[:, 0].long().tolist()
        o = self.num_options
        table = torch.tensor(
            [[self.edges.get((i, k), (0.0, 1.0, 0.0)) for k in range(o)] for i in ids]
        )
        children = torch.tensor([[[i * o + k + 1.0]] for i in ids for k in range(o)]).view(
            len(ids), o, 1
        )
        return Expansion(
            reward=table[..., 0], duration=torch.ones(len(ids), o), discount=table[..., 1],
            value=table[..., 2], next_state=children,
        )  # fmt: skip


TREE = {
    (0, 0): (1.0, 0.5, 2.0),  # root -> node 1
    (0, 1): (0.0, 0.9, 1.0),  # root -> node 2
    (1, 0): (0.5, 0.5, 4.0),  # node 1 -> 3
    (1, 1): (-1.0, 1.0, 0.0),  # node 1 -> 4
    (2, 0): (3.0, 0.5, 2.0),  # node 2 -> 5
    (2, 1): (0.0, 0.8, 1.0),  # node 2 -> 6
}


def test_depth_two_backup_matches_hand_computation() -> None:
    # U_2(1) = V(1)/2 + 1/2 max(0.5 + 0.5*4, -1 + 1*0) = 1 + 1.25 = 2.25
    # U_2(2) = V(2)/2 + 1/2 max(3 + 0.5*2, 0 + 0.8*1) = 0.5 + 2 = 2.5
    # Q(root) = (1 + 0.5 * 2.25, 0 + 0.9 * 2.5) = (2.125, 2.25)
    result = plan(TableModel(2, TREE), torch.zeros(1, 1), (2, 2))
    assert result.q[0].tolist() == pytest.approx([2.125, 2.25])
    assert result.value.item() == pytest.approx(2.25) and result.option.item() == 1


def test_top_b_pruning_at_the_root_changes_the_decision() -> None:
    # One-step estimates at the root: o0: 1 + 0.5*2 = 2.0, o1: 0 + 0.9*1 = 0.9 -> keep o0 only.
    result = plan(TableModel(2, TREE), torch.zeros(1, 1), (1, 2))
    assert result.q[0, 0].item() == pytest.approx(2.125)
    assert result.q[0, 1].item() == float("-inf")
    assert result.option.item() == 0


def test_top_b_pruning_inside_the_tree_uses_one_step_estimates() -> None:
    # At node 1 keep only the best one-step option: o0 (2.5 > -1). Put a large value behind
    # node 1's pruned option deeper down: it must not count.
    edges = dict(TREE)
    edges[(4, 0)] = (100.0, 1.0, 100.0)
    edges[(4, 1)] = (100.0, 1.0, 100.0)
    pruned = plan(TableModel(2, edges), torch.zeros(1, 1), (2, 1, 1))
    full = plan(TableModel(2, edges), torch.zeros(1, 1), (2, 2, 1))
    assert pruned.q[0, 0] < full.q[0, 0]


def test_depth_three_chain_weights_values_by_one_over_k() -> None:
    edges = {(0, 0): (1.0, 0.5, 3.0), (1, 0): (2.0, 0.5, 6.0), (2, 0): (3.0, 0.5, 9.0)}
    # U_1(s3) = 9; U_2(s2) = 6/2 + 1/2 (3 + 0.5*9) = 6.75
    # U_3(s1) = 3/3 + 2/3 (2 + 0.5*6.75) = 1 + 2/3 * 5.375; Q = 1 + 0.5 * U_3(s1)
    result = plan(TableModel(1, edges), torch.zeros(1, 1), (1, 1, 1))
    assert result.q.item() == pytest.approx(1 + 0.5 * (1 + 2 / 3 * 5.375))


def test_each_depth_is_one_batched_expansion() -> None:
    model = TableModel(4, {})
    plan(model, torch.zeros(3, 1), (4, 4, 4, 1, 1))
    # 3 roots; 4, 4, 4 children kept per node; then 1 kept per node.
    assert model.expanded == [3, 12, 48, 192, 192]


def recursive_q(net: VPNetwork, state: torch.Tensor, branching: tuple[int, ...]) -> torch.Tensor:
    """The naive reference: plan one root ``(1, C, H, W)`` by explicit recursion, -> ``(O,)``."""
    exp = net.expand(state)
    one_step = (exp.reward + exp.discount * exp.value)[0]
    q = torch.full((net.num_options,), float("-inf"))
    for o in one_step.topk(branching[0]).indices.tolist():
        u = value_of(net, exp.next_state[0, o : o + 1], exp.value[0, o], branching[1:])
        q[o] = exp.reward[0, o] + exp.discount[0, o] * u
    return q


def value_of(
    net: VPNetwork, state: torch.Tensor, v: torch.Tensor, rest: tuple[int, ...]
) -> torch.Tensor:
    """``U_k(s)`` with ``k = len(rest) + 1``: the value mixed with the best deeper plan."""
    if not rest:
        return v
    k = len(rest) + 1
    return v / k + (k - 1) / k * recursive_q(net, state, rest).max()


@pytest.mark.parametrize("branching", [(4,), (2, 3), (4, 4, 4), (4, 4, 4, 1, 1), (3, 1, 2)])
def test_batched_planner_equals_naive_recursion(branching: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    space = gym.spaces.Box(0.0, 1.0, (10, 10, 4), dtype=np.float32)
    net = VPNetwork(space, 4, gamma=0.98, channels=8, hidden=16)
    obs = torch.rand(3, 10, 10, 4)
    with torch.no_grad():
        states = net.encode(obs)
        batched = plan(net, states, branching)
        for i in range(len(obs)):
            reference = recursive_q(net, states[i : i + 1], branching)
            assert torch.equal(torch.isinf(reference), torch.isinf(batched.q[i]))
            finite = ~torch.isinf(reference)
            torch.testing.assert_close(
                batched.q[i][finite], reference[finite], rtol=1e-5, atol=1e-5
            )
        assert (torch.isfinite(batched.q).sum(dim=1) == branching[0]).all()


def test_parse_branching() -> None:
    assert parse_branching("4,4,4,1,1") == (4, 4, 4, 1, 1)
    assert parse_branching("8,2", num_options=4) == (4, 2)
    for bad in ("", "4,x", "4,0", "-1"):
        with pytest.raises(UserError):
            parse_branching(bad)
