"""Cutting the policy's experience into fixed-length segments as it runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from rlkit.core.types import Segment, Trajectory

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

    def restart(self) -> None:
        """Empty, at the start of a new episode."""
        self.clear()
        self.episode_step = 0

    def add(self, obs: np.ndarray, act: np.ndarray, rew: float, state: np.ndarray | None) -> int:
        """One more step of the episode; returns how many steps are held."""
        self.obs.append(obs)
        self.acts.append(act)
        self.rews.append(float(rew))
        if state is not None:
            self.states.append(state)
        self.episode_step += 1
        return len(self.acts)

    def cut(self, length: int, env_id: str, env_index: int, step: int) -> Segment:
        """The ``length`` steps held as a Segment (render states if every step has one);
        the trace is emptied, its episode goes on."""
        states = np.stack(self.states) if len(self.states) == length else None
        seg = Segment(
            obs=np.stack(self.obs), acts=np.stack(self.acts),
            true_rews=np.asarray(self.rews, dtype=np.float64), render_state=states,
            env_id=env_id, env_index=env_index, step=step,
            episode_start=self.episode_step - length,
        )  # fmt: skip
        self.clear()
        return seg


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
        """Reset the envs and restart every trace; observations ``(n_envs, *obs_shape)``."""
        self._obs = self.venv.reset()
        for i, trace in enumerate(self.traces):
            trace.restart()
            self._states[i] = self._reset_state(i)
        return self._obs

    def step_async(self, actions: np.ndarray) -> None:
        """Keep ``actions`` ``(n_envs, *act_shape)`` for the traces and pass them on."""
        self._actions = np.asarray(actions)
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        """Step every env and record the step; an env holding ``length`` steps of its episode
        emits them as a Segment to ``on_segment``. Returns the wrapped env's
        ``(obs, rews, dones, infos)`` unchanged."""
        obs, rews, dones, infos = self.venv.step_wait()
        assert self._obs is not None and self._actions is not None, "reset() before step()"
        self.total_steps += self.num_envs
        for i, trace in enumerate(self.traces):
            held = trace.add(
                self._obs[i].copy(), np.array(self._actions[i]), rews[i], self._states[i]
            )
            if held == self.length:
                self._emit(i, trace)
            if dones[i]:
                self.episodes_done += 1
                self.episode_steps_done += trace.episode_step
                trace.restart()
                self._states[i] = self._reset_state(i)
            else:
                self._states[i] = infos[i].get(RENDER_STATE_KEY)
        self._obs = obs
        return obs, rews, dones, infos

    def _emit(self, i: int, trace: _EnvTrace) -> None:
        self.on_segment(trace.cut(self.length, self.env_id, i, self.total_steps))


class FragmentSegmenter:
    """Cuts trajectory fragments (``FragmentSampler.sample_indexed``'s ``(env index,
    trajectory)`` pairs, call after call) into the segments a :class:`SegmentRecorder` cuts
    from the same steps: consecutive windows of ``length`` steps within one episode, each
    observation with the render state it was rendered from, the tail of an episode shorter
    than ``length`` dropped.

    An env's fragment with neither ``terminal`` nor ``truncated`` goes on in its next one; the
    next one only continues it if it starts at the same observation (a worker re-created in
    between starts new episodes, whose first steps must not join the old ones).

    Args:
        n_envs: the sampler's envs; ``Segment.step`` counts steps over all of them, as the
            recorder does when they step in lockstep.
        length, on_segment, env_id: as in :class:`SegmentRecorder`.
    """

    def __init__(
        self, n_envs: int, length: int, on_segment: Callable[[Segment], object], env_id: str = ""
    ) -> None:
        if length < 1:
            raise ValueError(f"segment length must be >= 1, got {length}")
        self.n_envs, self.length, self.on_segment, self.env_id = n_envs, length, on_segment, env_id
        self.traces = [_EnvTrace() for _ in range(n_envs)]
        self.steps = [0] * n_envs  # each env's steps so far
        self._last_obs: list[np.ndarray | None] = [None] * n_envs  # None: no episode goes on

    def add(self, pieces: Iterable[tuple[int, Trajectory]]) -> None:
        """Take one call's fragments, each env's in order of time."""
        for k, traj in pieces:
            trace, last = self.traces[k], self._last_obs[k]
            if last is None or not np.array_equal(last, traj.obs[0]):
                trace.restart()  # a new episode
            states = traj.render_states
            for t in range(len(traj)):
                state = None if states is None else states[t]
                held = trace.add(traj.obs[t], traj.acts[t], traj.rews[t], state)
                self.steps[k] += 1
                if held == self.length:
                    step = self.steps[k] * self.n_envs
                    self.on_segment(trace.cut(self.length, self.env_id, k, step))
            ended = traj.terminal or traj.truncated
            self._last_obs[k] = None if ended else traj.obs[-1]
