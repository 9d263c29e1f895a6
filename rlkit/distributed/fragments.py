"""Cutting a vectorized env's step stream into per-env trajectory fragments.

Runs inside a rollout worker; pure numpy, so it is tested without Ray.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from envs.render_state import RENDER_STATE_KEY
from rlkit.core.types import Trajectory


@dataclasses.dataclass(frozen=True)
class _Ending:
    """Env ``k``'s piece over steps ``first .. stop - 1`` of the chunk ended in an episode end."""

    k: int
    first: int
    stop: int
    last_obs: np.ndarray
    last_state: np.ndarray | None
    terminal: bool


@dataclasses.dataclass(frozen=True)
class PackedFrames:
    """A :class:`Trajectory` whose observations are stacks of the last ``S`` frames (Atari's
    ``(H, W, S)`` channels-last stacks), kept as the frames themselves: a quarter of the bytes
    to pickle, put in the object store and send over the network.

    Within a piece each observation is the one before it shifted by one frame (an episode's
    end only ever ends a piece), so ``obs[t][..., j] == frames[t + j]``: ``frames[:S]`` is the
    first observation's stack, then one new frame per step, the last observation's included.

    Attributes:
        frames: ``(T + S, H, W)``.
        acts, rews, terminal, render_states, truncated: as in :class:`Trajectory`.
    """

    frames: np.ndarray
    acts: np.ndarray
    rews: np.ndarray
    terminal: bool
    render_states: np.ndarray | None = None
    truncated: bool = False

    def unpack(self) -> Trajectory:
        """The trajectory, its ``obs`` (shape ``(T + 1, H, W, S)``) a read-only view of the
        frames (no copy)."""
        n_stack = len(self.frames) - len(self.acts)
        return Trajectory(
            obs=sliding_window_view(self.frames, n_stack, axis=0),
            acts=self.acts,
            rews=self.rews,
            terminal=self.terminal,
            render_states=self.render_states,
            truncated=self.truncated,
        )


class FragmentRecorder:
    """Follows ``n_envs`` auto-resetting envs (SB3 VecEnv conventions) and emits
    :class:`Trajectory` pieces.

    A piece ends at an episode's end (``terminal``, or ``truncated`` where a time limit cut the
    episode, ``info["TimeLimit.truncated"]``; its last observation is
    ``info["terminal_observation"]``) or when :meth:`flush` is called (neither flag: the next
    piece of that env goes on from its last observation).
    With ``render_state`` each piece also carries ``info["render_state"]`` per observation.

    Steps are kept as they come, one batch per step (no per-env work at a step unless an
    episode ended there), and cut into pieces by :meth:`flush` (see :class:`_Cutter`). The
    observations and actions a step is given are kept, not copied: SB3's VecEnvs return new
    arrays on every step, and :class:`~rlkit.distributed.worker.RolloutWorker` copies the
    policy's actions.
    """

    def __init__(self, n_envs: int, render_state: bool) -> None:
        self.n_envs = n_envs
        self.render_state = render_state
        self._obs: list[np.ndarray] = []  # chunk step i's observations, (n_envs, *obs_shape)
        self._acts: list[np.ndarray] = []  # the actions taken at them, (n_envs, *act_shape)
        self._rews: list[np.ndarray] = []  # and the rewards, (n_envs,)
        self._states: list[list[np.ndarray]] = []  # render states of _obs[i], per env
        self._first = [0] * n_envs  # chunk step at which each env's current piece began
        self._endings: list[_Ending] = []

    def start(self, obs: np.ndarray, infos: list[dict[str, Any]]) -> None:
        """Begin a piece per env at ``obs`` (shape ``(n_envs, *obs_shape)``); ``infos`` are the
        reset infos (carrying the render state of ``obs``)."""
        self._obs, self._acts, self._rews, self._endings = [obs], [], [], []
        self._states = [[info[RENDER_STATE_KEY] for info in infos]] if self.render_state else []
        self._first = [0] * self.n_envs

    def record(
        self,
        acts: np.ndarray,
        obs: np.ndarray,
        rews: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
        reset_infos: list[dict[str, Any]],
    ) -> None:
        """Add one step of every env.

        Args:
            acts: actions taken, shape ``(n_envs, *act_shape)``.
            obs: observations after the step (a reset observation where ``dones``).
            rews: true rewards, shape ``(n_envs,)``.
            dones: episode ended, shape ``(n_envs,)``.
            infos: the step infos; reset_infos: the infos of the auto-resets (render states;
                only read where ``dones``).
        """
        stop = len(self._acts) + 1
        self._acts.append(acts)
        self._rews.append(rews)
        self._obs.append(obs)
        states = [info[RENDER_STATE_KEY] for info in infos] if self.render_state else None
        for k in np.flatnonzero(dones):
            info = infos[k]
            last_state = None
            if states is not None:
                last_state = states[k]
                states[k] = reset_infos[k][RENDER_STATE_KEY]
            terminal = not info.get("TimeLimit.truncated", False)
            self._endings.append(
                _Ending(
                    int(k), self._first[k], stop, info["terminal_observation"], last_state, terminal
                )
            )
            self._first[k] = stop
        if states is not None:
            self._states.append(states)

    def flush(self, pack_frames: bool = False) -> list[tuple[int, Trajectory | PackedFrames]]:
        """Every piece since :meth:`start` or the last flush, as ``(env index, piece)`` pairs
        ordered by time of completion: those that ended in an episode end, then every env's
        unfinished piece (``terminal=False``, if it has a step). The next pieces start at the
        last observations, so that the episodes continue.

        ``pack_frames``: the observations are stacked frames (``(H, W, S)``, newest last, as
        ``envs.frame_stack.AtariFrameStack`` gives them); each piece comes as
        :class:`PackedFrames`."""
        steps = len(self._acts)
        if steps == 0:
            return []
        cut = _Cutter(
            self._obs,
            self._acts,
            self._rews,
            self._states if self.render_state else None,
            pack_frames,
        )
        out = [
            (e.k, cut.piece(e.k, e.first, e.stop, e.last_obs, e.last_state, e.terminal, True))
            for e in self._endings
        ]
        for k, first in enumerate(self._first):
            if first < steps:
                state = self._states[steps][k] if self.render_state else None
                piece = cut.piece(k, first, steps, self._obs[steps][k], state, False, False)
                out.append((k, piece))
        self._obs, self._acts, self._rews = [self._obs[-1]], [], []
        self._states = self._states[-1:]
        self._first = [0] * self.n_envs
        self._endings = []
        return out


