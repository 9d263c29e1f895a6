"""Cutting a vectorized env's step stream into per-env trajectory fragments.

Runs inside a rollout worker; pure numpy, so it is tested without Ray.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from envs.render_state import RENDER_STATE_KEY
from rlkit.core.types import Trajectory


@dataclasses.dataclass
class _Piece:
    """The steps of one env since its current fragment began."""

    obs: list[np.ndarray]
    acts: list[np.ndarray] = dataclasses.field(default_factory=list)
    rews: list[float] = dataclasses.field(default_factory=list)
    states: list[np.ndarray] | None = None


class FragmentRecorder:
    """Follows ``n_envs`` auto-resetting envs (SB3 VecEnv conventions) and emits
    :class:`Trajectory` pieces.

    A piece ends at an episode's end (``terminal`` is True unless the episode was cut by a
    time limit, ``info["TimeLimit.truncated"]``; its last observation is
    ``info["terminal_observation"]``) or when :meth:`flush` is called (``terminal`` False).
    With ``render_state`` each piece also carries ``info["render_state"]`` per observation.
    """

    def __init__(self, n_envs: int, render_state: bool) -> None:
        self.n_envs = n_envs
        self.render_state = render_state
        self._pieces: list[_Piece] = []

    def start(self, obs: np.ndarray, infos: list[dict[str, Any]]) -> None:
        """Begin a piece per env at ``obs`` (shape ``(n_envs, *obs_shape)``); ``infos`` are the
        reset infos (carrying the render state of ``obs``)."""
        self._pieces = [self._new_piece(obs[k], infos[k]) for k in range(self.n_envs)]

    def _new_piece(self, obs: np.ndarray, info: dict[str, Any]) -> _Piece:
        states = [info[RENDER_STATE_KEY]] if self.render_state else None
        return _Piece(obs=[obs], states=states)

    def record(
        self,
        acts: np.ndarray,
        obs: np.ndarray,
        rews: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
        reset_infos: list[dict[str, Any]],
    ) -> list[tuple[int, Trajectory]]:
        """Add one step of every env; returns the pieces (with their env index) that ended.

        Args:
            acts: actions taken, shape ``(n_envs, *act_shape)``.
            obs: observations after the step (a reset observation where ``dones``).
            rews: true rewards, shape ``(n_envs,)``.
            dones: episode ended, shape ``(n_envs,)``.
            infos: the step infos; reset_infos: the infos of the auto-resets (render states).
        """
        ended = []
        for k, piece in enumerate(self._pieces):
            piece.acts.append(acts[k])
            piece.rews.append(float(rews[k]))
            info = infos[k]
            if dones[k]:
                piece.obs.append(info["terminal_observation"])
                if piece.states is not None:
                    piece.states.append(info[RENDER_STATE_KEY])
                terminal = not info.get("TimeLimit.truncated", False)
                ended.append((k, self._finish(piece, terminal)))
                self._pieces[k] = self._new_piece(obs[k], reset_infos[k])
            else:
                piece.obs.append(obs[k])
                if piece.states is not None:
                    piece.states.append(info[RENDER_STATE_KEY])
        return ended

    def flush(self) -> list[tuple[int, Trajectory]]:
        """End every piece that has at least one step (``terminal=False``) and start the next
        one at its last observation, so that the episodes continue."""
        ended = []
        for k, piece in enumerate(self._pieces):
            if piece.acts:
                ended.append((k, self._finish(piece, terminal=False)))
                states = None if piece.states is None else [piece.states[-1]]
                self._pieces[k] = _Piece(obs=[piece.obs[-1]], states=states)
        return ended

    @staticmethod
    def _finish(piece: _Piece, terminal: bool) -> Trajectory:
        return Trajectory(
            obs=np.stack(piece.obs),
            acts=np.stack(piece.acts),
            rews=np.asarray(piece.rews, dtype=np.float32),
            terminal=terminal,
            render_states=None if piece.states is None else np.stack(piece.states),
        )
