"""Worker-side rollouts without Ray: the policy copy the workers run, its weights on the wire,
and the frame stack a worker keeps in the shadow of the driver's."""

from __future__ import annotations

import pickle
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from agents.presets import PolicyConfig, make_agent
from agents.worker_rollouts import (
    PolicyWeights,
    RandomRolloutPolicy,
    RolloutPlan,
    RolloutPolicy,
    rollout_source,
)
from envs import EnvSpec, make_env, make_vec_env
from envs.frame_stack import AtariFrameStack, PackedStackedObservations
from envs.shallow_dummy_vec_env import ShallowDummyVecEnv
from rlkit.distributed.worker import RolloutWorker
from tests.synthetic_frames import RandomFrames


def test_policy_weights_send_each_shared_tensor_once_and_load_exactly():
    """A2C's Atari policy lists its CNN three times; the wire form holds it once (a third of
    the bytes) and a fresh copy of the policy loads every tensor back."""
    venv = make_vec_env(EnvSpec("ALE/Pong-v5"), 1, seed=0)
    try:
        agent = make_agent(PolicyConfig(), venv, "atari", seed=0)
        state = agent.policy.state_dict()
        weights = pickle.loads(pickle.dumps(PolicyWeights.of(state)))
        assert len(state) == 28 and len(weights.arrays) == 12
        assert weights.aliases["vf_features_extractor.linear.0.weight"] == (
            "features_extractor.linear.0.weight"
        )
        wire = sum(a.nbytes for a in weights.arrays.values())
        listed = sum(t.numel() * t.element_size() for t in state.values())
        assert wire < 0.34 * listed
        copy = RolloutPolicy(agent.policy)
        copy.load_state_dict(weights)
        for key, tensor in copy.policy.state_dict().items():
            assert th.equal(tensor, state[key]), key
    finally:
        venv.close()


def test_rollout_policy_pickles_and_answers_as_the_drivers_policy():
    """The TRPO preset's policy does not pickle (a closure is patched onto it); its rollout
    copy does, and with the weights (observation statistics included) gives the driver
    policy's values and log-probabilities, its actions clipped as SB3 clips them."""
    venv = make_vec_env(EnvSpec("Hopper-v5"), 2, seed=0)
    try:
        agent = make_agent(PolicyConfig(), venv, "mujoco", seed=0)
        rng = np.random.default_rng(0)
        agent.policy.features_extractor.update(rng.normal(3.0, 2.0, size=(500, 11)))
        copy = pickle.loads(pickle.dumps(RolloutPolicy(agent.policy)))
        copy.load_state_dict(PolicyWeights.of(agent.policy.state_dict()))
        obs = rng.normal(3.0, 2.0, size=(6, 11)).astype(np.float32)
        actions, values, log_probs = copy(obs)
        assert actions.shape == (6, 3) and values.shape == (6,) and log_probs.shape == (6,)
        with th.no_grad():
            want_v, want_lp, _ = agent.policy.evaluate_actions(
                th.as_tensor(obs), th.as_tensor(actions)
            )
        np.testing.assert_allclose(values, want_v.flatten().numpy(), atol=1e-5)
        np.testing.assert_allclose(log_probs, want_lp.numpy(), atol=1e-5)
        clipped = copy.env_actions(actions)
        np.testing.assert_array_equal(clipped, np.clip(actions, -1, 1))
        assert rollout_source(venv) is None  # a local VecEnv: SB3's own collect_rollouts
    finally:
        venv.close()


class _Recording:
    """A rollout policy that keeps the observations it is shown and acts at random."""

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []
        self.rng = np.random.default_rng(0)

    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.seen.append(obs.copy())
        n = len(obs)
        return self.rng.integers(0, 3, size=n), np.zeros(n, np.float32), np.zeros(n, np.float32)

    def env_actions(self, actions: np.ndarray) -> np.ndarray:
        return actions


