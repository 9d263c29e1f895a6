"""ShallowDummyVecEnv returns what SB3's DummyVecEnv returns, episode ends included."""

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv

from envs import EnvSpec
from envs.factory import make_env
from envs.shallow_dummy_vec_env import ShallowDummyVecEnv


def test_same_steps_as_dummy_vec_env_across_episode_ends():
    spec = EnvSpec("Hopper-v5", render_state=True)  # falls over often under random actions
    ours = ShallowDummyVecEnv([make_env(spec, seed=i) for i in range(3)])
    ref = DummyVecEnv([make_env(spec, seed=i) for i in range(3)])
    ours.seed(7)
    ref.seed(7)
    np.testing.assert_array_equal(ours.reset(), ref.reset())
    rng = np.random.default_rng(0)
    dones_seen = 0
    previous_states = None
    previous_obs = None
    for _ in range(300):
        acts = rng.uniform(-1, 1, size=(3, 3)).astype(np.float32)
        o1, r1, d1, i1 = ours.step(acts)
        o2, r2, d2, i2 = ref.step(acts)
        np.testing.assert_array_equal(o1, o2)
        if previous_obs is not None:  # the last step's observations were not overwritten
            np.testing.assert_array_equal(previous_obs[0], previous_obs[1])
        previous_obs = (o1, o1.copy())
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(d1, d2)
        assert [sorted(i) for i in i1] == [sorted(i) for i in i2]
        for a, b in zip(i1, i2, strict=True):
            np.testing.assert_array_equal(a["render_state"], b["render_state"])
            assert a["TimeLimit.truncated"] == b["TimeLimit.truncated"]
            if "terminal_observation" in b:
                np.testing.assert_array_equal(a["terminal_observation"], b["terminal_observation"])
        states = [i["render_state"] for i in i1]
        if previous_states is not None:  # no aliasing across steps
            assert all(s is not p for s, p in zip(states, previous_states, strict=True))
        previous_states = states
        dones_seen += int(d1.sum())
    assert dones_seen >= 3


class _DictCounter(gym.Env):
    """Dict observations (a position and a flag); the episode ends after ``length`` steps."""

    observation_space = gym.spaces.Dict(
        {"pos": gym.spaces.Box(-100, 100, (2,), np.float32), "flag": gym.spaces.Discrete(2)}
    )
    action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    def __init__(self, length: int) -> None:
        self.length = length

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.pos = 0, self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return {"pos": self.pos.copy(), "flag": 0}, {"start": self.pos.copy()}

    def step(self, action):
        self.t += 1
        self.pos = self.pos + action
        obs = {"pos": self.pos.copy(), "flag": self.t % 2}
        return obs, float(self.pos.sum()), self.t == self.length, False, {"t": self.t}


def test_dict_observations_step_as_in_dummy_vec_env():
    thunks = [lambda n=n: _DictCounter(3 + n) for n in range(2)]
    ours, ref = ShallowDummyVecEnv(thunks), DummyVecEnv(thunks)
    ours.seed(1)
    ref.seed(1)
    first, first_ref = ours.reset(), ref.reset()
    for key in ("pos", "flag"):
        np.testing.assert_array_equal(first[key], first_ref[key])
    rng = np.random.default_rng(0)
    for _ in range(9):
        acts = rng.uniform(-1, 1, size=(2, 2)).astype(np.float32)
        (o1, r1, d1, i1), (o2, r2, d2, i2) = ours.step(acts), ref.step(acts)
        for key in ("pos", "flag"):
            np.testing.assert_array_equal(o1[key], o2[key])
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(d1, d2)
        for a, b in zip(i1, i2, strict=True):
            assert a["t"] == b["t"] and a["TimeLimit.truncated"] == b["TimeLimit.truncated"]
            if "terminal_observation" in b:
                np.testing.assert_array_equal(
                    a["terminal_observation"]["pos"], b["terminal_observation"]["pos"]
                )
    assert [i["start"].tolist() for i in ours.reset_infos] == [
        i["start"].tolist() for i in ref.reset_infos
    ]
