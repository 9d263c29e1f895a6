"""Configuration of VPN training and evaluation (the ``rlkit vpn`` CLI is generated from it)."""

from __future__ import annotations

import dataclasses
from typing import Any

from rlkit.core.errors import UserError, check_settings, check_types


@dataclasses.dataclass
class VPNConfig:
    """Train a Value Prediction Network (or the DQN baseline on the same options)."""

    env: str = "rlkit/Collect-v0"
    """Gymnasium id: rlkit/Collect-v0, rlkit/CollectStochastic-v0, or an Atari id like ALE/Pong-v5."""
    algo: str = "vpn"
    """``vpn``, or ``dqn`` for the Stable-Baselines3 DQN baseline on the same envs and options."""
    plan: str = "4,4,4,1,1"
    """Branching factor per planning depth: VPN(5) is 4,4,4,1,1, VPN(3) 4,4,4, VPN(1) 4."""
    steps: int | None = None
    """Env steps (option decisions, summed over the parallel envs) to train for; default
    100000, or on ``--resume`` the run's saved value (pass a larger one to extend the run)."""
    seed: int = 0
    """Seed for networks, exploration, replay sampling and env layouts."""
    run_dir: str | None = None
    """Run directory; default ``runs/{env}__vpn__{seed}__{time}``."""
    resume: bool = False
    """Continue the run in ``--run-dir`` from its latest checkpoint."""
    n_envs: int = 8
    """Synchronous parallel environments."""
    gamma: float | None = None
    """Discount per primitive step; default 0.98 for Collect (as in the paper), 0.99 otherwise."""
    n_step: int = 10
    """Length ``n`` of the n-step Q-learning returns (and of the replayed sequences); 10 as in the
    paper, which learns on-policy. From this replay of epsilon-greedy data shorter returns learn
    faster at small budgets: VPN(1) on Collect at 40k steps scored -4.1 with 3, -5.1 with 5 and
    -5.4 with 10 (BENCHMARKS.md uses 3). DQN's minibatch is ``batch_sequences * n_step``."""
    prediction_steps: int = 3
    """``k``: how many options the model is unrolled for the reward/discount/value losses."""
    lr: float | None = None
    """Adam learning rate; default 2e-3 for VPN and 5e-4 for DQN (the best of a short sweep on
    Collect for each; DQN at 2e-3 stayed near -5.5 after 80k steps)."""
    batch_sequences: int = 16
    """Sequences of ``n_step`` transitions per gradient step."""
    train_freq: int = 1
    """Vector-env steps between gradient steps (for VPN and DQN alike)."""
    replay_size: int = 20_000
    """Transitions kept in the replay buffer (the paper is on-policy; replay makes small budgets count)."""
    learning_starts: int = 1_000
    """Env steps of experience collected before the first gradient step."""
    target_sync: int = 2_000
    """Env steps between copies of the network into the target network."""
    eps_start: float = 1.0
    """Initial exploration epsilon."""
    eps_end: float = 0.05
    """Final exploration epsilon."""
    eps_fraction: float = 0.4
    """Fraction of ``steps`` over which epsilon is annealed linearly."""
    channels: int = 16
    """Abstract-state channels (the paper uses 64; 16 keeps 4,4,4,1,1 planning fast on a CPU)."""
    hidden: int = 64
    """Hidden units of the value, reward and duration heads (the paper's ``dim``)."""
    backbone: str = "auto"
    """Encoder: ``auto`` (the paper's conv for Collect grids, ``nature_cnn`` for Atari, ``mlp`` for
    vectors), ``collect_conv``, or a backbone name from the rlkit.nn registry."""
    max_grad_norm: float = 10.0
    """Gradient norm clip."""
    checkpoint_every: int = 10_000
    """Env steps between checkpoints."""
    eval_every: int = 10_000
    """Env steps between greedy evaluations for the learning curve (0: never)."""
    eval_episodes: int = 100
    """Greedy episodes per learning-curve evaluation."""
    device: str = "cpu"
    """Torch device."""

    def validate(self) -> None:
        """Raise a one-line UserError for values that cannot work."""
        check_types(self)
        positive = {
            "steps": self.total_steps(), "n_envs": self.n_envs, "n_step": self.n_step,
            "prediction_steps": self.prediction_steps, "batch_sequences": self.batch_sequences,
            "train_freq": self.train_freq, "replay_size": self.replay_size,
            "target_sync": self.target_sync, "channels": self.channels, "hidden": self.hidden,
            "checkpoint_every": self.checkpoint_every, "eval_episodes": self.eval_episodes,
        }  # fmt: skip
        for name, value in positive.items():
            if value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        from rlkit.nn import backbone_names

        known = ["auto", "collect_conv", *backbone_names()]
        if self.backbone not in known:
            raise UserError(f"--backbone must be one of {', '.join(known)}, got {self.backbone!r}")
        if self.algo not in ("vpn", "dqn"):
            raise UserError(f"--algo must be vpn or dqn, got {self.algo!r}")
        if not 0 <= self.seed < 2**32:
            raise UserError(f"--seed must lie in 0..2**32-1, got {self.seed}")
        check_settings(self, {})  # every float setting finite
        check_device(self.device)
        if self.eval_every < 0 or self.learning_starts < 0:
            raise UserError("--eval-every and --learning-starts must be >= 0")
        if not self.max_grad_norm > 0:
            raise UserError(f"--max-grad-norm must be > 0, got {self.max_grad_norm}")
        if self.lr is not None and not self.lr > 0:
            raise UserError(f"--lr must be > 0, got {self.lr}")
        if self.gamma is not None and not 0 < self.gamma <= 1:
            raise UserError(f"--gamma must be in (0, 1], got {self.gamma}")
        for name in ("eps_start", "eps_end", "eps_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"--{name.replace('_', '-')} must be in [0, 1]")
        if self.replay_size < self.n_envs * (self.n_step + 1):
            raise UserError(
                f"--replay-size must hold at least n_envs * (n_step + 1) = {self.n_envs * (self.n_step + 1)} transitions"
            )

    def total_steps(self) -> int:
        """``steps``, or 100,000 by default."""
        return 100_000 if self.steps is None else self.steps

    def learning_rate(self) -> float:
        """``lr``, or the algorithm's default."""
        if self.lr is not None:
            return self.lr
        return 2e-3 if self.algo == "vpn" else 5e-4

    def discount(self) -> float:
        """The per-primitive-step discount: ``gamma`` or the env's default."""
        if self.gamma is not None:
            return self.gamma
        return 0.98 if self.env.startswith("rlkit/Collect") else 0.99


@dataclasses.dataclass
class EvalConfig:
    """Evaluate a VPN or DQN run greedily (epsilon 0) on its env or another one."""

    run_dir: str
    """The run directory written by ``rlkit vpn train``."""
    episodes: int = 2000
    """Greedy episodes to average over."""
    env: str | None = None
    """Evaluate on this env id instead of the training env (e.g. rlkit/CollectFewerGoals-v0)."""
    plan: str | None = None
    """VPN only: plan with this branching instead of the training one (e.g. 4,4,4)."""
    seed: int = 10_000
    """Seed of the evaluation env layouts (distinct from training seeds)."""
    n_envs: int = 50
    """Parallel evaluation envs (episodes are split evenly among them)."""
    output: str | None = None
    """Also write the result as JSON to this file."""
    force: bool = False
    """Replace ``--output`` if it exists."""

    def validate(self) -> None:
        """Raise :class:`UserError` for fewer than one episode or env, or a seed outside
        ``0..2**32-1``."""
        if self.episodes < 1 or self.n_envs < 1:
            raise UserError("--episodes and --n-envs must be >= 1")
        if not 0 <= self.seed < 2**32:
            raise UserError(f"--seed must lie in 0..2**32-1, got {self.seed}")


def check_memory(cfg: VPNConfig, space: Any) -> None:
    """One-line errors, at set-up, for a replay buffer or a minibatch this machine cannot hold
    (``space``: the env's observation space). A zeroed buffer costs nothing until it fills, so
    otherwise the kernel kills the run when it does, hours in."""
    import numpy as np

    from rlkit.core.memory import check_fits_in_memory

    size = int(np.prod(space.shape))
    stored = size * np.dtype(space.dtype).itemsize
    shape = "x".join(str(d) for d in space.shape)
    check_fits_in_memory(
        cfg.replay_size * (2 * stored + 16),  # each observation kept with the next one
        f"--replay-size {cfg.replay_size:,} (a replay buffer of {shape} {space.dtype} observations)",
        "lower --replay-size",
    )
    steps = cfg.n_step + 1
    check_fits_in_memory(
        2 * cfg.batch_sequences * steps * size * 4,  # float32 observations and next ones
        f"--batch-sequences {cfg.batch_sequences:,} x {steps} steps (a minibatch's observations"
        " alone, before the network's activations)",
        "lower --batch-sequences",
    )


def check_device(device: str) -> None:
    """A one-line UserError for a ``--device`` torch cannot parse or this machine lacks."""
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise UserError(
            f"--device must be a torch device like cpu or cuda:0, got {device!r}"
        ) from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: this machine's torch has no CUDA device; use cpu")
    if parsed.type not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda, got {device!r}")
