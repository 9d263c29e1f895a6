"""A wrapper that puts the simulator state needed to re-render each step into ``info``."""

from __future__ import annotations

from typing import Any, SupportsFloat

import cv2
import gymnasium as gym
import numpy as np

from envs.atari_preprocessing import MaxAndSkipScreens

RENDER_STATE_KEY = "render_state"


def mujoco_state(env: gym.Env) -> np.ndarray:
    """``concat(qpos, qvel)`` of a Gymnasium MuJoCo env, shape ``(nq + nv,)``, float64."""
    data = env.unwrapped.data
    return np.concatenate([data.qpos, data.qvel]).astype(np.float64)


def atari_frame(env: gym.Env, screen: np.ndarray | None = None) -> np.ndarray:
    """The emulator's current RGB screen at half resolution, shape ``(105, 80, 3)``, uint8.

    Half resolution keeps a 25-step segment at 630 kB instead of 2.5 MB while staying
    readable for a person. Every other row and column, ``screen[::2, ::2]`` exactly, taken by
    OpenCV's nearest-neighbour resize: 12 us against numpy's 55 us for that strided copy of a
    3-channel image (a tenth of a Pong step, ``benchmarks/bench_worker_overhead.py
    --render-state``). ``screen``: the emulator's current RGB screen where the caller has it
    already (read from the emulator otherwise).
    """
    if screen is None:
        screen = env.unwrapped.ale.getScreenRGB()
    height, width = screen.shape[:2]
    if height % 2 or width % 2:  # (ALE's screens are 210 x 160)
        return screen[::2, ::2].copy()
    return cv2.resize(screen, (width // 2, height // 2), interpolation=cv2.INTER_NEAREST)


class RenderStateInfo(gym.Wrapper):
    """Adds ``info["render_state"]``: the state of the simulator *at the returned observation*.

    Put it outermost (after frame skipping), so the state matches the observation the
    agent acts on. ``kind`` is ``"mujoco"`` or ``"atari"``. Under rlkit's Atari preprocessing
    a step's screen is the one its frame skip already read (``MaxAndSkipScreens.last_screen``,
    nothing steps the emulator after it), not a second copy from the emulator.
    """

    def __init__(self, env: gym.Env, kind: str) -> None:
        super().__init__(env)
        if kind not in ("mujoco", "atari"):
            raise ValueError(f"no render state for env kind {kind!r}")
        self._kind = kind
        self._screens = _frame_skip(env) if kind == "atari" else None

    def _state(self) -> np.ndarray:
        if self._kind == "mujoco":
            return mujoco_state(self.env)
        screen = self._screens.last_screen if self._screens is not None else None
        return atari_frame(self.env, screen)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """The env's reset, with the start's render state in ``info``."""
        obs, info = self.env.reset(**kwargs)
        info[RENDER_STATE_KEY] = self._state()
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """The env's step, with the render state at the returned observation in ``info``:
        ``(nq + nv,)`` float64 (MuJoCo) or ``(105, 80, 3)`` uint8 (Atari)."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        info[RENDER_STATE_KEY] = self._state()
        return obs, reward, terminated, truncated, info


def _frame_skip(env: gym.Env) -> MaxAndSkipScreens | None:
    """The :class:`MaxAndSkipScreens` in ``env``'s wrapper chain, if any."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, MaxAndSkipScreens):
            return env
        env = env.env
    return None
