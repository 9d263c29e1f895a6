"""Cutting the policy's experience into fixed-length segments as it runs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from rlkit.core.types import Segment

RENDER_STATE_KEY = "render_state"


class _EnvTrace:
    """The steps of one env's current episode since the last cut."""

    def __init__(self) -> None:
        self.obs: list[np.ndarray] = []
        self.acts: list[np.ndarray] = []
        self.rews: list[float] = []
        self.states: list[np.ndarray] = []
        self.episode_step = 0

    def clear(self) -> None:
        self.obs.clear()
        self.acts.clear()
        self.rews.clear()
        self.states.clear()


class SegmentRecorder(VecEnvWrapper):
    """Records ``(o_t, a_t, r_t, render_state_t)`` per env and emits every ``length`` steps a Segment.

    Segments are consecutive, non-overlapping windows within one episode; the tail of an
    episode shorter than ``length`` is dropped. The render state is taken from the env's
    ``info["render_state"]`` of the observation the action was taken at (the reset info for
    the first step of an episode), so a clip shows exactly the frames the agent saw.

    Args:
        venv: the env; build it with ``EnvSpec(render_state=True)`` to keep render states.
        length: segment length in agent steps.
        on_segment: called with each new segment (e.g. ``pool.add``).
        env_id: recorded as the segments' provenance.
    """

    def __init__(
        self, venv: VecEnv, length: int, on_segment: Callable[[Segment], object], env_id: str = ""
    ) -> None:
        super().__init__(venv)
        if length < 1:
            raise ValueError(f"segment length must be >= 1, got {length}")
        self.length = length
        self.on_segment = on_segment
        self.env_id = env_id
        self.total_steps = 0
        self.episodes_done = 0
        self.episode_steps_done = 0  # summed over finished episodes: their mean length
        self.traces = [_EnvTrace() for _ in range(self.num_envs)]
        self._obs: np.ndarray | None = None
        self._states: list[np.ndarray | None] = [None] * self.num_envs
        self._actions: np.ndarray | None = None

    def _reset_state(self, i: int) -> np.ndarray | None:
        infos = getattr(self.venv, "reset_infos", None)
        if infos is None or i >= len(infos):
            return None
        return infos[i].get(RENDER_STATE_KEY)

    def reset(self) -> np.ndarray:
        self._obs = self.venv.reset()
        for i, trace in enumerate(self.traces):
            trace.clear()
            trace.episode_step = 0
            self._states[i] = self._reset_state(i)
        return self._obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)
        self.venv.step_async(actions)

    def step_wait(self):
        obs, rews, dones, infos = self.venv.step_wait()
        assert self._obs is not None and self._actions is not None, "reset() before step()"
        self.total_steps += self.num_envs
        for i, trace in enumerate(self.traces):
            trace.obs.append(self._obs[i].copy())
            trace.acts.append(np.array(self._actions[i]))
            trace.rews.append(float(rews[i]))
            state = self._states[i]
            if state is not None:
                trace.states.append(state)
            trace.episode_step += 1
            if len(trace.acts) == self.length:
                self._emit(i, trace)
            if dones[i]:
                self.episodes_done += 1
                self.episode_steps_done += trace.episode_step
                trace.clear()
                trace.episode_step = 0
                self._states[i] = self._reset_state(i)
            else:
                self._states[i] = infos[i].get(RENDER_STATE_KEY)
        self._obs = obs
        return obs, rews, dones, infos

    def _emit(self, i: int, trace: _EnvTrace) -> None:
        states = np.stack(trace.states) if len(trace.states) == self.length else None
        seg = Segment(
            obs=np.stack(trace.obs), acts=np.stack(trace.acts),
            true_rews=np.asarray(trace.rews, dtype=np.float64), render_state=states,
            env_id=self.env_id, env_index=i, step=self.total_steps,
            episode_start=trace.episode_step - self.length,
        )  # fmt: skip
        trace.clear()
        self.on_segment(seg)
