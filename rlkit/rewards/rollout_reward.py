"""The learned reward for a whole on-policy rollout in one batched pass.

Per env step, the learned reward is a forward pass of K small networks on a handful of
inputs: the cost is Python and dispatch overhead, paid 1,000s of times per rollout, about as
much as the policy's own forward pass. On-policy algorithms (A2C, TRPO, PPO) only need the
rewards when the rollout is complete, and the reward model does not change during a
rollout, so this callback computes them once, on the whole buffer, and recomputes the
returns and advantages. The policy sees exactly the rewards a per-step wrapper would give.
"""

from __future__ import annotations

from collections import deque

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

    ``episode_returns`` holds the learned return (the sum of the learned rewards the policy
    was given, prior and bootstrap left out) of each of the last ``keep`` episodes that ended,
    to set beside SB3's true ones (``ep_info_buffer``, also the last 100). An episode that spans
    rollouts is summed across them; one whose env was reset mid-way (a new ``learn``) starts
    again at 0.
    """

    def __init__(self, reward_env: LearnedRewardVecEnv, keep: int = 100) -> None:
        super().__init__()
        if not reward_env.deferred:
            raise ValueError("RolloutRewardCallback needs LearnedRewardVecEnv(deferred=True)")
        self.reward_env = reward_env
        self.last_mean = float("nan")
        self.episode_returns: deque[float] = deque(maxlen=keep)
        self._running: np.ndarray | None = None  # (n_envs,) the unfinished episodes' sums

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
        self._add_episodes(learned, buf.episode_starts, np.asarray(self.locals["dones"]))

    def _add_episodes(
        self, learned: np.ndarray, starts: np.ndarray, last_dones: np.ndarray
    ) -> None:
        """Sum each env's learned rewards ``(n_steps, n_envs)`` into its episodes.

        ``starts[t]``: step t's observation began an episode (SB3's ``episode_starts``, the
        previous step's ``done``); ``last_dones``: the rollout's last step ended one.
        """
        n_envs = learned.shape[1]
        running = self._running
        if running is None or running.shape != (n_envs,):
            running = np.zeros(n_envs)
        running[starts[0].astype(bool)] = 0.0  # a reset since the last rollout
        ends = np.concatenate([starts[1:], last_dones.reshape(1, n_envs)]).astype(bool)
        sums = np.cumsum(learned, axis=0, dtype=np.float64)
        for t, e in zip(*np.nonzero(ends), strict=True):  # in time order, then env
            self.episode_returns.append(float(running[e] + sums[t, e]))
            running[e] = -sums[t, e]  # the next episode's sum starts after step t
        self._running = running + sums[-1]

    def state_dict(self) -> dict:
        """The unfinished episodes' sums and the finished episodes' returns (checkpoints)."""
        running = None if self._running is None else self._running.tolist()
        return {"running": running, "episode_returns": list(self.episode_returns)}

    def load_state_dict(self, state: dict, envs_kept: bool = True) -> None:
        """Restore :meth:`state_dict`; ``envs_kept``: the envs came back mid-episode (else the
        unfinished sums are dropped, as the envs start new episodes)."""
        self.episode_returns.clear()
        self.episode_returns.extend(float(r) for r in state["episode_returns"])
        running = state["running"] if envs_kept else None
        self._running = None if running is None else np.asarray(running, dtype=np.float64)

    @property
    def mean_episode_return(self) -> float:
        """Mean learned return of the kept episodes (NaN before one has ended)."""
        return float(np.mean(self.episode_returns)) if self.episode_returns else float("nan")
