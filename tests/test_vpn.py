"""VPN modules, returns, sequence replay, save/load and the DQN baseline's option discounts."""

from __future__ import annotations

import io

import gymnasium as gym
import numpy as np
import torch

from agents.vpn.agent import VPNAgent, n_step_returns
from agents.vpn.modules import VPNetwork
from agents.vpn.replay import SequenceReplay

GRID = gym.spaces.Box(0.0, 1.0, (10, 10, 4), dtype=np.float32)


def test_modules_shapes_discount_and_step_equals_expand_slice() -> None:
    torch.manual_seed(0)
    net = VPNetwork(GRID, 4, gamma=0.9, channels=8, hidden=16)
    state = net.encode(torch.rand(3, 10, 10, 4))
    assert state.shape == (3, 8, 5, 5)
    exp = net.expand(state)
    assert exp.reward.shape == exp.duration.shape == exp.value.shape == (3, 4)
    assert exp.next_state.shape == (3, 4, 8, 5, 5)
    assert (exp.duration >= 1).all()
    torch.testing.assert_close(exp.discount, 0.9**exp.duration)
    options = torch.tensor([2, 0, 3])
    one = net.step(state, options)
    rows = torch.arange(3)
    torch.testing.assert_close(one.reward, exp.reward[rows, options])
    torch.testing.assert_close(one.value, exp.value[rows, options])
    torch.testing.assert_close(one.next_state, exp.next_state[rows, options])


def test_transition_is_residual_in_the_abstract_state() -> None:
    torch.manual_seed(0)
    net = VPNetwork(GRID, 4, gamma=0.9, channels=8, hidden=16)
    for p in (net.transition.dec2.weight, net.transition.dec2.bias):
        torch.nn.init.zeros_(p)
    state = net.encode(torch.rand(2, 10, 10, 4))
    # With the update branch silenced, s' = ELU(s), and s >= -1 is already an ELU output.
    torch.testing.assert_close(net.expand(state).next_state[:, 1], torch.nn.functional.elu(state))


