"""ShallowDummyVecEnv returns what SB3's DummyVecEnv returns, episode ends included."""

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
