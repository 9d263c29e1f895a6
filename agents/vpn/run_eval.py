"""Evaluate a finished (or checkpointed) VPN or DQN run greedily, with a progress bar."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from agents.vpn.config import EvalConfig, VPNConfig, check_device
from agents.vpn.evaluation import evaluate_episodes
from agents.vpn.planner import parse_branching
from agents.vpn.trainer import saved_config
from envs import EnvSpec, check_env_id, make_vec_env
from rlkit.core.checkpoint import CheckpointError, CheckpointManager
from rlkit.core.errors import UserError
from rlkit.core.progress import make_progress


def load_run_config(run_dir: Path) -> VPNConfig:
    """The run's saved VPNConfig; UserError if the directory holds no VPN/DQN run."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir} is a file, not a run directory of `rlkit vpn train`")
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    cfg = saved_config(run_dir)
    try:
        check_device(cfg.device)
    except UserError:  # trained on a GPU this machine lacks: evaluating on its CPU is cheap
        cfg = dataclasses.replace(cfg, device="cpu")
    return cfg


def _spaces(env_id: str) -> tuple[Any, int]:
    """``env_id``'s observation space and number of (discrete) actions."""
    from agents.vpn.trainer import discrete_options

    probe = make_vec_env(EnvSpec(env_id, training=False), 1, 0)
    try:
        return probe.observation_space, discrete_options(probe.action_space, env_id)
    finally:
        probe.close()


def greedy_policy(run_dir: Path, cfg: VPNConfig, env_id: str, plan: str | None) -> Any:
    """A callable mapping observations ``(N, *obs_shape)`` to greedy options ``(N,)``."""
    if cfg.algo == "dqn":
        from stable_baselines3 import DQN

        from agents.vpn.dqn import dqn_greedy

        path = run_dir / "model_dqn.zip"
        if not path.is_file():
            path = CheckpointManager(run_dir).latest() / "dqn.zip"
        try:
            model = DQN.load(path, device=cfg.device)
        except Exception as exc:  # SB3 raises many kinds for a foreign or truncated zip
            raise CheckpointError(f"cannot load DQN model {path} ({type(exc).__name__})") from exc
        return dqn_greedy(model)

    from agents.vpn.trainer import load_vpn_agent

    space, num_options = _spaces(env_id)
    if env_id != cfg.env:
        trained_space, trained_options = _spaces(cfg.env)
        if (space.shape, num_options) != (trained_space.shape, trained_options):
            raise UserError(
                f"--env {env_id} has observations {space.shape} and {num_options} actions; the"
                f" run trained on {cfg.env}, with {trained_space.shape} and {trained_options}:"
                " evaluate it on an env of the same shapes"
            )
    if plan is not None:
        cfg = dataclasses.replace(cfg, plan=plan)
    agent = load_vpn_agent(run_dir, cfg, space, num_options)
    agent.branching = parse_branching(cfg.plan, num_options)

    def policy(obs: np.ndarray) -> np.ndarray:
        return agent.plan(obs).option.cpu().numpy()

    return policy


def evaluate_run(cfg: EvalConfig) -> dict[str, Any]:
    """Mean greedy score over ``cfg.episodes`` episodes, with what was evaluated."""
    run_dir = Path(cfg.run_dir)
    run_cfg = load_run_config(run_dir)
    env_id = run_cfg.env if cfg.env is None else cfg.env  # --env "" is no env, not a default
    check_env_id(env_id)
    if cfg.plan is not None and run_cfg.algo != "vpn":  # it would be ignored
        raise UserError(
            f"--plan sets a VPN's planning; {run_dir} is a DQN run, which does not plan"
        )
    if cfg.plan is not None:
        parse_branching(cfg.plan)
    policy = greedy_policy(run_dir, run_cfg, env_id, cfg.plan)
    with make_progress() as progress:
        task = progress.add_task(f"eval on {env_id}", total=cfg.episodes, status="")
        result = evaluate_episodes(
            policy, env_id, cfg.episodes, cfg.seed, cfg.n_envs,
            on_episode=lambda k: progress.update(task, advance=k),
        )  # fmt: skip
    return {
        "run_dir": str(run_dir),
        "algo": run_cfg.algo,
        "plan": (cfg.plan or run_cfg.plan) if run_cfg.algo == "vpn" else None,
        "env": env_id,
        **result,
    }
