"""On-policy rollouts collected by the env workers themselves: one call per worker per rollout.

SB3's on-policy algorithms step their VecEnv once per env step, running the policy on the
driver in between. When the envs live in other processes (Ray workers), that is one round
trip per step. Here each worker holds a copy of the policy instead: the driver sends the
weights once per rollout, each worker samples actions, values and log-probabilities for all
``n_steps`` steps of its envs, and the driver gets the whole rollout in one reply.

The driver then *replays* the rollout through its own VecEnv wrappers (segment recorder,
learned reward, frame stack, ...) step by step, exactly as SB3's ``collect_rollouts`` would
have stepped them, with the workers' actions and the steps they already took. Nothing but the
source of the actions changes, so callbacks, info buffers and time-limit bootstrapping work as
before.

A VecEnv offers this by having a ``worker_rollouts`` attribute that is True and a method
``rollout(policy, n_steps, weights) -> RolloutPlan`` (:class:`WorkerRolloutSource`) that
queues the steps for replay; :class:`rlkit.distributed.RayVecEnv` does. This module imports
no Ray.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from rlkit.core.policy_weights import PolicyWeights
from rlkit.core.rollout_plan import RolloutPlan

__all__ = [
    "PolicyWeights",
    "RandomRolloutPolicy",
    "RolloutPlan",
    "RolloutPolicy",
    "WorkerRolloutSource",
    "WorkerRolloutsMixin",
    "env_actions",
    "rollout_source",
]


def _no_schedule(_: float) -> float:
    """A picklable learning-rate schedule for a policy that is never optimized."""
    return 0.0


def env_actions(policy: ActorCriticPolicy, space: spaces.Space, actions: np.ndarray) -> np.ndarray:
    """The actions the env is given for the policy's sampled ``actions``, as SB3's
    ``collect_rollouts`` computes them (unsquashed, or clipped to a Box's bounds)."""
    if not isinstance(space, spaces.Box):
        return actions
    if policy.squash_output:
        return policy.unscale_action(actions)
    return np.clip(actions, space.low, space.high)


class RolloutPolicy:
    """A picklable copy of an SB3 actor-critic policy for the workers, built from the policy's
    constructor parameters (the policy object itself may not pickle: ``EntropyTRPO`` patches
    a closure onto it); weights come through :meth:`load_state_dict` (a ``state_dict`` or
    :class:`PolicyWeights`).

    ``__call__(obs)`` takes the envs' observations ``(n_envs, *obs_shape)`` (channels last
    for images; transposed here when the policy takes channels first, as SB3's
    ``VecTransposeImage`` does on the driver) and returns ``(actions, values, log_probs)``
    with shapes ``(n_envs, *act_shape)``, ``(n_envs,)``, ``(n_envs,)``: the policy's
    ``forward`` with torch's generator (seed it on the worker), in inference mode and
    without ``torch.distributions``' argument checks (switched off for the call, for the
    whole process: a worker's).
    """

    def __init__(self, policy: ActorCriticPolicy) -> None:
        self.policy_class = type(policy)
        params = dict(policy._get_constructor_parameters())
        params["lr_schedule"] = _no_schedule
        self.params = params
        self._policy: ActorCriticPolicy | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_policy": None}

    @property
    def policy(self) -> ActorCriticPolicy:
        """The CPU policy, built on first use without touching torch's generator, in eval
        mode."""
        if self._policy is None:
            # Its initial weights are overwritten anyway: drawing them leaves the worker's
            # generator, which samples the actions, where it was (a resumed run's workers
            # build their copy again, and must draw the same actions as they would have).
            with th.random.fork_rng(devices=[]):
                self._policy = self.policy_class(**self.params).to("cpu")
            self._policy.set_training_mode(False)
        return self._policy

    def load_state_dict(self, weights: Mapping[str, Any] | PolicyWeights) -> None:
        """Load the driver's policy weights (a ``state_dict`` or :class:`PolicyWeights`)."""
        self.policy.load_state_dict(PolicyWeights.unwrap(weights))

    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``obs (n_envs, *obs_shape)`` -> ``actions (n_envs, *act_shape)``, ``values
        (n_envs,)``, ``log_probs (n_envs,)`` (see the class docstring)."""
        policy = self.policy
        want = policy.observation_space.shape
        if obs.shape[1:] != want and obs.ndim == 4 and obs.shape[1:] == (*want[1:], want[0]):
            obs = np.transpose(obs, (0, 3, 1, 2))
        # No argument checks in the distributions (a fifth of the call; the driver's TRPO
        # turns them off too) and no autograd bookkeeping at all.
        validate = th.distributions.Distribution._validate_args
        th.distributions.Distribution.set_default_validate_args(False)
        try:
            with th.inference_mode():
                actions, values, log_probs = policy(obs_as_tensor(obs, th.device("cpu")))
        finally:
            th.distributions.Distribution.set_default_validate_args(validate)
        return actions.numpy(), values.flatten().numpy(), log_probs.numpy()

    def env_actions(self, actions: np.ndarray) -> np.ndarray:
        """What the env is given for ``actions`` (see :func:`env_actions`)."""
        return env_actions(self.policy, self.policy.action_space, actions)


class RandomRolloutPolicy:
    """Uniformly random actions (Discrete or Box) for a worker's rollout, drawn with torch's
    generator, which each worker seeds on its own; values and log-probabilities are zeros.
    For filling a segment pool before there is a policy."""

    def __init__(self, action_space: spaces.Space) -> None:
        if not isinstance(action_space, spaces.Discrete | spaces.Box):
            raise TypeError(f"RandomRolloutPolicy takes Discrete or Box, got {action_space}")
        self.action_space = action_space
        if isinstance(action_space, spaces.Box):  # the bounds once, not at every step
            self._low = np.broadcast_to(action_space.low, action_space.shape).astype(np.float64)
            self._span = np.broadcast_to(action_space.high, action_space.shape) - self._low

    def load_state_dict(self, weights: Any) -> None:
        """Always raises TypeError: a random policy has no weights to load."""
        raise TypeError("RandomRolloutPolicy has no weights")

    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Random ``actions (n_envs, *act_shape)`` for ``obs (n_envs, ...)``, with zero
        ``values (n_envs,)`` and ``log_probs (n_envs,)`` (float32)."""
        n, space = len(obs), self.action_space
        if isinstance(space, spaces.Discrete):
            actions = (space.start + th.randint(int(space.n), (n,))).numpy()
        else:
            u = th.rand((n, *space.shape), dtype=th.float64).numpy()
            actions = (self._low + self._span * u).astype(space.dtype)
        return actions, np.zeros(n, np.float32), np.zeros(n, np.float32)

    def env_actions(self, actions: np.ndarray) -> np.ndarray:
        """``actions`` unchanged: they are already within the action space."""
        return actions


class WorkerRolloutSource(Protocol):
    """A VecEnv whose workers take rollouts (see the module docstring)."""

    worker_rollouts: bool

    def rollout(
        self,
        policy: RolloutPolicy | RandomRolloutPolicy,
        n_steps: int,
        weights: PolicyWeights | None,
    ) -> RolloutPlan:
        """Have the workers take ``n_steps`` steps of their envs with ``policy`` (``weights``
        loaded; None: as they are) and queue the steps for replay by the next ``step`` calls.
        Returns the actions, values and log-probabilities of every step."""
        ...


def rollout_source(env: VecEnv) -> WorkerRolloutSource | None:
    """The VecEnv under ``env``'s wrappers if it rolls policies out on its workers."""
    while isinstance(env, VecEnvWrapper):
        env = env.venv
    return env if getattr(env, "worker_rollouts", False) else None  # type: ignore[return-value]


class WorkerRolloutsMixin:
    """For an SB3 on-policy algorithm: ``collect_rollouts`` with the workers' policy copies
    when the env offers it (see the module docstring), SB3's own otherwise (and with gSDE).
    The rollout buffer is filled with the same quantities SB3 stores."""

    _rollout_policy: tuple[ActorCriticPolicy, RolloutPolicy] | None = None

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_rollout_policy"]  # type: ignore[misc]

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """SB3's ``collect_rollouts``: fill ``rollout_buffer`` with ``n_rollout_steps`` steps
        of each env, the actions from the workers' rollout when ``env`` offers one. False when
        a callback stopped it (the remaining steps are still stepped through ``env``)."""
        algo: OnPolicyAlgorithm = self  # type: ignore[assignment]
        source = rollout_source(env)
        if source is None or algo.use_sde:
            return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)  # type: ignore[misc]
        assert algo._last_obs is not None, "No previous observation was provided"
        policy = algo.policy
        policy.set_training_mode(False)
        if self._rollout_policy is None or self._rollout_policy[0] is not policy:
            self._rollout_policy = (policy, RolloutPolicy(policy))
        rollout_buffer.reset()
        callback.on_rollout_start()
        weights = PolicyWeights.of(policy.state_dict())
        plan = source.rollout(self._rollout_policy[1], n_rollout_steps, weights)
        all_actions = plan.actions
        all_values = th.as_tensor(plan.values, dtype=th.float32)
        all_log_probs = th.as_tensor(plan.log_probs, dtype=th.float32)
        if plan.decide_first:
            with th.no_grad():
                first = policy(obs_as_tensor(algo._last_obs, algo.device))  # type: ignore[arg-type]
            for block in plan.decide_first:
                rows = slice(block.start, block.stop)
                all_actions[0, rows] = first[0].numpy()[rows]
                all_values[0, rows] = first[1].flatten()[rows]
                all_log_probs[0, rows] = first[2][rows]
        n_steps = 0
        dones = np.zeros(env.num_envs, dtype=bool)
        new_obs = algo._last_obs
        while n_steps < n_rollout_steps:
            actions = all_actions[n_steps]
            values = all_values[n_steps].reshape(-1, 1)
            log_probs = all_log_probs[n_steps]
            clipped_actions = env_actions(policy, algo.action_space, actions)
            new_obs, rewards, dones, infos = env.step(clipped_actions)
            algo.num_timesteps += env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                # The workers took the rest already: the wrappers see them too, the buffer not.
                algo._last_obs, algo._last_episode_starts = new_obs, dones  # type: ignore[assignment]
                for rest in all_actions[n_steps + 1 :]:
                    algo._last_obs, _, algo._last_episode_starts, _ = env.step(
                        env_actions(policy, algo.action_space, rest)
                    )
                    algo.num_timesteps += env.num_envs
                return False
            algo._update_info_buffer(infos, dones)
            n_steps += 1
            if isinstance(algo.action_space, spaces.Discrete):
                actions = actions.reshape(-1, 1)
            for idx, done in enumerate(dones):  # time limits: bootstrap, as SB3 does
                if (
                    done
                    and infos[idx].get("terminal_observation") is not None
                    and infos[idx].get("TimeLimit.truncated", False)
                ):
                    terminal_obs = policy.obs_to_tensor(infos[idx]["terminal_observation"])[0]
                    with th.no_grad():
                        terminal_value = policy.predict_values(terminal_obs)[0]  # type: ignore[arg-type]
                    rewards[idx] += algo.gamma * terminal_value
            rollout_buffer.add(
                algo._last_obs,  # type: ignore[arg-type]
                actions,
                rewards,
                algo._last_episode_starts,  # type: ignore[arg-type]
                values,
                log_probs,
            )
            algo._last_obs = new_obs  # type: ignore[assignment]
            algo._last_episode_starts = dones
        with th.no_grad():
            values = policy.predict_values(obs_as_tensor(new_obs, algo.device))  # type: ignore[arg-type]
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True