#: Observations up to this size (bytes per env) are stacked for all envs and steps at once
#: and cut from there; larger ones (Atari frames) are gathered per piece, one copy each.
_STACK_ALL_BYTES = 1024


class _Cutter:
    """Cuts one chunk of steps (lists with one entry per step) into pieces.

    Actions, rewards and small observations are stacked into ``(steps, n_envs, ...)`` arrays
    once and sliced per piece: a few large copies instead of Python-level work per env and
    step (0.6 instead of 1.5 us per Hopper env step, about 1% of the step itself). Large
    observations (Atari's stacked frames) and render states are gathered per piece, so that
    each is copied only once.
    """

    def __init__(
        self,
        obs: list[np.ndarray],
        acts: list[np.ndarray],
        rews: list[np.ndarray],
        states: list[list[np.ndarray]] | None,
        pack_frames: bool = False,
    ) -> None:
        self.obs, self.states, self.pack_frames = obs, states, pack_frames
        self.acts = np.stack(acts)
        self.rews = np.stack(rews).astype(np.float32, copy=False)
        small = obs[0][0].nbytes <= _STACK_ALL_BYTES and not pack_frames
        self.stacked_obs = np.stack(obs) if small else None

    def piece(
        self,
        k: int,
        first: int,
        stop: int,
        last_obs: np.ndarray,
        last_state: np.ndarray | None,
        terminal: bool,
        ended: bool,
    ) -> Trajectory | PackedFrames:
        """Env ``k``'s steps ``first .. stop - 1`` of the chunk, ending at ``last_obs`` (whose
        render state is ``last_state``); ``ended``: the episode ended there."""
        truncated = ended and not terminal
        states = None
        if self.states is not None:
            states = np.stack([s[k] for s in self.states[first:stop]] + [last_state])
        acts = np.ascontiguousarray(self.acts[first:stop, k])
        rews = np.ascontiguousarray(self.rews[first:stop, k])
        if self.pack_frames:
            start = self.obs[first][k]  # (H, W, S): the piece's first stack
            n_stack = start.shape[-1]
            frames = np.empty((stop - first + n_stack, *start.shape[:-1]), start.dtype)
            frames[:n_stack] = np.moveaxis(start, -1, 0)
            for j, o in enumerate(self.obs[first + 1 : stop], start=n_stack):
                frames[j] = o[k][..., -1]
            frames[-1] = np.asarray(last_obs)[..., -1]
            return PackedFrames(frames, acts, rews, terminal, states, truncated)
        if self.stacked_obs is not None:
            obs = np.concatenate([self.stacked_obs[first:stop, k], np.asarray(last_obs)[None]])
        else:
            obs = np.stack([o[k] for o in self.obs[first:stop]] + [np.asarray(last_obs)])
        return Trajectory(obs, acts, rews, terminal, states, truncated)
