"""The learned reward for a whole on-policy rollout in one batched pass.

Per env step, the learned reward is a forward pass of K small networks on a handful of
inputs: the cost is Python and dispatch overhead, paid 1,000s of times per rollout, about as
much as the policy's own forward pass. On-policy algorithms (A2C, TRPO, PPO) only need the
rewards when the rollout is complete, and the reward model does not change during a
rollout, so this callback computes them once, on the whole buffer, and recomputes the
returns and advantages. The policy sees exactly the rewards a per-step wrapper would give.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from rlkit.rewards.vec_wrapper import LearnedRewardVecEnv


def env_layout(obs: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Buffer observations ``(B, *buffer_shape)`` in the env's layout ``(B, *shape)``.

    SB3 transposes channels-last images to channels-first for its CNN policies
    (``VecTransposeImage``); the reward model sees the env's own layout.
    """
    if obs.shape[1:] == shape:
        return obs
    if len(shape) == 3 and obs.shape[1:] == (shape[2], shape[0], shape[1]):
        return np.ascontiguousarray(obs.transpose(0, 2, 3, 1))
    raise ValueError(f"rollout observations {obs.shape[1:]} do not match the env's {shape}")


class RolloutRewardCallback(BaseCallback):
    """Adds ``reward_env``'s learned reward to each finished rollout, then redoes GAE.

    Use with ``LearnedRewardVecEnv(..., deferred=True)`` under an on-policy SB3 algorithm:
    ``agent.learn(n, callback=RolloutRewardCallback(reward_env))``. The per-step rewards
    already in the buffer (the prior, and SB3's ``gamma * V(s_T)`` bootstrap at time-limit
    truncations) are kept and the learned reward is added to them. ``last_mean`` is the
    mean learned reward of the latest rollout (also logged as ``rollout/learned_reward``).
    """

    def __init__(self, reward_env: LearnedRewardVecEnv) -> None:
        super().__init__()
        if not reward_env.deferred:
            raise ValueError("RolloutRewardCallback needs LearnedRewardVecEnv(deferred=True)")
        self.reward_env = reward_env
        self.last_mean = float("nan")

    def _init_callback(self) -> None:
        if not isinstance(self.model, OnPolicyAlgorithm):
            raise TypeError(
                f"RolloutRewardCallback works with on-policy algorithms, not {type(self.model).__name__}"
            )

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buf = self.model.rollout_buffer
        n_steps, n_envs = buf.rewards.shape
        obs = buf.observations.reshape(n_steps * n_envs, *buf.observations.shape[2:])
        obs = env_layout(obs, self.reward_env.observation_space.shape)
        acts = buf.actions.reshape(n_steps * n_envs, *buf.actions.shape[2:])
        space = self.reward_env.action_space
        if isinstance(space, spaces.Box):  # what the env was given (see collect_rollouts)
            if self.model.policy.squash_output:
                acts = self.model.policy.unscale_action(acts)
            else:
                acts = np.clip(acts, space.low, space.high)
        learned = self.reward_env.learned_reward(obs, acts).reshape(n_steps, n_envs)
        buf.rewards += learned
        buf.compute_returns_and_advantage(
            last_values=self.locals["values"], dones=self.locals["dones"]
        )
        self.last_mean = float(learned.mean())
        self.logger.record("rollout/learned_reward", self.last_mean)
