"""Snapshots of running envs, so that a resumed run steps on from where it stopped.

:func:`vec_env_state` takes what a VecEnv stack in this process needs to continue exactly:

- each env's simulator: MuJoCo's integration state (``mj_getState(mjSTATE_INTEGRATION)``:
  time, qpos, qvel, actuator activations, warm start, ...) or the Atari emulator's
  (``ALEState`` with its RNG, so sticky actions repeat too), and the env's ``np_random``;
- the Python state of every wrapper around it (time-limit counters, ``Monitor``'s episode
  sums, life counters, max-pool buffers, ...) and of every VecEnv wrapper above the envs
  (frame stacks, the segment recorder's part-cut segments, the last observation), copied
  attribute by attribute.

Left out are the envs and VecEnvs themselves, spaces (SB3 samples no actions from them),
callables, torch modules (the reward model is saved on its own) and the simulator handles.
A stack whose envs live elsewhere (subprocesses, Ray workers) gives ``None``.
"""

from __future__ import annotations

import copy
import pickle
import types
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper

SKIPPED_NAMES = frozenset({"env", "venv", "envs", "class_attributes", "_cached_spec"})
SKIPPED_TYPES: tuple[type, ...] = (
    gym.Env,
    VecEnv,
    gym.spaces.Space,
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
    types.ModuleType,
    torch.nn.Module,
)


def _kept(name: str, value: Any) -> bool:
    if name in SKIPPED_NAMES or isinstance(value, SKIPPED_TYPES):
        return False
    module = type(value).__module__ or ""
    return not module.startswith(("ale_py", "mujoco", "torch"))


def _attributes(obj: object) -> dict[str, Any]:
    """A deep copy of ``obj``'s plain attributes (see the module docstring)."""
    return {k: copy.deepcopy(v) for k, v in vars(obj).items() if _kept(k, v)}


def _simulator_state(env: gym.Env) -> tuple[str, Any] | None:
    data, model = getattr(env, "data", None), getattr(env, "model", None)
    if type(data).__module__.startswith("mujoco") and model is not None:
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mujoco.mj_stateSize(model, spec))
        mujoco.mj_getState(model, data, state, spec)
        return "mujoco", state
    ale = getattr(env, "ale", None)
    if ale is not None and hasattr(ale, "cloneState"):
        return "ale", pickle.dumps(ale.cloneState(include_rng=True))
    return None


def _set_simulator_state(env: gym.Env, saved: tuple[str, Any] | None) -> None:
    if saved is None:
        return
    kind, state = saved
    if kind == "mujoco":
        import mujoco

        mujoco.mj_setState(env.model, env.data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
    else:
        env.ale.restoreState(pickle.loads(state))


def env_state(env: gym.Env) -> dict[str, Any]:
    """Everything ``env`` (a Gymnasium env with its wrappers) needs to step on exactly."""
    wrappers = []
    while isinstance(env, gym.Wrapper):
        wrappers.append(_attributes(env))
        env = env.env
    return {
        "wrappers": wrappers,
        "np_random": copy.deepcopy(env.np_random.bit_generator.state),
        "simulator": _simulator_state(env),
    }


def set_env_state(env: gym.Env, state: dict[str, Any]) -> None:
    """Put ``env`` (built as the one :func:`env_state` was taken from) back into ``state``."""
    for saved in state["wrappers"]:
        if not isinstance(env, gym.Wrapper):
            raise ValueError("the env has fewer wrappers than the one the state was taken from")
        vars(env).update(copy.deepcopy(saved))
        env = env.env
    if isinstance(env, gym.Wrapper):
        raise ValueError("the env has more wrappers than the one the state was taken from")
    env.np_random.bit_generator.state = copy.deepcopy(state["np_random"])
    _set_simulator_state(env, state["simulator"])


def has_local_envs(venv: VecEnv) -> bool:
    """Whether ``venv``'s stack ends in a ``DummyVecEnv``, whose envs this process holds."""
    while isinstance(venv, VecEnvWrapper):
        venv = venv.venv
    return isinstance(venv, DummyVecEnv)


def vec_env_state(venv: VecEnv) -> dict[str, Any] | None:
    """The state of a VecEnv stack over a ``DummyVecEnv`` (``None`` for any other: its envs
    are out of reach)."""
    if not has_local_envs(venv):
        return None
    wrappers = []
    while isinstance(venv, VecEnvWrapper):
        wrappers.append(_attributes(venv))
        venv = venv.venv
    assert isinstance(venv, DummyVecEnv)
    return {
        "wrappers": wrappers,
        "vec_env": _attributes(venv),
        "envs": [env_state(env) for env in venv.envs],
    }


def set_vec_env_state(venv: VecEnv, state: dict[str, Any]) -> None:
    """Put a VecEnv stack (built as the one :func:`vec_env_state` was taken from) back."""
    for saved in state["wrappers"]:
        if not isinstance(venv, VecEnvWrapper):
            raise ValueError("the VecEnv has fewer wrappers than the one the state was taken from")
        vars(venv).update(copy.deepcopy(saved))
        venv = venv.venv
    if not isinstance(venv, DummyVecEnv) or len(venv.envs) != len(state["envs"]):
        raise ValueError("the VecEnv's envs are not the ones the state was taken from")
    vars(venv).update(copy.deepcopy(state["vec_env"]))
    for env, saved in zip(venv.envs, state["envs"], strict=True):
        set_env_state(env, saved)
