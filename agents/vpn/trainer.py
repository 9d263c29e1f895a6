"""The VPN training loop: act by planning in synchronous vector envs, replay sequences, learn.

``collect -> replay -> update``: every vector step each env takes one epsilon-greedy
option (greedy = best planned option), the transitions go into a sequence replay, and
every ``train_freq`` vector steps one Adam step is taken on ``batch_sequences`` replayed
sequences of ``n_step`` options (see :mod:`agents.vpn.agent` for the loss). The target
network is a copy synchronized every ``target_sync`` env steps. The run directory gets the
config, TensorBoard + CSV logs, atomic checkpoints (``--resume`` continues from the latest;
episodes in flight at the checkpoint are restarted), and at the end ``model.pt`` and
``summary.json`` (:func:`write_summary`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.vpn.agent import VPNAgent
from agents.vpn.config import VPNConfig, check_memory
from agents.vpn.evaluation import evaluate_episodes, step_score
from agents.vpn.modules import auto_backbone
from agents.vpn.planner import parse_branching
from agents.vpn.replay import SequenceReplay
from envs import EnvSpec, check_env_id, make_vec_env
from rlkit.core.checkpoint import (
    CheckpointError,
    CheckpointManager,
    atomic_write_bytes,
    load_checkpoint,
    save_checkpoint,
)
from rlkit.core.errors import UserError, message_line
from rlkit.core.metrics import MetricsLogger, read_metrics
from rlkit.core.progress import make_progress
from rlkit.core.rundir import (
    RESOLVED,
    default_run_name,
    load_config,
    prepare_run_dir,
    save_config,
    save_longer_steps,
)
from rlkit.core.seeding import restore_rng, rng_state, seed_everything
from rlkit.core.stop import GracefulStop

LOG_EVERY = 1_000  # env steps between logs of the mean training-episode score


def epsilon_at(step: int, cfg: VPNConfig, total: int) -> float:
    """Linear anneal from ``eps_start`` to ``eps_end`` over ``eps_fraction * total`` env steps."""
    span = max(1.0, cfg.eps_fraction * total)
    frac = min(1.0, step / span)
    return cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start)


def build_agent(cfg: VPNConfig, observation_space: Any, num_options: int) -> VPNAgent:
    """The VPN for ``cfg``; a one-line UserError if its encoder cannot take these observations
    (e.g. ``--backbone nature_cnn`` on Collect's 10x10 grid) or its weights do not fit in
    memory (``--channels 1000000``)."""
    try:
        return VPNAgent(
            observation_space,
            num_options,
            parse_branching(cfg.plan, num_options),
            cfg.discount(),
            channels=cfg.channels,
            hidden=cfg.hidden,
            backbone=cfg.backbone,
            lr=cfg.learning_rate(),
            prediction_steps=cfg.prediction_steps,
            max_grad_norm=cfg.max_grad_norm,
            device=cfg.device,
        )
    except (RuntimeError, ValueError) as exc:
        if "can't allocate memory" in str(exc) or isinstance(exc, torch.OutOfMemoryError):
            raise UserError(
                f"the network (--channels {cfg.channels}, --hidden {cfg.hidden}) does not fit in"
                f" memory on {cfg.device}: {message_line(exc)}"
            ) from exc
        raise UserError(
            f"--backbone {cfg.backbone} does not fit {cfg.env}'s observations"
            f" {tuple(observation_space.shape)}: {message_line(exc)}"
        ) from exc


def discrete_options(action_space: Any, env_id: str) -> int:
    """The number of options (one per discrete action) of ``env_id``; a one-line UserError for
    an env whose actions are not discrete (VPN and DQN choose among a finite set)."""
    if not isinstance(action_space, gym.spaces.Discrete):
        raise UserError(
            f"--env {env_id} has continuous or structured actions ({action_space}); VPN and DQN"
            " need discrete ones (Collect, Atari)"
        )
    return int(action_space.n)


def saved_config(run_dir: Path) -> VPNConfig:
    """The config a VPN (or DQN) run saved in ``run_dir``; a one-line error if it is not one."""
    data = load_config(run_dir)
    if "labels" in data and "plan" not in data:
        raise UserError(
            f"{run_dir}/config.json is a preference run's (rlkit prefs train), not a VPN run's"
        )
    data = {name: value for name, value in data.items() if name != RESOLVED}  # derived
    try:
        cfg = VPNConfig(**data)
    except TypeError as exc:
        raise UserError(f"{run_dir}/config.json is not a VPN run config ({exc})") from exc
    # Every run saved every setting, steps resolved to a number: a default filled in for one
    # cut out would silently change the run (its plan), or fail later (steps null).
    missing = [f.name for f in dataclasses.fields(VPNConfig) if f.name not in data]
    if missing:
        raise UserError(f"{run_dir}/config.json lacks {', '.join(missing)}: it is incomplete")
    try:  # values edited since the run began: no flag of this call is at fault
        if cfg.steps is None:
            raise UserError("--steps must be int, got None")
        dataclasses.replace(cfg, device="cpu").validate()  # (a GPU run may go on on a CPU)
        check_env_id(cfg.env)
        parse_branching(cfg.plan)
    except UserError as exc:
        raise UserError(f"{run_dir}/config.json holds a setting no run can have: {exc}") from None
    return cfg


def resolve_run(cfg: VPNConfig) -> tuple[VPNConfig, Path]:
    """Check the config and prepare the run directory; on ``--resume`` the saved config wins
    (except ``steps``, which may extend the run)."""
    cfg.validate()
    check_env_id(cfg.env)
    parse_branching(cfg.plan)
    if cfg.resume and cfg.run_dir is None:
        raise UserError("--resume needs --run-dir naming the run to continue")
    if cfg.algo == "dqn" and cfg.backbone != "auto" and not cfg.resume:  # (it was ignored)
        raise UserError(
            f"--backbone {cfg.backbone} is the VPN's encoder; the DQN baseline has its own (the"
            " VPN's Collect encoder on grids, SB3's Nature CNN on images): leave it auto"
        )
    run_dir = Path(cfg.run_dir or Path("runs") / default_run_name(cfg.env, cfg.algo, cfg.seed))
    prepare_run_dir(run_dir, cfg.resume)
    if cfg.resume:
        old = saved_config(run_dir)
        steps = old.steps if cfg.steps is None else cfg.steps
        if steps < old.steps:
            raise UserError(
                f"--steps {steps} is below the run's {old.steps}: a resumed run can only go on"
            )
        # the saved settings, but the device this call runs on (`rlkit vpn train` passes the
        # saved one unless --device is given)
        cfg = dataclasses.replace(
            old, steps=steps, resume=True, run_dir=str(run_dir), device=cfg.device
        )
        cfg.validate()
    else:
        cfg = dataclasses.replace(cfg, run_dir=str(run_dir), steps=cfg.total_steps())
    return cfg, run_dir


def resolved_settings(cfg: VPNConfig, observation_space: Any) -> dict[str, object]:
    """What the settings left to the env or algorithm (None, ``auto``) came to: the
    ``resolved`` section of ``config.json``, from the functions the run is built with."""
    if cfg.algo == "dqn":  # (make_dqn: the VPN's Collect encoder on grids, SB3's CNN else)
        grid = observation_space.dtype != np.uint8
        encoder = "collect_conv" if grid else "nature_cnn (SB3 CnnPolicy)"
    else:
        encoder = auto_backbone(observation_space) if cfg.backbone == "auto" else cfg.backbone
    return {"gamma": cfg.discount(), "lr": cfg.learning_rate(), "backbone": encoder}


def start_run(
    cfg: VPNConfig,
    run_dir: Path,
    observation_space: Any,
    on_begin: Callable[[Path], object] | None = None,
) -> None:
    """Save a fresh run's config once its envs and network are built: a setting that fails
    there leaves the directory as empty as it was, free for a corrected run. Under
    ``resolved`` it also records what the env's defaults came to (:func:`resolved_settings`;
    loading drops it). A resumed run, once its checkpoint has loaded, saves a longer
    ``--steps`` (a later ``--resume`` goes on to it, and a shorter one is refused). Then
    ``on_begin(run_dir)``: what a run records of each invocation (the CLI's
    ``provenance.jsonl``)."""
    if cfg.resume:
        save_longer_steps(run_dir, cfg.steps)
    else:
        resolved = resolved_settings(cfg, observation_space)
        save_config(run_dir, {**dataclasses.asdict(cfg), RESOLVED: resolved})
    if on_begin is not None:
        on_begin(run_dir)


def write_summary(
    run_dir: Path, cfg: VPNConfig, steps: int, wall_seconds: float, **counts: int
) -> dict[str, object]:
    """Write ``summary.json`` in the run directory (atomically) and return it: what a finished
    run ends with. ``eval_reward`` is the mean greedy score of the run's last learning-curve
    evaluation (at ``eval_step``, the final step where ``--eval-every`` is on; null where it
    is off), ``episode_reward`` the mean score of the last training episodes logged, both read
    from ``metrics.csv`` (so a finished run resumed has them too); ``counts`` are the run's
    totals (updates, episodes); ``wall_seconds`` is this invocation's. NaN is written as null."""
    metrics = read_metrics(run_dir)

    def last(name: str) -> tuple[int | None, float | None]:
        rows = metrics.get(name, [])
        if not rows:
            return None, None
        step, value = rows[-1]
        return step, None if math.isnan(value) else value

    eval_step, eval_reward = last("charts/eval_reward")
    doc: dict[str, object] = {
        "algo": cfg.algo, "env": cfg.env, **({"plan": cfg.plan} if cfg.algo == "vpn" else {}),
        "seed": cfg.seed, "steps": steps, **counts,
        "eval_reward": eval_reward, "eval_step": eval_step, "eval_episodes": cfg.eval_episodes,
        "episode_reward": last("charts/episode_reward")[1],
        "run_dir": str(run_dir), "model": "model.pt" if cfg.algo == "vpn" else "model_dqn.zip",
        "wall_seconds": round(wall_seconds, 1),
    }  # fmt: skip
    atomic_write_bytes(run_dir / "summary.json", (json.dumps(doc, indent=2) + "\n").encode())
    return doc