def test_a_worker_shows_its_policy_the_stack_the_driver_keeps():
    """A RayVecEnv's Atari worker sends single frames (the driver stacks them); its rollout
    policy sees the same 4-frame stacks as the driver, across episode ends (the stack starts
    again from zeros), and the terminal observations it sends stay single frames."""
    n = 3
    worker = RolloutWorker(
        EnvSpec("ALE/Pong-v5"), seed=0, first_rank=0, n_envs=n, shadow_stack=True
    )
    assert worker._shadow is not None and not worker.stacks_frames
    # The worker's envs, swapped for tiny random frames with frequent episode ends.
    worker.base = worker.venv = ShallowDummyVecEnv([lambda s=s: RandomFrames(s) for s in range(n)])
    worker._shadow = PackedStackedObservations(n, 4, worker.base.observation_space)
    driver = AtariFrameStack(ShallowDummyVecEnv([lambda s=s: RandomFrames(s) for s in range(n)]), 4)
    want_obs = [driver.reset()]
    np.testing.assert_array_equal(worker.reset()[0], want_obs[0][..., -1:])
    policy = _Recording()
    worker.set_rollout_policy(policy)  # type: ignore[arg-type]
    ends = 0
    for _ in range(4):
        steps, actions, env_actions, values, log_probs = worker.rollout(30)
        assert actions.shape == (30, n) and values.shape == log_probs.shape == (30, n)
        for (obs, rews, dones, infos, _), acts in zip(steps, actions, strict=True):
            assert obs.shape == (n, 6, 7, 1)
            want, want_rews, want_dones, want_infos = driver.step(acts)
            np.testing.assert_array_equal(rews, want_rews)
            np.testing.assert_array_equal(dones, want_dones)
            for k in np.flatnonzero(dones):
                ends += 1
                single = infos[k]["terminal_observation"]
                assert single.shape == (6, 7, 1)
                np.testing.assert_array_equal(
                    single[..., 0], want_infos[k]["terminal_observation"][..., -1]
                )
            want_obs.append(want)
    assert ends >= 10
    assert len(policy.seen) == 120
    for seen, want in zip(policy.seen, want_obs[:-1], strict=True):
        np.testing.assert_array_equal(seen, want)
    assert any((s[..., :3] == 0).all() and s[..., 3].any() for obs in policy.seen for s in obs)


