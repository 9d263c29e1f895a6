"""The DQN baseline (Stable-Baselines3) on the same envs and options as VPN.

Options last several primitive steps, so the bootstrap discount of a transition is
``gamma ** duration`` rather than a fixed ``gamma`` (semi-MDP Q-learning, as in the
paper's own DQN baseline). :class:`OptionReplayBuffer` stores each transition's duration
from ``info["duration"]`` and hands SB3's DQN the per-sample discount it supports. On
Collect the Q-network uses the same conv encoder as VPN; on Atari SB3's Nature CNN.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import ReplayBufferSamples, TrainFrequencyUnit
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from agents.presets import silent_logger
from agents.vpn.config import VPNConfig, check_memory
from agents.vpn.evaluation import evaluate_episodes, step_score
from agents.vpn.modules import CollectEncoder
from agents.vpn.trainer import (
    LOG_EVERY,
    discrete_options,
    resolve_run,
    start_run,
    write_summary,
)
from envs import EnvSpec, make_vec_env
from rlkit.core.checkpoint import CheckpointError, CheckpointManager
from rlkit.core.metrics import MetricsLogger
from rlkit.core.progress import make_progress
from rlkit.core.seeding import seed_everything
from rlkit.core.stop import GracefulStop


class OptionReplayBuffer(ReplayBuffer):
    """SB3's replay buffer plus each transition's option duration; samples carry
    ``discounts = gamma ** duration``, shape ``(B, 1)``."""

    def __init__(self, *args: Any, gamma: float = 0.98, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gamma = gamma
        self.durations = np.ones((self.buffer_size, self.n_envs), dtype=np.float32)

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Store one vector-env step (arrays ``(n_envs, ...)``) and each env's
        ``info["duration"]`` (1 when absent)."""
        self.durations[self.pos] = [info.get("duration", 1) for info in infos]
        super().add(obs, next_obs, action, reward, done, infos)

    def _get_samples(
        self, batch_inds: np.ndarray, env: VecNormalize | None = None
    ) -> ReplayBufferSamples:
        env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))
        dones = self.dones[batch_inds, env_indices] * (1 - self.timeouts[batch_inds, env_indices])
        data = (
            self._normalize_obs(self.observations[batch_inds, env_indices, :], env),
            self.actions[batch_inds, env_indices, :],
            self._normalize_obs(self.next_observations[batch_inds, env_indices, :], env),
            dones.reshape(-1, 1),
            self._normalize_reward(self.rewards[batch_inds, env_indices].reshape(-1, 1), env),
            (self.gamma ** self.durations[batch_inds, env_indices]).reshape(-1, 1),
        )
        return ReplayBufferSamples(*tuple(map(self.to_torch, data)))


