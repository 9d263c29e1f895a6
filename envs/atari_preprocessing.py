"""SB3's Atari preprocessing, with the emulator's screen read only on the frames it keeps.

ale_py's ``AtariEnv`` builds an RGB observation (a new 100 kB copy of the screen) after every
emulator frame. Under frame skip 4 with max pooling, only the last two frames' screens are
used: :class:`MaxAndSkipScreens` has ale_py return its RAM (128 bytes) on every frame and
copies the screen after the last two straight into its max-pool buffer, so every output
(observations, rewards, ends, infos, and the Monitor's episode records below it) is SB3's
``AtariWrapper``'s exactly, at 9-14% less CPU per agent step
(``benchmarks/bench_atari_preprocessing.py``; ``tests/test_atari_preprocessing.py``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.atari_wrappers import (
    EpisodicLifeEnv,
    FireResetEnv,
    MaxAndSkipEnv,
    NoopResetEnv,
    WarpFrame,
)

NOOP_MAX = 30
FRAME_SKIP = 4
SCREEN_SIZE = 84


class MaxAndSkipScreens(MaxAndSkipEnv):
    """SB3's ``MaxAndSkipEnv`` (repeat the action ``skip`` times, sum the rewards, max-pool the
    last two frames, stop early at an episode's end), reading the screen only on those two.

    Every frame steps the same env stack (so wrappers below it, such as ``Monitor`` and
    ``NoopResetEnv``, see every frame as before) with ale_py's observation type switched to
    ``"ram"`` for the call; after each of the last two, the emulator writes its screen into
    one of the two max-pool slots (``ale.getScreenRGB(out)``, no new array). On an env that
    is not an RGB ``AtariEnv`` without sound it is ``MaxAndSkipEnv`` unchanged.

    Observations: ``(210, 160, 3)`` uint8, the max of the last two frames' screens.
    ``last_screen``: the emulator's screen after the last step's last frame, ``(210, 160, 3)``
    uint8, overwritten by the next step; None where that step did not read it (an episode
    that ended before the last frame, a reset, another env).
    """

    def __init__(self, env: gym.Env, skip: int = FRAME_SKIP) -> None:
        super().__init__(env, skip=skip)
        ale_env = env.unwrapped
        on_demand = getattr(ale_env, "_obs_type", None) == "rgb" and not getattr(
            ale_env, "sound_obs", False
        )
        self._ale_env: Any = ale_env if on_demand else None
        self._ale: Any = ale_env.ale if on_demand else None
        self.last_screen: np.ndarray | None = None

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """``MaxAndSkipEnv``'s reset; clears ``last_screen``."""
        self.last_screen = None
        return super().reset(**kwargs)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """``action`` for ``skip`` frames: the max-pooled observation ``(210, 160, 3)`` uint8,
        the summed reward, and the last frame's ends and info."""
        self.last_screen = None
        if self._ale_env is None:
            return super().step(action)
        total_reward = 0.0
        terminated = truncated = False
        info: dict[str, Any] = {}
        first_kept = self._skip - 2
        self._ale_env._obs_type = "ram"
        try:
            for i in range(self._skip):
                _, reward, terminated, truncated, info = self.env.step(action)
                if i >= first_kept:
                    self._ale.getScreenRGB(self._obs_buffer[i - first_kept])
                total_reward += float(reward)
                if terminated or truncated:
                    break
        finally:
            self._ale_env._obs_type = "rgb"
        if i == self._skip - 1:
            self.last_screen = self._obs_buffer[1]
        # As in SB3, an episode that ends early max-pools whatever the buffer holds.
        max_frame = np.maximum(self._obs_buffer[0], self._obs_buffer[1])
        return max_frame, total_reward, terminated, truncated, info


def atari_preprocessing(env: gym.Env, terminal_on_life_loss: bool) -> gym.Env:
    """SB3's ``AtariWrapper(env, terminal_on_life_loss=..., clip_reward=False, frame_skip=4)``:
    no-op reset (up to 30), frame skip 4 with max pooling (:class:`MaxAndSkipScreens`), an
    episode end on life loss if asked, FIRE on reset where the game has it, and 84x84
    grayscale frames ``(84, 84, 1)`` uint8. ``env`` steps one emulator frame per step."""
    env = NoopResetEnv(env, noop_max=NOOP_MAX)
    env = MaxAndSkipScreens(env, skip=FRAME_SKIP)
    if terminal_on_life_loss:
        env = EpisodicLifeEnv(env)
    if "FIRE" in env.unwrapped.get_action_meanings():  # type: ignore[attr-defined]
        env = FireResetEnv(env)
    return WarpFrame(env, width=SCREEN_SIZE, height=SCREEN_SIZE)
