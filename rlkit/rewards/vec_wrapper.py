"""Replacing the environment's reward with the learned one, for any SB3 algorithm."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from rlkit.rewards.ensemble import RewardEnsemble

RewardPrior = Callable[[np.ndarray, np.ndarray], np.ndarray]

TRUE_REWARD_KEY = "true_reward"


class LearnedRewardVecEnv(VecEnvWrapper):
    """Hands the policy ``scale * r_hat(o_t, a_t)`` and keeps the true reward in ``info["true_reward"]``.

    ``r_hat`` is the ensemble's normalized mean (zero mean, unit std per member over recent
    data), so ``scale`` is the reward's standard deviation: 1 for MuJoCo, 0.05 for Atari
    in the paper. The ensemble keeps training while the policy runs (a non-stationary
    reward), which this wrapper sees at the next step.

    ``prior`` (optional) is a fixed reward ``r0(obs_batch, act_batch) -> (B,)`` added to the
    learned one, weighted by ``prior_weight``: for instance the posterior mean or a
    risk-averse combination from Inverse Reward Design
    (:func:`rlkit.rewards.ird.rollouts.posterior_reward_fn`), so that what the designer's proxy
    says shapes behaviour where the comparisons have not spoken yet.
    """

    def __init__(
        self,
        venv: VecEnv,
        ensemble: RewardEnsemble,
        scale: float = 1.0,
        prior: RewardPrior | None = None,
        prior_weight: float = 1.0,
    ) -> None:
        super().__init__(venv)
        self.ensemble = ensemble
        self.scale = float(scale)
        self.prior = prior
        self.prior_weight = float(prior_weight)
        self._last_obs: np.ndarray | None = None
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        self._last_obs = self.venv.reset()
        return self._last_obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions
        self.venv.step_async(actions)

    def step_wait(self):
        obs, true_rews, dones, infos = self.venv.step_wait()
        if self._last_obs is None or self._actions is None:
            raise RuntimeError("LearnedRewardVecEnv: reset() must be called before step()")
        with torch.no_grad():
            learned = self.ensemble.reward(
                torch.as_tensor(self._last_obs), torch.as_tensor(self._actions)
            )
        rews = self.scale * learned.numpy()
        if self.prior is not None:
            rews = rews + self.prior_weight * np.asarray(self.prior(self._last_obs, self._actions))
        rews = rews.astype(np.float32)
        for info, true_r in zip(infos, true_rews, strict=True):
            info[TRUE_REWARD_KEY] = float(true_r)
        self._last_obs = obs
        return obs, rews, dones, infos