class GridFeatures(BaseFeaturesExtractor):
    """VPN's Collect encoder, flattened: ``(B, 10, 10, 4) -> (B, C * 25)``."""

    def __init__(self, observation_space: gym.spaces.Box, channels: int = 16) -> None:
        encoder = CollectEncoder(tuple(observation_space.shape), channels)
        super().__init__(observation_space, int(np.prod(encoder.state_shape)))
        self.encoder = encoder

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Features ``(B, C * 25)`` of grid observations ``(B, 10, 10, 4)``."""
        return self.encoder(obs).flatten(1)


def make_dqn(cfg: VPNConfig, venv: VecEnv) -> DQN:
    """SB3 DQN with settings matched to the VPN run (steps, epsilon schedule, target sync, lr)."""
    grid = venv.observation_space.dtype != np.uint8
    policy_kwargs: dict[str, Any] = {"net_arch": [cfg.hidden]}
    if grid:
        policy_kwargs.update(
            features_extractor_class=GridFeatures,
            features_extractor_kwargs={"channels": cfg.channels},
        )
    return DQN(
        "MlpPolicy" if grid else "CnnPolicy",
        venv,
        learning_rate=cfg.learning_rate(),
        buffer_size=cfg.replay_size,
        learning_starts=cfg.learning_starts,
        batch_size=cfg.batch_sequences * cfg.n_step,
        gamma=cfg.discount(),
        train_freq=(cfg.train_freq, "step"),
        gradient_steps=1,
        target_update_interval=cfg.target_sync,
        exploration_fraction=cfg.eps_fraction,
        exploration_initial_eps=cfg.eps_start,
        exploration_final_eps=cfg.eps_end,
        max_grad_norm=cfg.max_grad_norm,
        replay_buffer_class=OptionReplayBuffer,
        replay_buffer_kwargs={"gamma": cfg.discount()},
        policy_kwargs=policy_kwargs,
        seed=cfg.seed,
        device=cfg.device,
        verbose=0,
    )


class _RunCallback(BaseCallback):
    """Progress bar, training-episode scores, learning-curve evals and checkpoints for SB3."""

    def __init__(
        self,
        cfg: VPNConfig,
        run_dir: Path,
        logger: MetricsLogger,
        progress: Any,
        task: Any,
        stop: GracefulStop,
    ) -> None:
        super().__init__()
        self.stop = stop
        self.cfg, self.run_dir, self.metrics = cfg, run_dir, logger
        self.progress, self.task = progress, task
        self.scores = np.zeros(cfg.n_envs)
        self.recent: list[float] = []
        self.final_evaluated = False
        self.ckpt = CheckpointManager(run_dir)

    def save(self) -> None:
        step = self.model.num_timesteps
        self.ckpt.save(
            step,
            {"step": step, "algo": "dqn"},
            writers={"dqn.zip": self.model.save, "replay.pkl": self.model.save_replay_buffer},
        )

    def _on_step(self) -> bool:
        cfg, step = self.cfg, self.model.num_timesteps
        before = step - cfg.n_envs
        for i, (info, done) in enumerate(
            zip(self.locals["infos"], self.locals["dones"], strict=True)
        ):
            self.scores[i] += step_score(self.locals["rewards"][i], info)
            if done:
                self.recent.append(self.scores[i])
                self.scores[i] = 0.0
        if step // LOG_EVERY > before // LOG_EVERY and self.recent:
            self.metrics.log(
                step,
                **{
                    "charts/episode_reward": float(np.mean(self.recent)),
                    "epsilon": self.model.exploration_rate,
                },
            )
            self.recent = []
        total = cfg.total_steps()
        final = step >= total and not self.final_evaluated
        self.final_evaluated |= final
        if cfg.eval_every and (step // cfg.eval_every > before // cfg.eval_every or final):
            result = evaluate_episodes(
                dqn_greedy(self.model), cfg.env, cfg.eval_episodes, seed=cfg.seed + 777
            )
            self.metrics.log(step, **{"charts/eval_reward": result["mean"]})
        if step // cfg.checkpoint_every > before // cfg.checkpoint_every:
            self.save()
        self.progress.update(
            self.task, completed=step, status=f"eps {self.model.exploration_rate:.2f}"
        )
        if self.stop.requested is None:
            return True
        # False ends learn(), and the run saves. Only where learn() would have started its
        # next chunk of train_freq steps: the resumed run keeps the uninterrupted one's chunks.
        freq = self.model.train_freq
        chunk = self.model.n_envs * (freq.frequency if freq.unit == TrainFrequencyUnit.STEP else 1)
        return step % chunk != 0


def dqn_greedy(model: DQN) -> Callable[[np.ndarray], np.ndarray]:
    """Greedy options ``(N,)`` from batched observations."""

    def policy(obs: np.ndarray) -> np.ndarray:
        return model.predict(obs, deterministic=True)[0]

    return policy


def train_dqn(
    cfg: VPNConfig,
    stop: GracefulStop | None = None,
    on_begin: Callable[[Path], object] | None = None,
) -> Path:
    """Train (or resume) the DQN baseline in a run directory; returns it. A stop asked for
    through ``stop`` checkpoints the step it arrives at and raises
    :class:`~rlkit.core.stop.StopRequested`. ``on_begin``: see
    :func:`agents.vpn.trainer.start_run`."""
    t_start = time.perf_counter()
    stop = stop or GracefulStop()  # never entered: never requested
    cfg, run_dir = resolve_run(cfg)
    seed_everything(cfg.seed)
    venv = make_vec_env(EnvSpec(cfg.env), cfg.n_envs, cfg.seed)
    discrete_options(venv.action_space, cfg.env)
    check_memory(cfg, venv.observation_space)
    if cfg.resume:
        path = CheckpointManager(run_dir).latest()
        try:
            model = DQN.load(path / "dqn.zip", env=venv, device=cfg.device)
            model.load_replay_buffer(path / "replay.pkl")
        except Exception as exc:  # SB3 raises many kinds for a foreign or truncated zip
            raise CheckpointError(
                f"cannot load the DQN checkpoint {path} ({type(exc).__name__})"
            ) from exc
        venv.seed(cfg.seed + model.num_timesteps)
    else:
        model = make_dqn(cfg, venv)
    start_run(cfg, run_dir, venv.observation_space, on_begin)
    logger = MetricsLogger(run_dir)
    try:
        with make_progress() as progress:
            task = progress.add_task(
                f"dqn on {cfg.env}",
                total=cfg.total_steps(),
                completed=model.num_timesteps,
                status="",
            )
            callback = _RunCallback(cfg, run_dir, logger, progress, task, stop)
            remaining = cfg.total_steps() - model.num_timesteps
            if remaining > 0:  # (a finished run resumed: its last checkpoint is this step's)
                model.set_logger(silent_logger())  # metrics go to the run's own logs
                model.learn(remaining, callback=callback, reset_num_timesteps=False)
                callback.save()
            stop.check(model.num_timesteps, run_dir)
        model.save(run_dir / "model_dqn.zip")
    finally:
        logger.close()
        venv.close()
    updates = int(model._n_updates)  # noqa: SLF001  (SB3 keeps no public count)
    wall = time.perf_counter() - t_start
    write_summary(run_dir, cfg, model.num_timesteps, wall, updates=updates)
    return run_dir