def test_n_step_returns_by_hand() -> None:
    rews = torch.tensor([[1.0, 2.0, 3.0], [1.0, 5.0, 0.0]])
    disc = torch.tensor([[0.5, 0.5, 0.5], [0.9, 0.5, 1.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    boot = torch.tensor([8.0, 0.0])
    out = n_step_returns(rews, disc, mask, boot)
    # Row 0: R3 = 8, R2 = 3 + 4 = 7, R1 = 2 + 3.5 = 5.5, R0 = 1 + 2.75 = 3.75.
    # Row 1 ends after 2 options (terminal, bootstrap 0): R1 = 5, R0 = 1 + 4.5 = 5.5.
    torch.testing.assert_close(out, torch.tensor([[3.75, 5.5, 7.0, 8.0], [5.5, 5.0, 0.0, 0.0]]))


def test_sequence_replay_follows_one_env_and_stops_at_episode_end() -> None:
    n, rows = 3, 6
    replay = SequenceReplay(n * rows, n, (1,), np.float32)
    # 8 rows into a 6-row ring: rows 0 and 1 are overwritten. obs encodes 10 * row + env.
    for t in range(8):
        obs = np.array([[10.0 * t + e] for e in range(n)], dtype=np.float32)
        done = np.array([t == 4 and e == 1 for e in range(n)])
        replay.add(obs, np.full(n, t), np.ones(n), obs + 100, done, np.full(n, 2.0), done)
    batch = replay.sample(400, 4, np.random.default_rng(0))
    for b in range(400):
        seq = batch.obs[b, batch.mask[b], 0]
        rows_, env = seq // 10, seq % 10
        assert (env == env[0]).all() and (np.diff(rows_) == 1).all()  # one env, consecutive rows
        assert rows_.min() >= 2  # never the overwritten rows
        assert rows_.max() <= 7
        if env[0] == 1 and 4 in rows_:
            assert rows_[-1] == 4 and batch.last_terminated[b]  # stops at the episode end
        assert batch.last_next_obs[b, 0] == seq[-1] + 100
    assert (batch.durations[batch.mask] == 2.0).all()
    assert batch.mask[:, 0].all() and not batch.mask.all()


def small_agent(branching: tuple[int, ...] = (2, 1)) -> VPNAgent:
    torch.manual_seed(0)
    return VPNAgent(GRID, 4, branching, gamma=0.98, channels=8, hidden=16, lr=1e-3)


def fake_batch(rng: np.random.Generator, b: int = 4, length: int = 5):
    from agents.vpn.replay import SequenceBatch

    mask = np.ones((b, length), dtype=bool)
    mask[0, 3:] = False
    return SequenceBatch(
        obs=rng.random((b, length, 10, 10, 4)).astype(np.float32),
        acts=rng.integers(0, 4, (b, length)),
        rews=rng.normal(size=(b, length)).astype(np.float32),
        durations=rng.integers(1, 4, (b, length)).astype(np.float32),
        terminated=np.zeros((b, length), dtype=bool),
        mask=mask,
        last_next_obs=rng.random((b, 10, 10, 4)).astype(np.float32),
        last_terminated=np.array([True] + [False] * (b - 1)),
    )


def test_updates_reduce_the_loss_on_a_fixed_batch() -> None:
    agent = small_agent()
    batch = fake_batch(np.random.default_rng(0))
    first = agent.update(batch)["losses/total"]
    for _ in range(30):
        last = agent.update(batch)["losses/total"]
    assert last < 0.5 * first


def test_save_and_load_give_identical_plans_and_optimizer_state() -> None:
    agent = small_agent((4, 4, 1))
    agent.update(fake_batch(np.random.default_rng(1)))
    clone = small_agent((4, 4, 1))
    torch.manual_seed(123)  # a different init must be overwritten by the load
    saved = io.BytesIO()  # through bytes, as a checkpoint goes: a state_dict holds live tensors
    torch.save(agent.state_dict(), saved)
    saved.seek(0)
    clone.load_state_dict(torch.load(saved, weights_only=False))
    obs = np.random.default_rng(2).random((6, 10, 10, 4)).astype(np.float32)
    torch.testing.assert_close(clone.plan(obs).q, agent.plan(obs).q)
    torch.testing.assert_close(clone.plan(obs, target=True).q, agent.plan(obs, target=True).q)
    # Adam's moments and step count came along: the same next update gives the same weights
    ours, theirs = agent.optimizer.state_dict()["state"], clone.optimizer.state_dict()["state"]
    assert ours.keys() == theirs.keys() and ours
    for k in ours:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(theirs[k][name], ours[k][name])
    batch = fake_batch(np.random.default_rng(3))
    agent.update(batch)
    clone.update(batch)
    for (name, a), (_, b) in zip(
        agent.net.state_dict().items(), clone.net.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(b, a, msg=name)


def test_epsilon_greedy_acting() -> None:
    agent = small_agent()
    obs = np.random.default_rng(0).random((200, 10, 10, 4)).astype(np.float32)
    greedy = agent.plan(obs).option.numpy()
    assert (agent.act(obs, 0.0, np.random.default_rng(0)) == greedy).all()
    random_acts = agent.act(obs, 1.0, np.random.default_rng(0))
    assert 0.1 < (random_acts == greedy).mean() < 0.45  # about 1/4 agree by chance


def test_dqn_option_replay_discounts_by_duration() -> None:
    from agents.vpn.dqn import OptionReplayBuffer

    buf = OptionReplayBuffer(16, GRID, gym.spaces.Discrete(4), n_envs=2, gamma=0.5)
    obs = np.zeros((2, 10, 10, 4), dtype=np.float32)
    for dur in (1, 3, 2):
        buf.add(
            obs,
            obs,
            np.zeros((2, 1)),
            np.zeros(2),
            np.zeros(2),
            [{"duration": dur}, {"duration": dur}],
        )
    sample = buf.sample(64)
    assert set(np.round(sample.discounts.numpy().ravel(), 6)) == {0.5, 0.125, 0.25}