def _crossed(before: int, after: int, every: int) -> bool:
    return every > 0 and after // every > before // every


def train_vpn(
    cfg: VPNConfig,
    stop: GracefulStop | None = None,
    on_begin: Callable[[Path], object] | None = None,
) -> Path:
    """Train (or resume) a VPN run; returns the run directory. A stop asked for through
    ``stop`` checkpoints the step it arrives at and raises
    :class:`~rlkit.core.stop.StopRequested`. ``on_begin``: see :func:`start_run`."""
    t_start = time.perf_counter()
    cfg, run_dir = resolve_run(cfg)
    rng = seed_everything(cfg.seed)
    torch.manual_seed(cfg.seed)
    venv = make_vec_env(EnvSpec(cfg.env), cfg.n_envs, cfg.seed)
    space, num_options = venv.observation_space, discrete_options(venv.action_space, cfg.env)
    check_memory(cfg, space)
    agent = build_agent(cfg, space, num_options)
    replay = SequenceReplay(cfg.replay_size, cfg.n_envs, space.shape, space.dtype)
    ckpt = CheckpointManager(run_dir)
    step, updates, episodes = 0, 0, 0
    if cfg.resume:
        _, state = ckpt.load_latest()
        try:
            agent.load_state_dict(state["agent"])
            replay.load_state_dict(state["replay"])
            rng = restore_rng(state["rng"])
            torch.set_rng_state(state["torch_rng"])
            step, updates, episodes = state["step"], state["updates"], state["episodes"]
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint in {run_dir} does not match this VPN run ({exc})"
            ) from exc
        # A fresh layout stream after a resume; episodes in flight at the checkpoint restart.
        venv.seed(cfg.seed + step)
    start_run(cfg, run_dir, space, on_begin)
    total = cfg.total_steps()
    logger = MetricsLogger(run_dir)
    stop = stop or GracefulStop()  # never entered: never requested

    def save() -> None:
        ckpt.save(step, {
            "agent": agent.state_dict(), "replay": replay.state_dict(), "rng": rng_state(rng),
            "torch_rng": torch.get_rng_state(), "step": step, "updates": updates,
            "episodes": episodes,
        })  # fmt: skip

    def greedy(o: np.ndarray) -> np.ndarray:
        return agent.plan(o).option.cpu().numpy()

    obs = venv.reset()
    scores = np.zeros(cfg.n_envs)
    recent: list[float] = []
    logged = 0
    stats: dict[str, float] = {}
    try:
        with make_progress() as progress:
            task = progress.add_task(
                f"vpn {cfg.plan} on {cfg.env}", total=total, completed=step, status=""
            )
            while step < total:
                eps = epsilon_at(step, cfg, total)
                acts = agent.act(obs, eps, rng)
                next_obs, rews, dones, infos = venv.step(acts)
                real_next = next_obs.copy()
                truncated = np.zeros(cfg.n_envs, dtype=bool)
                for i, info in enumerate(infos):
                    scores[i] += step_score(rews[i], info)
                    if dones[i]:
                        real_next[i] = info["terminal_observation"]
                        truncated[i] = info.get("TimeLimit.truncated", False)
                        recent.append(scores[i])
                        scores[i], episodes = 0.0, episodes + 1
                durations = np.array([info.get("duration", 1) for info in infos], dtype=np.float32)
                replay.add(obs, acts, rews, real_next, dones & ~truncated, durations, dones)
                obs = next_obs
                before, step = step, step + cfg.n_envs
                if step >= cfg.learning_starts and (step // cfg.n_envs) % cfg.train_freq == 0:
                    batch = replay.sample(cfg.batch_sequences, cfg.n_step, rng)
                    stats = agent.update(batch)
                    updates += 1
                if _crossed(before, step, LOG_EVERY) or step >= total:
                    logger.log(step, epsilon=eps, updates=updates, **stats)
                    if len(recent) > logged:
                        logger.log(
                            step, **{"charts/episode_reward": float(np.mean(recent[logged:]))}
                        )
                        logged = len(recent)
                if _crossed(before, step, cfg.target_sync):
                    agent.sync_target()
                if _crossed(before, step, cfg.eval_every) or (cfg.eval_every and step >= total):
                    result = evaluate_episodes(
                        greedy, cfg.env, cfg.eval_episodes, seed=cfg.seed + 777
                    )
                    logger.log(step, **{"charts/eval_reward": result["mean"]})
                if _crossed(before, step, cfg.checkpoint_every) or stop.requested is not None:
                    save()
                    stop.check(step, run_dir)
                mean = np.mean(recent[-100:]) if recent else float("nan")
                drop = max(0, len(recent) - 1000)  # keep memory flat on long runs
                del recent[:drop]
                logged = max(0, logged - drop)
                progress.update(
                    task,
                    advance=cfg.n_envs,
                    status=f"eps {eps:.2f} ep_rew {mean:.2f} updates {updates}",
                )
        save()
        save_checkpoint(run_dir / "model.pt", {"net": agent.net.state_dict()})
    finally:
        logger.close()
        venv.close()
    wall = time.perf_counter() - t_start
    write_summary(run_dir, cfg, step, wall, updates=updates, episodes=episodes)
    return run_dir


def load_vpn_agent(
    run_dir: Path, cfg: VPNConfig, observation_space: Any, num_options: int
) -> VPNAgent:
    """The run's trained network: ``model.pt`` if the run finished, else its latest checkpoint."""
    agent = build_agent(cfg, observation_space, num_options)
    model = run_dir / "model.pt"
    try:
        if model.is_file():
            agent.net.load_state_dict(load_checkpoint(model)["net"])
        else:
            agent.net.load_state_dict(CheckpointManager(run_dir).load_latest()[1]["agent"]["net"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"{run_dir} holds a model that does not fit its config ({message_line(exc)})"
        ) from exc
    agent.net.eval()
    return agent
