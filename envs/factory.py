"""One factory for Gymnasium MuJoCo (v5), ALE Atari and rlkit's own envs, into SB3 VecEnvs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from difflib import get_close_matches
from typing import Literal

import ale_py
import gymnasium as gym
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import SubprocVecEnv, VecEnv

from envs.atari_preprocessing import atari_preprocessing
from envs.frame_stack import AtariFrameStack
from envs.mujoco_warnings import route_mujoco_warnings
from envs.paper_reward import PaperReward, paper_task
from envs.render_state import RenderStateInfo
from envs.shallow_dummy_vec_env import ShallowDummyVecEnv
from rlkit.core.errors import UserError

gym.register_envs(ale_py)

ATARI_FRAME_STACK = 4
#: The values of :attr:`EnvSpec.reward`.
REWARDS: tuple[str, ...] = ("gymnasium", "paper")


def env_kind(env_id: str) -> str:
    """``"atari"``, ``"mujoco"`` or ``"other"`` for a registered Gymnasium id."""
    spec = gym.spec(env_id)
    entry = str(spec.entry_point)
    if "ale_py" in entry or env_id.startswith("ALE/"):
        return "atari"
    if "mujoco" in entry:
        return "mujoco"
    return "other"


def check_env_id(env_id: str) -> None:
    """Raise a one-line UserError (exit code 2) naming close matches if ``env_id`` is unknown."""
    import envs  # noqa: F401  (registers rlkit's own ids)

    if env_id in gym.registry:
        return
    close = get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see gymnasium.pprint_registry()"
    raise UserError(f"unknown env id {env_id!r}{hint}")


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """How to build one environment.

    Attributes:
        env_id: a Gymnasium id (``Hopper-v5``, ``ALE/Pong-v5``, ``rlkit/Collect-v0``).
        training: Atari only: end an episode on life loss (for training, never for evaluation).
        render_state: put the simulator state of each step into ``info["render_state"]``.
        sticky_actions: Atari only: ALE's repeat-action probability (0 as in the 2017 papers).
        terminate_when_unhealthy: MuJoCo only (Hopper, Walker2d, Ant, Humanoid): False keeps
            episodes running to the time limit after a fall, as in Christiano et al. (2017),
            so that fixed-length segments exist and falling shows up in the reward instead.
            None leaves the env's default.
        reward: ``"gymnasium"``, the env's own reward, or ``"paper"``, the reward of
            Christiano et al.'s MuJoCo tasks (:mod:`envs.paper_reward`: no torque penalty, a
            height bonus instead of the healthy bonus; MuJoCo v5 only).
    """

    env_id: str
    training: bool = True
    render_state: bool = False
    sticky_actions: float = 0.0
    terminate_when_unhealthy: bool | None = None
    reward: Literal["gymnasium", "paper"] = "gymnasium"

    def __post_init__(self) -> None:
        """Refuse a ``reward`` that no env would use (any other value built the env with its
        own reward, silently)."""
        if self.reward not in REWARDS:
            choices = ", ".join(repr(r) for r in REWARDS)
            raise UserError(f"EnvSpec reward must be one of {choices}, got {self.reward!r}")


def mujoco_kwargs(spec: EnvSpec) -> dict:
    """``terminate_when_unhealthy`` for the MuJoCo envs that take it, else nothing."""
    if spec.terminate_when_unhealthy is None or env_kind(spec.env_id) != "mujoco":
        return {}
    entry = gym.spec(spec.env_id).entry_point
    module, _, name = str(entry).partition(":")
    import importlib
    import inspect

    cls = getattr(importlib.import_module(module), name)
    if "terminate_when_unhealthy" not in inspect.signature(cls.__init__).parameters:
        return {}
    return {"terminate_when_unhealthy": spec.terminate_when_unhealthy}


def env_dt(env_id: str) -> float | None:
    """Seconds of simulated time per agent step (MuJoCo's ``dt``), or None if the env has none."""
    if env_kind(env_id) == "mujoco":
        route_mujoco_warnings()
    env = gym.make(env_id)
    try:
        dt = getattr(env.unwrapped, "dt", None)
        return float(dt) if dt is not None else None
    finally:
        env.close()


def make_env(spec: EnvSpec, seed: int, rank: int = 0) -> Callable[[], gym.Env]:
    """A thunk building one env, seeded with ``seed + rank``.

    Atari gets the standard preprocessing, SB3's ``AtariWrapper``'s exactly
    (:func:`envs.atari_preprocessing.atari_preprocessing`): no-op reset (up to 30), frame skip 4
    with max pooling, 84x84 grayscale, terminal on life loss when training, and unclipped reward
    (the true reward is what teachers and evaluation see). Frame stacking happens in the
    VecEnv (:func:`make_vec_env`).
    """

    def thunk() -> gym.Env:
        kind = env_kind(spec.env_id)
        if kind == "atari":
            env = gym.make(spec.env_id, frameskip=1, repeat_action_probability=spec.sticky_actions)
            env = Monitor(env)
            env = atari_preprocessing(env, terminal_on_life_loss=spec.training)
        else:
            if kind == "mujoco":
                route_mujoco_warnings()
            env = gym.make(spec.env_id, **mujoco_kwargs(spec))
            if spec.reward == "paper":
                env = PaperReward(env, paper_task(spec.env_id))
            env = Monitor(env)
        if spec.render_state:
            env = RenderStateInfo(env, kind)
        env.action_space.seed(seed + rank)
        env.reset(seed=seed + rank)
        return env

    return thunk


def make_vec_env(spec: EnvSpec, n_envs: int, seed: int, subprocess: bool = False) -> VecEnv:
    """``n_envs`` copies of ``spec`` as an SB3 VecEnv (Atari frames stacked 4 deep, channels last)."""
    check_env_id(spec.env_id)
    if spec.reward == "paper":
        paper_task(spec.env_id)  # a one-line error for an env without one, before any is built
    if n_envs < 1:
        raise UserError(f"n_envs must be >= 1, got {n_envs}")
    thunks = [make_env(spec, seed, rank) for rank in range(n_envs)]
    venv: VecEnv = SubprocVecEnv(thunks) if subprocess else ShallowDummyVecEnv(thunks)
    venv.seed(seed)
    if env_kind(spec.env_id) == "atari":
        venv = AtariFrameStack(venv, ATARI_FRAME_STACK)
    return venv