def test_a_rollout_plan_checks_its_shapes():
    RolloutPlan(np.zeros((5, 4, 3)), np.zeros((5, 4)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"must share \(n_steps, n_envs\)"):
        RolloutPlan(np.zeros((5, 4, 3)), np.zeros((4, 5)), np.zeros((5, 4)))


def test_random_rollout_actions_cover_the_space_and_follow_torchs_seed():
    box = gym.spaces.Box(
        low=np.array([-1.0, 0.0], np.float32), high=np.array([1.0, 5.0], np.float32)
    )
    policy = RandomRolloutPolicy(box)
    obs = np.zeros((4000, 3))
    th.manual_seed(3)
    actions, values, log_probs = policy(obs)
    assert actions.dtype == np.float32 and actions.shape == (4000, 2)
    assert box.contains(actions[0]) and all(box.contains(a) for a in actions[:100])
    np.testing.assert_allclose(actions.mean(axis=0), [0.0, 2.5], atol=0.1)
    assert not values.any() and not log_probs.any() and policy.env_actions(actions) is actions
    th.manual_seed(3)
    np.testing.assert_array_equal(policy(obs)[0], actions)
    discrete, _, _ = RandomRolloutPolicy(gym.spaces.Discrete(6, start=1))(obs)
    assert sorted(np.unique(discrete)) == [1, 2, 3, 4, 5, 6]
    with pytest.raises(TypeError, match="no weights"):
        policy.load_state_dict({})


def _worker_policy(env_id: str, worker: RolloutWorker) -> tuple[Any, PolicyWeights | None]:
    """The rollout policy as Ray hands it to a worker (pickled, not yet built), and weights."""
    if env_id.startswith("ALE/"):
        return RandomRolloutPolicy(worker.spaces()[1]), None
    venv = make_vec_env(EnvSpec(env_id), 1, seed=0)
    try:  # TRPO's policy
        policy = make_agent(PolicyConfig(), venv, "mujoco", seed=0).policy
        copy = pickle.loads(pickle.dumps(RolloutPolicy(policy)))
        return copy, PolicyWeights.of(policy.state_dict())
    finally:
        venv.close()


def test_a_worker_in_env_processes_pipelines_its_rollout_over_the_drivers_stacks():
    """With ``env_processes``, the policy acts for each block as soon as its step is back:
    per block, it sees the 4-frame stacks the driver keeps (across Breakout's life-loss episode
    ends), and the steps joined over the blocks are the driver's envs' under the env actions."""
    spec, n = EnvSpec("ALE/Breakout-v5"), 3
    worker = RolloutWorker(spec, seed=0, first_rank=0, n_envs=n, shadow_stack=True,
                           env_processes=2)  # fmt: skip
    blocks = [range(0, 2), range(2, 3)]
    assert worker.base.blocks == blocks  # type: ignore[union-attr]
    driver = AtariFrameStack(ShallowDummyVecEnv([make_env(spec, 0, k) for k in range(n)]), 4)
    driver.seed(0)
    want_obs = [driver.reset()]
    np.testing.assert_array_equal(worker.reset()[0], want_obs[0][..., -1:])
    policy = _Recording()
    worker.set_rollout_policy(policy)  # type: ignore[arg-type]
    ends = 0
    try:
        for _ in range(2):
            steps, actions, env_actions, values, _ = worker.rollout(120)
            assert actions.shape == values.shape == (120, n)
            for (obs, rews, dones, infos, resets), acts in zip(steps, env_actions, strict=True):
                want, want_rews, want_dones, want_infos = driver.step(acts)
                np.testing.assert_array_equal(obs, want[..., -1:])
                np.testing.assert_array_equal(rews, want_rews)
                np.testing.assert_array_equal(dones, want_dones)
                for k in np.flatnonzero(dones):
                    ends += 1
                    np.testing.assert_array_equal(
                        infos[k]["terminal_observation"][..., 0],
                        want_infos[k]["terminal_observation"][..., -1],
                    )
                    assert resets[k] == driver.venv.reset_infos[k]
                want_obs.append(want)
        assert ends >= 1
        assert len(policy.seen) == 240 * len(blocks)  # one call per block and step
        for t, want in enumerate(want_obs[:-1]):
            seen = np.concatenate(policy.seen[t * 2 : t * 2 + 2])
            np.testing.assert_array_equal(seen, want)
    finally:
        worker.close()
        driver.close()


@pytest.mark.parametrize(("env_id", "processes"), [("ALE/Breakout-v5", 1), ("Hopper-v5", 2)])
def test_a_worker_put_back_into_its_saved_state_takes_the_rollout_it_would_have(env_id, processes):
    """A stopped Ray run saves its workers (RayVecEnv.get_env_state): a new worker given the
    state (through pickle, as Ray sends it) and a new copy of the policy takes the same steps
    and draws the same actions as the worker that went on, across episode ends (Breakout: with
    the driver's frame stack in its shadow; Hopper: TRPO's copy, built once the state is back,
    which must leave the generator alone, with the envs in two env processes, pipelined)."""
    spec = EnvSpec(env_id)

    def worker() -> tuple[RolloutWorker, PolicyWeights | None]:
        w = RolloutWorker(spec, seed=3, first_rank=2, n_envs=2, policy_seed=5, shadow_stack=True,
                          env_processes=processes)  # fmt: skip
        policy, weights = _worker_policy(env_id, w)
        w.set_rollout_policy(policy)
        return w, weights

    first, weights = worker()
    first.rollout(40, weights)
    state = pickle.loads(pickle.dumps(first.get_state()))
    went_on = first.rollout(300)
    again, weights = worker()
    again.set_state(state)
    resumed = again.rollout(300, weights)
    assert sum(s[2].sum() for s in went_on[0]) >= 1  # an episode ended on the way
    for a, b in zip(went_on[0], resumed[0], strict=True):
        for part_a, part_b in zip(a[:3], b[:3], strict=True):
            np.testing.assert_array_equal(part_a, part_b)
    for a, b in zip(went_on[1:], resumed[1:], strict=True):
        np.testing.assert_array_equal(a, b)
    # ... and without the state, the same worker takes other steps
    other, weights = worker()
    assert not np.array_equal(other.rollout(300, weights)[1], went_on[1])
    # a state that does not fit is refused before anything changes
    saved = "2 envs" if processes == 1 else "2 envs in 2 env processes"
    with pytest.raises(
        ValueError, match=rf"saved worker's envs \({saved}\) are not this worker's \(1 env\)"
    ):
        RolloutWorker(spec, seed=3, first_rank=2, n_envs=1).set_state(state)
    if env_id.startswith("ALE/"):  # saved by a worker that stepped for the driver alone
        plain = RolloutWorker(spec, seed=3, first_rank=2, n_envs=2)
        plain.reset()
        with pytest.raises(ValueError, match="kept no shadow frame stack"):
            again.set_state(plain.get_state())
    for w in (first, again, other):
        w.close()
