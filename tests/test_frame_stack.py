"""AtariFrameStack returns exactly what SB3's VecFrameStack returns, episode ends included."""

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecFrameStack
from stable_baselines3.common.vec_env.stacked_observations import StackedObservations

from envs import EnvSpec, make_vec_env
from envs.factory import make_env
from envs.frame_stack import AtariFrameStack, PackedStackedObservations
from envs.shallow_dummy_vec_env import ShallowDummyVecEnv


def test_packed_update_equals_sb3_on_random_frames_and_ends():
    n, space = 5, spaces.Box(0, 255, (6, 7, 1), np.uint8)
    ours = PackedStackedObservations(n, 4, space)
    ref = StackedObservations(n, 4, space, "last")
    assert ours.packed
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, (n, 6, 7, 1), dtype=np.uint8)
    np.testing.assert_array_equal(ours.reset(first.copy()), ref.reset(first.copy()))
    returned, ends = [], 0
    for _ in range(60):
        frames = rng.integers(0, 256, (n, 6, 7, 1), dtype=np.uint8)
        dones = rng.random(n) < 0.2
        infos = [
            {"terminal_observation": rng.integers(0, 256, (6, 7, 1), dtype=np.uint8)} if d else {}
            for d in dones
        ]
        ref_infos = [{k: v.copy() for k, v in info.items()} for info in infos]
        o1, i1 = ours.update(frames.copy(), dones, infos)
        o2, i2 = ref.update(frames.copy(), dones, ref_infos)
        assert o1.shape == o2.shape == (n, 6, 7, 4) and o1.dtype == np.uint8
        np.testing.assert_array_equal(o1, o2)
        for a, b in zip(i1, i2, strict=True):
            assert a.keys() == b.keys()
            if "terminal_observation" in b:
                assert a["terminal_observation"].shape == (6, 7, 4)
                np.testing.assert_array_equal(a["terminal_observation"], b["terminal_observation"])
                ends += 1
        returned.append((o1, o1.copy()))
    assert ends >= 20
    # Every step returned a new array: what a caller kept was not changed later.
    for kept, copy in returned:
        np.testing.assert_array_equal(kept, copy)


def test_other_spaces_take_sb3s_path():
    assert not PackedStackedObservations(2, 4, spaces.Box(0, 1, (3, 1), np.float32)).packed
    assert not PackedStackedObservations(2, 4, spaces.Box(0, 255, (4, 4, 3), np.uint8)).packed
    assert not PackedStackedObservations(2, 3, spaces.Box(0, 255, (4, 4, 1), np.uint8)).packed


def test_pong_steps_equal_sb3_frame_stack():
    spec = EnvSpec("ALE/Pong-v5")
    ours = make_vec_env(spec, 2, seed=3)
    assert isinstance(ours, AtariFrameStack) and ours.stacked_obs.packed
    ref = VecFrameStack(ShallowDummyVecEnv([make_env(spec, 3, rank) for rank in range(2)]), 4)
    ref.seed(3)
    np.testing.assert_array_equal(ours.reset(), ref.reset())
    rng = np.random.default_rng(1)
    for _ in range(80):
        acts = rng.integers(0, 6, size=2)
        o1, r1, d1, _ = ours.step(acts)
        o2, r2, d2, _ = ref.step(acts)
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(d1, d2)
    assert o1[..., :3].any()  # the stack holds real frames, not only the newest
