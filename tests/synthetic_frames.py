"""A tiny synthetic Atari-like env for tests of frame stacking."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from envs.render_state import RENDER_STATE_KEY


class RandomFrames(gym.Env):
    """Random 6x7 one-channel frames; episodes end at random, by termination or time limit."""

    observation_space = gym.spaces.Box(0, 255, (6, 7, 1), np.uint8)
    action_space = gym.spaces.Discrete(3)

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def _frame(self) -> np.ndarray:
        return self.rng.integers(0, 256, (6, 7, 1), dtype=np.uint8)

    def reset(self, *, seed=None, options=None):
        return self._frame(), {RENDER_STATE_KEY: self.rng.normal(size=2)}

    def step(self, action):
        end = self.rng.random()
        info = {RENDER_STATE_KEY: self.rng.normal(size=2)}
        return self._frame(), float(action), end < 0.07, 0.07 <= end < 0.12, info
