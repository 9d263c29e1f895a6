"""A wrapper that puts the simulator state needed to re-render each step into ``info``."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

RENDER_STATE_KEY = "render_state"


def mujoco_state(env: gym.Env) -> np.ndarray:
    """``concat(qpos, qvel)`` of a Gymnasium MuJoCo env, shape ``(nq + nv,)``, float64."""
    data = env.unwrapped.data
    return np.concatenate([data.qpos, data.qvel]).astype(np.float64)


def atari_frame(env: gym.Env) -> np.ndarray:
    """The emulator's current RGB screen at half resolution, shape ``(105, 80, 3)``, uint8.

    Half resolution keeps a 25-step segment at 630 kB instead of 2.5 MB while staying
    readable for a person.
    """
    return env.unwrapped.ale.getScreenRGB()[::2, ::2].copy()


class RenderStateInfo(gym.Wrapper):
    """Adds ``info["render_state"]``: the state of the simulator *at the returned observation*.

    Put it outermost (after frame skipping), so the state matches the observation the
    agent acts on. ``kind`` is ``"mujoco"`` or ``"atari"``.
    """

    def __init__(self, env: gym.Env, kind: str) -> None:
        super().__init__(env)
        if kind not in ("mujoco", "atari"):
            raise ValueError(f"no render state for env kind {kind!r}")
        self._state_fn = mujoco_state if kind == "mujoco" else atari_frame

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        info[RENDER_STATE_KEY] = self._state_fn(self.env)
        return obs, info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info[RENDER_STATE_KEY] = self._state_fn(self.env)
        return obs, reward, terminated, truncated, info
