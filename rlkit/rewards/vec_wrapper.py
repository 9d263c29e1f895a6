"""Replacing the environment's reward with the learned one, for any SB3 algorithm."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from rlkit.rewards.ensemble import RewardEnsemble

RewardPrior = Callable[[np.ndarray, np.ndarray], np.ndarray]

TRUE_REWARD_KEY = "true_reward"


class LearnedRewardVecEnv(VecEnvWrapper):
    """Hands the policy ``scale * r_hat(o_t, a_t)`` and keeps the true reward in ``info["true_reward"]``.

    ``r_hat`` is the mean of the ensemble's members, each normalized to zero mean and unit
    std over recent data, divided by that mean's own std over the same data
    (:meth:`RewardEnsemble.reward`), and ``scale`` (1 for MuJoCo, 0.05 for Atari in the
    paper) is the std of the policy's reward. The ensemble keeps training while the policy
    runs (a non-stationary reward), which this wrapper sees at the next step.

    ``prior`` (optional) is a fixed reward ``r0(obs_batch, act_batch) -> (B,)`` added to the
    learned one, weighted by ``prior_weight``: for instance the posterior mean or a
    risk-averse combination from Inverse Reward Design
    (:func:`rlkit.rewards.ird.rollouts.posterior_reward_fn`), so that what the designer's proxy
    says shapes behaviour where the comparisons have not spoken yet.

    ``deferred=True`` leaves the learned part out of each step (the policy then gets only
    the prior, or 0) for :class:`rlkit.rewards.rollout_reward.RolloutRewardCallback` to add
    for a whole on-policy rollout in one batched pass: the same rewards, without one small
    forward pass per env step.
    """

    def __init__(
        self,
        venv: VecEnv,
        ensemble: RewardEnsemble,
        scale: float = 1.0,
        prior: RewardPrior | None = None,
        prior_weight: float = 1.0,
        deferred: bool = False,
    ) -> None:
        super().__init__(venv)
        self.ensemble = ensemble
        self.scale = float(scale)
        self.prior = prior
        self.prior_weight = float(prior_weight)
        self.deferred = deferred
        self._last_obs: np.ndarray | None = None
        self._actions: np.ndarray | None = None

    @torch.no_grad()
    def learned_reward(self, obs: np.ndarray, acts: np.ndarray, chunk: int = 8192) -> np.ndarray:
        """``scale * r_hat``: ``(B, *obs_shape), (B, *act_shape) -> (B,)`` float32, in chunks."""
        out = [
            self.ensemble.reward(
                torch.as_tensor(obs[i : i + chunk]), torch.as_tensor(acts[i : i + chunk])
            )
            for i in range(0, len(obs), chunk)
        ]
        return (self.scale * torch.cat(out).numpy()).astype(np.float32)

    def reset(self) -> np.ndarray:
        """Reset the envs; observations ``(n_envs, *obs_shape)``, kept for the next reward."""
        self._last_obs = self.venv.reset()
        return self._last_obs

    def step_async(self, actions: np.ndarray) -> None:
        """Keep ``actions`` ``(n_envs, *act_shape)`` for the reward and pass them on."""
        self._actions = actions
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        """Step the envs; rewards ``(n_envs,)`` float32 are the learned ones (0 if ``deferred``)
        plus the weighted prior, at the observations the actions were taken at, each true reward
        kept in its ``info["true_reward"]``.

        Raises:
            RuntimeError: :meth:`reset` was not called first.
        """
        obs, true_rews, dones, infos = self.venv.step_wait()
        if self._last_obs is None or self._actions is None:
            raise RuntimeError("LearnedRewardVecEnv: reset() must be called before step()")
        if self.deferred:
            rews = np.zeros(len(true_rews), dtype=np.float32)
        else:
            rews = self.learned_reward(self._last_obs, self._actions)
        if self.prior is not None:
            rews = rews + self.prior_weight * np.asarray(self.prior(self._last_obs, self._actions))
        rews = rews.astype(np.float32)
        for info, true_r in zip(infos, true_rews, strict=True):
            info[TRUE_REWARD_KEY] = float(true_r)
        self._last_obs = obs
        return obs, rews, dones, infos
