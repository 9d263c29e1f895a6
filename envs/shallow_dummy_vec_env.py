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
    fresh arrays, so copying the dicts shallowly is as safe; the deep copy cost about
    0.2 ms per 4-env MuJoCo step, as much as a fifth of the simulation itself. The
    observation buffers are copied with ``np.copy`` rather than ``deepcopy``, too.
    """

    def _obs_from_buf(self) -> VecEnvObs:
        return dict_to_obs(self.observation_space, {k: np.copy(v) for k, v in self.buf_obs.items()})

    def step_wait(self) -> VecEnvStepReturn:
        if self.keys != [None]:  # Dict or Tuple observations
            return self._step_wait_any()
        # One array of observations: written straight into the buffer, and every step's info
        # dicts handed on as they are (the envs build new ones on every step).
        buf_obs, rews, dones, infos = (
            self.buf_obs[None],
            self.buf_rews,
            self.buf_dones,
            self.buf_infos,
        )
        for i, (env, action) in enumerate(zip(self.envs, self.actions, strict=True)):
            obs, rews[i], terminated, truncated, info = env.step(action)
            done = dones[i] = terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            if done:
                info["terminal_observation"] = obs
                obs, self.reset_infos[i] = env.reset()
            buf_obs[i] = obs
            infos[i] = info
        return buf_obs.copy(), rews.copy(), dones.copy(), list(infos)

    def _step_wait_any(self) -> VecEnvStepReturn:
        for i in range(self.num_envs):
            obs, self.buf_rews[i], terminated, truncated, info = self.envs[i].step(self.actions[i])
            self.buf_dones[i] = terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            if self.buf_dones[i]:
                info["terminal_observation"] = obs
                obs, self.reset_infos[i] = self.envs[i].reset()
            self.buf_infos[i] = info
            self._save_obs(i, obs)
        infos = [dict(info) for info in self.buf_infos]
        return self._obs_from_buf(), np.copy(self.buf_rews), np.copy(self.buf_dones), infos
