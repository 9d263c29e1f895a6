"""SB3's DummyVecEnv without a deep copy of every step's infos."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn
from stable_baselines3.common.vec_env.util import dict_to_obs


class ShallowDummyVecEnv(DummyVecEnv):
    """Steps the envs in turn in this process, like :class:`DummyVecEnv`.

    SB3 deep-copies the list of info dicts on every step, in case an env hands back the same
    dict twice. Gymnasium's envs and wrappers build a fresh dict on every step, and the
    render states this package puts into ``info`` (MuJoCo qpos/qvel, Atari RGB frames) are
    fresh arrays, so the step's own dicts are handed on, in a new list; the deep copy cost
    about 0.2 ms per 4-env MuJoCo step, as much as a fifth of the simulation itself. The
    observation buffers are copied with ``np.copy`` rather than ``deepcopy``, too.
    """

    def _obs_from_buf(self) -> VecEnvObs:
        return dict_to_obs(self.observation_space, {k: np.copy(v) for k, v in self.buf_obs.items()})

    def step_wait(self) -> VecEnvStepReturn:
        """Step every env in turn, resetting those that end (``terminal_observation`` and
        ``TimeLimit.truncated`` in their infos, as SB3 does); returns ``obs (n_envs,
        *obs_shape)``, ``rews (n_envs,)``, ``dones (n_envs,)`` and the envs' own infos."""
        # One array of observations (not Dict or Tuple) is written straight into its buffer.
        flat = self.buf_obs[None] if self.keys == [None] else None
        for i, (env, action) in enumerate(zip(self.envs, self.actions, strict=True)):
            obs, self.buf_rews[i], terminated, truncated, info = env.step(action)
            done = self.buf_dones[i] = terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            if done:
                info["terminal_observation"] = obs
                obs, self.reset_infos[i] = env.reset()
            self.buf_infos[i] = info
            if flat is not None:
                flat[i] = obs
            else:
                self._save_obs(i, obs)
        obs = flat.copy() if flat is not None else self._obs_from_buf()
        return obs, self.buf_rews.copy(), self.buf_dones.copy(), list(self.buf_infos)
