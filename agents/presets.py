"""Policy presets: TRPO for MuJoCo and A2C for Atari, as in Christiano et al. (2017)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from stable_baselines3 import A2C
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnv

from agents.obs_norm import RunningObsNorm
from agents.trpo_entropy import EntropyTRPO
from agents.worker_rollouts import WorkerRolloutsMixin
from rlkit.core.errors import check_settings, check_types

Algo = Literal["trpo", "a2c"]


class WorkerA2C(WorkerRolloutsMixin, A2C):
    """SB3's A2C, whose rollouts the env's workers collect when they can
    (:mod:`agents.worker_rollouts`)."""


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """The RL algorithm that trains against the learned reward."""

    algo: Literal["auto", "trpo", "a2c"] = "auto"
    """trpo (MuJoCo default), a2c (Atari default), or auto to pick by env kind."""
    gamma: float | None = None
    """Discount; default 0.995 for TRPO (the paper's), 0.99 for A2C."""
    gae_lambda: float | None = None
    """GAE lambda; default 0.97 for TRPO (the paper's), 1.0 for A2C."""
    ent_coef: float = 0.0
    """Entropy bonus (TRPO: added to the surrogate; A2C default 0.01 when left at 0 on Atari)."""
    n_steps: int | None = None
    """Steps per env per update; default 1024 for TRPO, 5 for A2C."""
    learning_rate: float | None = None
    """Default: 1e-3 (TRPO critic), 7e-4 (A2C)."""
    hidden: tuple[int, ...] = (64, 64)
    """TRPO policy and value MLP widths."""
    normalize_obs: bool = True
    """TRPO: the policy and critic see observations normalized by running statistics, as in
    modular_rl's TRPO and rl-zoo's MuJoCo presets (the reward model and clips: raw). On by
    default since 2026-12-02; A2C does not use it. --policy.no-normalize-obs turns it off."""

    def __post_init__(self) -> None:
        check_types(self, "--policy.")
        checks = {
            "gamma": self.gamma is None or 0.0 < self.gamma <= 1.0,
            "gae_lambda": self.gae_lambda is None or 0.0 <= self.gae_lambda <= 1.0,
            "ent_coef": self.ent_coef >= 0.0,
            "n_steps": self.n_steps is None or self.n_steps >= 1,
            "learning_rate": self.learning_rate is None or self.learning_rate > 0.0,
            "hidden": all(width >= 1 for width in self.hidden),
        }
        check_settings(self, checks, "--policy.")


def resolve_algo(config: PolicyConfig, kind: str) -> Algo:
    """``config.algo``, or for ``auto``: A2C on Atari (``kind == "atari"``), TRPO otherwise."""
    if config.algo != "auto":
        return config.algo
    return "a2c" if kind == "atari" else "trpo"


def steps_per_env(config: PolicyConfig, algo: Algo) -> int:
    """Steps each env takes per policy update: ``n_steps``, or 1024 (TRPO) / 5 (A2C)."""
    if config.n_steps is not None:
        return config.n_steps
    return 1024 if algo == "trpo" else 5


def normalizes_obs(config: PolicyConfig, algo: Algo) -> bool:
    """Whether the policy of ``algo`` normalizes its observations (TRPO only)."""
    return config.normalize_obs and algo == "trpo"


def silent_logger() -> Logger:
    """An SB3 logger that writes nothing. Without one, every ``learn()`` of an agent with
    ``verbose=0`` and no TensorBoard folder leaves an empty ``/tmp/SB3-<date>`` folder."""
    return Logger(folder=None, output_formats=[])


def resolve_policy(config: PolicyConfig, kind: str) -> PolicyConfig:
    """``config`` as the agent for ``kind`` (``"mujoco"`` or ``"atari"``) is built with: the
    algorithm (:func:`resolve_algo`), and its discount, GAE lambda, steps per update and
    learning rate where unset; A2C's entropy bonus on Atari (0.01 where left at 0); whether it
    normalizes observations (:func:`normalizes_obs`)."""
    algo = resolve_algo(config, kind)
    trpo = algo == "trpo"
    gamma, gae_lambda, learning_rate = (0.995, 0.97, 1e-3) if trpo else (0.99, 1.0, 7e-4)
    return dataclasses.replace(
        config, algo=algo,
        gamma=gamma if config.gamma is None else config.gamma,
        gae_lambda=gae_lambda if config.gae_lambda is None else config.gae_lambda,
        n_steps=steps_per_env(config, algo),
        learning_rate=learning_rate if config.learning_rate is None else config.learning_rate,
        ent_coef=config.ent_coef or (0.01 if not trpo and kind == "atari" else 0.0),
        normalize_obs=normalizes_obs(config, algo),
    )  # fmt: skip


def make_agent(
    config: PolicyConfig, env: VecEnv, kind: str, seed: int, tensorboard_log: str | None = None
) -> BaseAlgorithm:
    """Build the agent for ``env`` (already wrapped with the learned reward), with
    :func:`resolve_policy`'s settings."""
    p = resolve_policy(config, kind)
    settings = {
        "gamma": p.gamma, "gae_lambda": p.gae_lambda, "n_steps": p.n_steps,
        "learning_rate": p.learning_rate, "ent_coef": p.ent_coef,
    }  # fmt: skip
    if p.algo == "trpo":
        net = {"pi": list(p.hidden), "vf": list(p.hidden)}
        policy_kwargs: dict = {"net_arch": net}
        if p.normalize_obs:
            policy_kwargs["features_extractor_class"] = RunningObsNorm
        agent: BaseAlgorithm = EntropyTRPO(
            "MlpPolicy", env, **settings, policy_kwargs=policy_kwargs,
            seed=seed, tensorboard_log=tensorboard_log, device="cpu", verbose=0,
        )  # fmt: skip
    else:
        agent = WorkerA2C(
            "CnnPolicy" if kind == "atari" else "MlpPolicy", env, **settings, vf_coef=0.25,
            seed=seed, tensorboard_log=tensorboard_log, device="cpu", verbose=0,
        )  # fmt: skip
    if tensorboard_log is None:
        agent.set_logger(silent_logger())
    return agent


def load_agent(
    algo: Algo, path: str, env: VecEnv | None = None, force_reset: bool = True
) -> BaseAlgorithm:
    """A saved agent on ``env``. ``force_reset=False`` keeps the observation it was saved at,
    for an ``env`` put back where it was (SB3 otherwise resets the envs at the next
    ``learn``)."""
    cls = EntropyTRPO if algo == "trpo" else WorkerA2C
    agent = cls.load(path, env=env, device="cpu", force_reset=force_reset)
    agent.set_logger(silent_logger())
    return agent
