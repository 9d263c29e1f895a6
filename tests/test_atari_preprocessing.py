"""rlkit's Atari preprocessing returns exactly what SB3's AtariWrapper returns, reading the
emulator's screen on two frames of four."""

import gymnasium as gym
import numpy as np
import pytest
from ale_py.env import AtariEnv
from stable_baselines3.common.atari_wrappers import AtariWrapper, MaxAndSkipEnv
from stable_baselines3.common.monitor import Monitor

from envs import EnvSpec, make_env
from envs.atari_preprocessing import MaxAndSkipScreens, atari_preprocessing


def _inner(env_id: str, sticky: float) -> Monitor:
    return Monitor(gym.make(env_id, frameskip=1, repeat_action_probability=sticky))


def _same_step(s1: tuple, s2: tuple) -> None:
    """Equal observations, rewards, ends and infos (lives, frame numbers, the Monitor's episode
    record but its wall-clock time)."""
    np.testing.assert_array_equal(s1[0], s2[0])
    assert s1[1:-1] == s2[1:-1]
    i1, i2 = ({k: v for k, v in s[-1].items() if k != "episode"} for s in (s1, s2))
    assert i1 == i2
    assert ("episode" in s1[-1]) == ("episode" in s2[-1])
    if "episode" in s1[-1]:
        assert [s1[-1]["episode"][k] for k in "rl"] == [s2[-1]["episode"][k] for k in "rl"]


def _pair(env_id: str, training: bool, sticky: float) -> tuple[gym.Env, gym.Env]:
    ours = atari_preprocessing(_inner(env_id, sticky), terminal_on_life_loss=training)
    ref = AtariWrapper(
        _inner(env_id, sticky), terminal_on_life_loss=training, clip_reward=False, frame_skip=4
    )
    return ours, ref


@pytest.mark.parametrize(
    ("env_id", "training", "sticky"),
    [("ALE/Breakout-v5", True, 0.0), ("ALE/Breakout-v5", False, 0.25), ("ALE/Pong-v5", True, 0.0)],
)
def test_outputs_equal_sb3_atari_wrapper_over_episodes(env_id, training, sticky):
    ours, ref = _pair(env_id, training, sticky)
    _same_step(ours.reset(seed=3), ref.reset(seed=3))
    actions = np.random.default_rng(0).integers(0, ours.action_space.n, 1200)
    ends = rewarded = 0
    for a in actions:
        s1, s2 = ours.step(int(a)), ref.step(int(a))
        assert s1[0].shape == (84, 84, 1) and s1[0].dtype == np.uint8
        _same_step(s1, s2)
        rewarded += s1[1] != 0
        if s1[2] or s1[3]:
            ends += 1
            _same_step(ours.reset(), ref.reset())
    assert ends >= 1 and rewarded >= 1  # the comparison crossed an episode end and scores
    monitors = [e.get_wrapper_attr("get_episode_rewards")() for e in (ours, ref)]
    assert monitors[0] == monitors[1]
    lengths = [e.get_wrapper_attr("get_episode_lengths")() for e in (ours, ref)]
    assert lengths[0] == lengths[1]


def test_the_screen_is_read_on_the_last_two_frames_of_four_into_the_buffer(monkeypatch):
    observations: list[str] = []
    original = AtariEnv._get_obs

    def spy(self):
        observations.append(self._obs_type)
        return original(self)

    class CountingALE:
        """Forwards to the emulator, noting which frame each screen read follows."""

        def __init__(self, ale) -> None:
            self.ale, self.reads = ale, []

        def getScreenRGB(self, out: np.ndarray) -> None:  # noqa: N802 (ale_py's name)
            self.reads.append((self.ale.getEpisodeFrameNumber(), out.ctypes.data))
            self.ale.getScreenRGB(out)

    env = make_env(EnvSpec("ALE/Pong-v5"), seed=0)()
    ale_env = env.get_wrapper_attr("_ale_env")
    assert isinstance(ale_env, AtariEnv)  # the factory uses it
    buffer = env.get_wrapper_attr("_obs_buffer")
    counting = CountingALE(ale_env.ale)
    env.set_wrapper_attr("_ale", counting)  # on MaxAndSkipScreens, the wrapper that has it
    monkeypatch.setattr(AtariEnv, "_get_obs", spy)
    first = ale_env.ale.getEpisodeFrameNumber()
    for _ in range(50):
        env.step(0)
    # Every frame returns RAM to the wrappers below; the screen is copied only after frames 3
    # and 4 of each step, straight into the two max-pool slots.
    assert observations == ["ram"] * 200
    slots = [buffer[0].ctypes.data, buffer[1].ctypes.data]
    expected = [(first + 4 * k + j, slots[j - 3]) for k in range(50) for j in (3, 4)]
    assert counting.reads == expected
    assert ale_env._obs_type == "rgb"


def test_a_non_rgb_env_gets_sb3_max_and_skip_unchanged():
    envs = [
        cls(gym.make("ALE/Pong-v5", frameskip=1, obs_type="grayscale"), skip=4)
        for cls in (MaxAndSkipScreens, MaxAndSkipEnv)
    ]
    assert envs[0]._ale_env is None
    for env in envs:
        env.reset(seed=1)
    for a in np.random.default_rng(1).integers(0, 6, 40):
        s1, s2 = envs[0].step(int(a)), envs[1].step(int(a))
        _same_step(s1, s2)


@pytest.mark.parametrize("env_id", ["ALE/Pong-v5", "ALE/Breakout-v5"])
def test_render_state_is_every_other_row_and_column_of_the_screen(env_id):
    """The clip frame kept per step (``info["render_state"]``) is the emulator's screen at
    the returned observation, halved by taking every other row and column: exactly
    ``screen[::2, ::2]``, as a contiguous (105, 80, 3) array; on a step, from the screen the
    frame skip read on its last frame, and through episode ends and resets too."""
    env = make_env(EnvSpec(env_id, render_state=True, training=True), seed=3)()
    skip = env
    while not isinstance(skip, MaxAndSkipScreens):
        skip = skip.env
    _, info = env.reset(seed=3)
    rng = np.random.default_rng(0)
    distinct, reused, ends, steps = set(), 0, 0, 0
    while steps < 150 or ends == 0:
        screen = env.unwrapped.ale.getScreenRGB()
        frame = info["render_state"]
        assert frame.shape == (105, 80, 3) and frame.dtype == np.uint8
        assert frame.flags.c_contiguous
        np.testing.assert_array_equal(frame, screen[::2, ::2])
        distinct.add(frame.tobytes())
        _, _, term, trunc, info = env.step(int(rng.integers(env.action_space.n)))
        reused += skip.last_screen is not None
        steps += 1
        if term or trunc:
            ends += 1
            _, info = env.reset()
        assert steps < 5000
    assert len(distinct) > 50  # the screens moved: not one frame compared 150 times
    assert reused >= steps - ends  # every step that ran its 4 frames used the screen it read
    env.close()
