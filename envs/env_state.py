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
A stack over envs in other processes gives ``None``, unless its VecEnv snapshots them itself
(:class:`RemoteEnvs`: Ray workers, :class:`rlkit.distributed.RayVecEnv`).
"""

from __future__ import annotations

import copy
import pickle
import types
from typing import Any, Protocol, runtime_checkable

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


def object_state(obj: object) -> dict[str, Any]:
    """A deep copy of ``obj``'s plain attributes (see the module docstring)."""
    return {k: copy.deepcopy(v) for k, v in vars(obj).items() if _kept(k, v)}


def set_object_state(obj: object, state: dict[str, Any]) -> None:
    """Give ``obj`` back the attributes :func:`object_state` took (copies of them)."""
    vars(obj).update(copy.deepcopy(state))


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
        wrappers.append(object_state(env))
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
        set_object_state(env, saved)
        env = env.env
    if isinstance(env, gym.Wrapper):
        raise ValueError("the env has more wrappers than the one the state was taken from")
    env.np_random.bit_generator.state = copy.deepcopy(state["np_random"])
    _set_simulator_state(env, state["simulator"])


@runtime_checkable
class RemoteEnvs(Protocol):
    """A VecEnv whose envs live in other processes that can snapshot them (a Ray
    ``RayVecEnv``): :func:`vec_env_state` and :func:`set_vec_env_state` go through these."""

    def get_env_state(self) -> Any | None:
        """A snapshot of every remote env, or None when one cannot be taken."""
        ...

    def set_env_state(self, state: Any) -> None:
        """Put the remote envs back into a snapshot :meth:`get_env_state` took."""
        ...


def _stack(venv: VecEnv) -> tuple[list[VecEnvWrapper], VecEnv]:
    """The VecEnv wrappers of ``venv``, outermost first, and the VecEnv under them."""
    wrappers = []
    while isinstance(venv, VecEnvWrapper):
        wrappers.append(venv)
        venv = venv.venv
    return wrappers, venv


def vec_env_state(venv: VecEnv) -> dict[str, Any] | None:
    """The state of a VecEnv stack over a ``DummyVecEnv``, or over a VecEnv of remote envs
    that snapshots them (:class:`RemoteEnvs`); ``None`` for any other (subprocesses: their
    envs are out of reach) and when the remote envs give none."""
    wrappers, base = _stack(venv)
    if isinstance(base, DummyVecEnv):
        inner: dict[str, Any] = {
            "vec_env": object_state(base),
            "envs": [env_state(env) for env in base.envs],
        }
    elif isinstance(base, RemoteEnvs):
        inner = {"remote": base.get_env_state()}
        if inner["remote"] is None:
            return None
    else:
        return None
    return {"wrappers": [object_state(w) for w in wrappers], **inner}


def set_vec_env_state(venv: VecEnv, state: dict[str, Any]) -> None:
    """Put a VecEnv stack (built as the one :func:`vec_env_state` was taken from) back.

    Raises:
        ValueError: the stack is not built as that one was (checked before anything is
            changed here; remote envs check their own part before changing it).
    """
    wrappers, base = _stack(venv)
    if len(wrappers) != len(state["wrappers"]):
        raise ValueError(
            f"the VecEnv has {len(wrappers)} wrappers, the one the state was taken from had"
            f" {len(state['wrappers'])}"
        )
    if "remote" in state:
        if not isinstance(base, RemoteEnvs):
            raise ValueError("the state is of remote envs, and this VecEnv's are not")
        base.set_env_state(state["remote"])
    elif not isinstance(base, DummyVecEnv) or len(base.envs) != len(state["envs"]):
        raise ValueError("the VecEnv's envs are not the ones the state was taken from")
    else:
        set_object_state(base, state["vec_env"])
        for env, saved in zip(base.envs, state["envs"], strict=True):
            set_env_state(env, saved)
    for wrapper, saved in zip(wrappers, state["wrappers"], strict=True):
        set_object_state(wrapper, saved)
