"""The rollout worker: one process stepping a contiguous block of a vector env's envs (itself,
or in env processes of its own: ``env_processes``).

:class:`RolloutWorker` is a plain class (the pool makes it a Ray actor with ``ray.remote``),
so everything it does is also usable, and tested, in-process. Each call steps all its envs
at once and returns numpy arrays, so a vector step costs one round trip per worker.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv

from envs.env_state import object_state, set_object_state, set_vec_env_state, vec_env_state
from envs.factory import ATARI_FRAME_STACK, EnvSpec, env_kind, make_env
from envs.frame_stack import AtariFrameStack, PackedStackedObservations
from envs.process_blocks import ProcessBlocksVecEnv
from envs.shallow_dummy_vec_env import ShallowDummyVecEnv
from rlkit.core.allocator import keep_freed_memory
from rlkit.core.policy_weights import PolicyWeights
from rlkit.core.types import Trajectory
from rlkit.distributed.fragments import FragmentRecorder, PackedFrames
from rlkit.distributed.policies import WorkerPolicy
from rlkit.distributed.wire import Compressed

if TYPE_CHECKING:
    from agents.worker_rollouts import RandomRolloutPolicy, RolloutPolicy


def _env_layout(venv_state: Mapping[str, Any]) -> list[int] | None:
    """From :func:`envs.env_state.vec_env_state` of a worker's envs: ``[n_envs]`` for envs
    stepped in the worker, the block sizes for envs in env processes."""
    if "envs" in venv_state:
        return [len(venv_state["envs"])]
    blocks = venv_state.get("remote", {}).get("blocks")
    return None if blocks is None else [len(b["envs"]) for b in blocks]


def _describe_layout(layout: list[int] | None) -> str:
    if layout is None:
        return "unknown"
    total = f"{sum(layout)} env" + "s" * (sum(layout) != 1)
    return total if len(layout) == 1 else f"{total} in {len(layout)} env processes"


@dataclasses.dataclass
class _Block:
    """What :meth:`RolloutWorker.sample` keeps for one env process's block of envs."""

    stack: PackedStackedObservations | None
    recorder: FragmentRecorder
    obs: np.ndarray  # the envs' last observations (stacked where the worker stacks)


def _reset_infos(reset_infos: Sequence[dict[str, Any]], dones: np.ndarray) -> list[dict]:
    """Copies of the reset infos of the envs that are done (auto-reset), ``{}`` for the others."""
    return [dict(reset_infos[k]) if d else {} for k, d in enumerate(dones)]


def _update_shadow(
    shadow: PackedStackedObservations, obs: np.ndarray, dones: np.ndarray, infos: list[dict]
) -> None:
    """A step into a shadow frame stack, which rewrites terminal observations: given copies
    of the done envs' infos, so that the step's own stay as the envs gave them."""
    shadow.update(obs, dones, [dict(i) if d else i for i, d in zip(infos, dones, strict=True)])


def _end_process(why: str) -> None:
    """A Ray worker whose env process died ends too (its pool re-creates it whole)."""
    print(f"rlkit rollout worker: {why}; ending this worker", file=sys.stderr, flush=True)
    os._exit(1)


class RolloutWorker:
    """Envs ``first_rank .. first_rank + n_envs - 1`` of a vector env, in a
    :class:`~envs.shallow_dummy_vec_env.ShallowDummyVecEnv` (its infos are pickled on the way
    to the driver anyway, so SB3's deep copy of them would be wasted).

    Env ``first_rank + k`` is built by ``envs.make_env(spec, seed, first_rank + k)`` and its
    first reset uses seed ``seed + first_rank + k``, exactly as in ``envs.make_vec_env``, so
    workers together reproduce one ``make_vec_env(spec, n_envs, seed)``. Auto-reset, and the
    ``terminal_observation`` / ``TimeLimit.truncated`` infos, are the DummyVecEnv's.

    Args:
        spec: which env.
        seed: the vector env's seed.
        first_rank: global index of this worker's first env.
        n_envs: number of envs in this worker.
        frame_stack: stack Atari frames here (for worker-side policies); the vector env
            stacks them on the driver instead.
        shadow_stack: without ``frame_stack``, keep a copy of the driver's Atari frame stack
            here, for :meth:`rollout`'s policy (a RayVecEnv's workers, with worker rollouts).
        policy_seed: seeds the generator passed to worker-side policies and torch's.
        own_process: the worker is its process's only user (a Ray actor): tune the process's
            malloc to keep freed memory for reuse (:mod:`rlkit.core.allocator`). An Atari
            worker allocates a new frame stack every step and frees a call's fragments after
            it; with glibc's defaults that memory goes back to the OS and comes back as page
            faults, 1.3-3.4 per env step on Pong (BENCHMARKS.md, "Distributed rollouts on Ray").
            If one of its env processes dies, such a worker ends its own process, so that its
            pool re-creates it as a dead worker (with new env processes).
        env_processes: step the envs in this many helper processes
            (:class:`~envs.process_blocks.ProcessBlocksVecEnv`, one core each) instead of in
            this one; at most ``n_envs``.
    """

    def __init__(
        self,
        spec: EnvSpec,
        seed: int,
        first_rank: int,
        n_envs: int,
        frame_stack: bool = False,
        policy_seed: int = 0,
        shadow_stack: bool = False,
        own_process: bool = False,
        env_processes: int = 1,
    ) -> None:
        # One core per worker: intra-op threads would only fight the other workers.
        torch.set_num_threads(1)
        if own_process:
            keep_freed_memory()
        self.spec = spec
        self.base: ShallowDummyVecEnv | ProcessBlocksVecEnv
        if env_processes == 1:
            self.base = ShallowDummyVecEnv(
                [make_env(spec, seed, first_rank + k) for k in range(n_envs)]
            )
        else:
            on_lost = _end_process if own_process else None
            self.base = ProcessBlocksVecEnv(
                spec, seed, first_rank, n_envs, env_processes, on_lost=on_lost
            )
        self.base.seed(seed + first_rank)
        stack = frame_stack and env_kind(spec.env_id) == "atari"
        self.venv: VecEnv = AtariFrameStack(self.base, ATARI_FRAME_STACK) if stack else self.base
        self.stacks_frames = stack
        # Without the stack here (a RayVecEnv's worker: the driver stacks), a shadow of the
        # driver's stack, for the observations of a worker-side rollout policy.
        self._shadow: PackedStackedObservations | None = None
        self._needs_stack = env_kind(spec.env_id) == "atari" and not stack
        if self._needs_stack and shadow_stack:
            self._shadow = PackedStackedObservations(
                n_envs, ATARI_FRAME_STACK, self.base.observation_space
            )
        self.rollout_policy: RolloutPolicy | RandomRolloutPolicy | None = None
        self.rng = np.random.default_rng(policy_seed)
        torch.manual_seed(policy_seed)
        self.policy: WorkerPolicy | None = None
        self.recorder: FragmentRecorder | None = None
        self._blocks: list[_Block] | None = None  # sampling per env process (_sample_blocks)
        self._obs: np.ndarray | None = None
        self._step_number = 0
        self._last_step: tuple | None = None
        self.compress = False

    def _send(self, result: Any) -> Any:
        """``result`` as a data-carrying method returns it: compressed on the way out with
        :attr:`compress` (:mod:`rlkit.distributed.wire`; the receiver gets ``result``)."""
        return Compressed(result) if self.compress else result

    def set_compress(self, on: bool) -> bool:
        """Compress the results of ``reset``, ``step``, ``step_numbered``, ``sample`` and
        ``rollout`` from now on (for a worker on another node than the driver), or stop.
        Returns whether this worker now compresses."""
        self.compress = on
        return self.compress

    # -- bookkeeping ---------------------------------------------------------------------

    def ready(self) -> bool:
        """Answers once the envs are built (the pool waits on it)."""
        return True

    def niceness(self) -> int:
        """This worker process's niceness (Ray starts workers nicer than the raylet)."""
        return os.nice(0)

    def pid(self) -> int:
        """This worker's process id (lets tests and operators signal it)."""
        return os.getpid()

    def env_pids(self) -> list[int]:
        """The process ids of this worker's env processes (none when it steps its envs)."""
        return self.base.pids() if isinstance(self.base, ProcessBlocksVecEnv) else []

    def node_id(self) -> str | None:
        """The id (hex) of the Ray node this worker runs on; ``None`` outside Ray."""
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        """``(observation_space, action_space)`` of the (possibly frame-stacked) envs."""
        return self.venv.observation_space, self.venv.action_space

    # -- the VecEnv interface --------------------------------------------------------------

    def reset(
        self,
        seeds: Sequence[int | None] | None = None,
        options: Sequence[dict[str, Any]] | None = None,
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Reset every env; ``seeds``/``options`` (one per env) as in SB3's ``VecEnv.seed``.

        Returns: observations ``(n_envs, *obs_shape)`` and the reset infos.
        """
        return self._send(self._reset(seeds, options))

    def _reset(
        self,
        seeds: Sequence[int | None] | None = None,
        options: Sequence[dict[str, Any]] | None = None,
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        if seeds is not None:
            self.base._seeds = list(seeds)
        if options is not None:
            self.base._options = [dict(o) for o in options]
        obs = self.venv.reset()
        self._obs = obs
        if self._shadow is not None:
            self._shadow.reset(obs)
        return obs, [dict(info) for info in self.base.reset_infos]

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]], list[dict[str, Any]]]:
        """Step every env with ``actions`` (shape ``(n_envs, *act_shape)``).

        Returns: ``(obs, rews, dones, infos, reset_infos)`` as from an SB3 VecEnv, plus the
        reset infos of the envs that auto-reset (empty dicts for the others).
        """
        return self._send(self._step(actions))

    def _step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]], list[dict[str, Any]]]:
        obs, rews, dones, infos = self.venv.step(actions)
        self._obs = obs
        if self._shadow is not None:
            _update_shadow(self._shadow, obs, dones, infos)
        return obs, rews, dones, infos, _reset_infos(self.base.reset_infos, dones)

    def step_numbered(self, job: tuple[int, np.ndarray]) -> tuple:
        """Step ``job = (number, actions)`` exactly once: :meth:`step` if ``number`` is the
        next step's number, the remembered result if it is the last one's.

        The driver numbers its steps so that, when a step's result is lost (a compiled
        graph is torn down as soon as any of its workers dies), it can ask again and the
        envs never take the same step twice.
        """
        number, actions = job
        if number == self._step_number and self._last_step is not None:
            return self._send(self._last_step)
        if number != self._step_number + 1:
            raise RuntimeError(f"step {number} asked, but the last step was {self._step_number}")
        self._last_step = self._step(actions)
        self._step_number = number
        return self._send(self._last_step)

    def get_attr(self, name: str, indices: Sequence[int]) -> list[Any]:
        """Attribute ``name`` of each of this worker's envs at ``indices`` (local to the worker)."""
        return self.base.get_attr(name, list(indices))

    def set_attr(self, name: str, value: Any, indices: Sequence[int]) -> list[None]:
        """Set attribute ``name`` to ``value`` on this worker's envs at ``indices``; returns one
        None per env."""
        self.base.set_attr(name, value, list(indices))
        return [None] * len(indices)

    def env_method(
        self, name: str, args: tuple, kwargs: dict[str, Any], indices: Sequence[int]
    ) -> list[Any]:
        """``env.name(*args, **kwargs)`` of each of this worker's envs at ``indices``."""
        return self.base.env_method(name, *args, indices=list(indices), **kwargs)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Sequence[int]) -> list:
        """Whether each of this worker's envs at ``indices`` is wrapped in ``wrapper_class``."""
        return self.base.env_is_wrapped(wrapper_class, list(indices))

    def close(self) -> None:
        """Close this worker's envs (and their env processes, if any)."""
        self.venv.close()

    # -- a stopped run's snapshot --------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """What this worker needs to step on exactly as it would have (a stopped run's
        checkpoint, :meth:`RayVecEnv.get_env_state`): its envs mid-episode
        (:func:`envs.env_state.vec_env_state`), the last observation, the shadow frame stack,
        and the generators its policies draw from (this one's and torch's).

        Raises:
            RuntimeError: this worker samples fragments; their recorder is not saved.
        """
        if self.recorder is not None or self._blocks is not None:
            raise RuntimeError("a fragment sampler's worker cannot be saved mid-fragment")
        return {
            "venv": vec_env_state(self.venv),
            "obs": None if self._obs is None else self._obs.copy(),
            "shadow": None if self._shadow is None else object_state(self._shadow),
            "rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Go back to ``state`` from :meth:`get_state` of a worker built alike.

        Raises:
            ValueError: the state needs a shadow frame stack this worker does not keep, or
                its envs are not built as these are (checked before anything changes).
        """
        if state["shadow"] is None and self._shadow is not None and state["obs"] is not None:
            raise ValueError("the saved worker kept no shadow frame stack for rollouts")
        saved = _env_layout(state["venv"])
        here = [self.base.num_envs]
        if isinstance(self.base, ProcessBlocksVecEnv):
            here = [len(b) for b in self.base.blocks]
        if saved != here:
            raise ValueError(
                f"the saved worker's envs ({_describe_layout(saved)}) are not this worker's"
                f" ({_describe_layout(here)})"
            )
        set_vec_env_state(self.venv, state["venv"])
        self._obs = None if state["obs"] is None else state["obs"].copy()
        if self._shadow is not None and state["shadow"] is not None:
            set_object_state(self._shadow, state["shadow"])
        self.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])

    # -- fragments ---------------------------------------------------------------------------

    def set_policy(self, policy: WorkerPolicy) -> None:
        """Use ``policy`` for :meth:`sample` from now on."""
        self.policy = policy

    def load_state_dict(self, state_dict: Mapping[str, Any] | PolicyWeights) -> None:
        """Give the policy new weights (through its ``load_state_dict``, as a ``state_dict``
        even when they came as :class:`~rlkit.core.policy_weights.PolicyWeights`)."""
        if self.policy is None:
            raise RuntimeError("no policy: call set_policy first")
        self.policy.load_state_dict(PolicyWeights.unwrap(state_dict))  # type: ignore[attr-defined]

    def sample(
        self,
        fragment_length: int,
        state_dict: Mapping[str, Any] | PolicyWeights | None = None,
        pack_frames: bool = False,
    ) -> list[tuple[int, Trajectory | PackedFrames]]:
        """Step every env ``fragment_length`` times with the worker's policy.

        Episodes carry over from one call to the next. Args: ``state_dict``: new weights for
        the policy (its ``load_state_dict``) before stepping; ``pack_frames``: where this
        worker stacks Atari frames, send each piece as
        :class:`~rlkit.distributed.fragments.PackedFrames` (a quarter of the bytes; the
        receiver calls ``unpack()``).

        Returns: ``(local env index, piece)`` pairs, ordered by time of completion; each env's
        pieces hold ``fragment_length`` steps together (a piece ends at an episode's end or
        at the end of the call).
        """
        if state_dict is not None:
            self.load_state_dict(state_dict)
        if self.policy is None:
            raise RuntimeError("no policy: call set_policy first")
        if isinstance(self.base, ProcessBlocksVecEnv):
            return self._send(self._sample_blocks(fragment_length, pack_frames))
        if self.recorder is None:
            self.recorder = FragmentRecorder(self.venv.num_envs, self.spec.render_state)
            obs, infos = self._reset()
            self.recorder.start(obs, infos)
        obs = self._obs
        assert obs is not None
        for _ in range(fragment_length):
            acts = np.array(self.policy(obs, self.rng))  # a copy: the recorder keeps it
            obs, rews, dones, infos = self.venv.step(acts)
            # The recorder reads the reset infos of the envs that are done, straight away.
            self.recorder.record(acts, obs, rews, dones, infos, self.base.reset_infos)
        self._obs = obs
        return self._send(self.recorder.flush(pack_frames and self.stacks_frames))

    def _sample_blocks(
        self, fragment_length: int, pack_frames: bool
    ) -> list[tuple[int, Trajectory | PackedFrames]]:
        """:meth:`sample` with the envs in env processes, pipelined: each block of envs gets
        its next actions as soon as its step is recorded, so that one helper steps while
        the worker stacks, records and acts for another's block (instead of every helper
        waiting for the worker's work on all the envs at each step). The policy is called
        once per block and step, in block order."""
        base = self.base
        assert isinstance(base, ProcessBlocksVecEnv) and self.policy is not None
        if self._blocks is None:
            first = base.reset()
            self._blocks = []
            for b in base.blocks:
                stack = None
                if self.stacks_frames:
                    stack = PackedStackedObservations(
                        len(b), ATARI_FRAME_STACK, base.observation_space
                    )
                obs = first[b.start : b.stop]
                obs = stack.reset(obs) if stack is not None else obs
                recorder = FragmentRecorder(len(b), self.spec.render_state)
                recorder.start(obs, base.reset_infos[b.start : b.stop])
                self._blocks.append(_Block(stack, recorder, obs))
        blocks, policy = self._blocks, self.policy
        acts: list[np.ndarray] = [np.empty(0)] * len(blocks)

        def act(i: int) -> np.ndarray:
            acts[i] = np.array(policy(blocks[i].obs, self.rng))  # a copy: the recorder keeps it
            return acts[i]

        def take(i: int, step: tuple) -> None:
            block, envs = blocks[i], base.blocks[i]
            obs, rews, dones, infos = step
            if block.stack is not None:
                obs, infos = block.stack.update(obs, dones, infos)
            resets = base.reset_infos[envs.start : envs.stop]
            block.recorder.record(acts[i], obs, rews, dones, infos, resets)
            block.obs = obs

        # Stacked frames are new arrays: the shared observations need no copy then.
        base.pipeline(fragment_length, act, take, copy=not self.stacks_frames)
        pack = pack_frames and self.stacks_frames
        return [
            (envs.start + k, piece)
            for envs, block in zip(base.blocks, self._blocks, strict=True)
            for k, piece in block.recorder.flush(pack)
        ]

    # -- on-policy rollouts -----------------------------------------------------------------

    def set_rollout_policy(self, policy: RolloutPolicy | RandomRolloutPolicy) -> None:
        """Use ``policy`` (from :mod:`agents.worker_rollouts`) for :meth:`rollout`."""
        self.rollout_policy = policy

    def load_rollout_state_dict(self, weights: Mapping[str, Any] | PolicyWeights) -> None:
        """Load ``weights`` (a ``state_dict`` or :class:`PolicyWeights`) into the rollout policy.

        Raises:
            RuntimeError: no rollout policy was set (:meth:`set_rollout_policy`).
        """
        if self.rollout_policy is None:
            raise RuntimeError("no rollout policy: call set_rollout_policy first")
        self.rollout_policy.load_state_dict(weights)

    def rollout(
        self, n_steps: int, weights: Mapping[str, Any] | PolicyWeights | None = None
    ) -> tuple[list[tuple], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Take ``n_steps`` vector steps (:meth:`step`) with the rollout policy, from where the
        envs are (reset first if they never were), with new ``weights`` first if given (a
        ``state_dict`` or :class:`~agents.worker_rollouts.PolicyWeights`). The policy sees
        what the driver's VecEnv gives (Atari: the 4-frame stack kept in the shadow of the
        driver's).

        Returns: ``(steps, actions, env_actions, values, log_probs)``: each step's
        :meth:`step` result, the sampled actions ``(n_steps, n_envs, *act_shape)``, what the
        envs were given (clipped), and ``(n_steps, n_envs)`` values and log-probabilities.
        """
        if weights is not None:
            self.load_rollout_state_dict(weights)
        policy = self.rollout_policy
        if policy is None:
            raise RuntimeError("no rollout policy: call set_rollout_policy first")
        if self._needs_stack and self._shadow is None:
            raise RuntimeError("an Atari rollout needs the frame stack: create with shadow_stack")
        if self._obs is None:
            self._reset()
        collect = (
            self._rollout_blocks if isinstance(self.base, ProcessBlocksVecEnv) else self._rollout
        )
        steps, acts, env_acts, values, log_probs = collect(n_steps, policy)
        stacked = (np.stack(x) for x in (acts, env_acts, values, log_probs))
        return self._send((steps, *stacked))

    def _rollout(self, n_steps: int, policy: RolloutPolicy | RandomRolloutPolicy) -> tuple:
        """:meth:`rollout` with the envs stepped here, one vector step after another.

        Returns: ``(steps, acts, env_acts, values, log_probs)``, lists over the steps."""
        steps, acts, env_acts, values, log_probs = [], [], [], [], []
        for _ in range(n_steps):
            obs = self._shadow.stacked_obs if self._shadow is not None else self._obs
            action, value, log_prob = policy(obs)
            env_action = policy.env_actions(action)
            steps.append(self._step(env_action))
            acts.append(action)
            env_acts.append(env_action)
            values.append(value)
            log_probs.append(log_prob)
        return steps, acts, env_acts, values, log_probs

    def _rollout_blocks(self, n_steps: int, policy: RolloutPolicy | RandomRolloutPolicy) -> tuple:
        """:meth:`rollout` with the envs in env processes, pipelined as :meth:`sample` is:
        the policy acts for each block as soon as its step is back, while the others step.
        The frame stack's shadow is split into the blocks' for the rollout and joined after;
        each step's results are joined over the blocks (as :meth:`step` gives them).

        Returns: ``(steps, acts, env_acts, values, log_probs)``, lists over the steps."""
        base = self.base
        assert isinstance(base, ProcessBlocksVecEnv) and self._obs is not None
        shadows: list[PackedStackedObservations | None] = []
        for b in base.blocks:
            shadow = None
            if self._shadow is not None:
                shadow = PackedStackedObservations(
                    len(b), ATARI_FRAME_STACK, base.observation_space
                )
                shadow.stacked_obs = self._shadow.stacked_obs[b.start : b.stop].copy()
            shadows.append(shadow)
        last = [self._obs[b.start : b.stop] for b in base.blocks]
        # per block, per step: (step results, action, env action, value, log-probability)
        done: list[list[tuple]] = [[] for _ in base.blocks]
        pending: list[tuple] = [()] * len(base.blocks)

        def act(i: int) -> np.ndarray:
            shadow = shadows[i]
            action, value, log_prob = policy(shadow.stacked_obs if shadow else last[i])
            env_action = policy.env_actions(action)
            pending[i] = (action, env_action, value, log_prob)
            return env_action

        def take(i: int, step: tuple) -> None:
            obs, rews, dones, infos = step
            shadow = shadows[i]
            if shadow is not None:
                _update_shadow(shadow, obs, dones, infos)
            envs = base.blocks[i]
            resets = _reset_infos(base.reset_infos[envs.start : envs.stop], dones)
            done[i].append(((obs, rews, dones, infos, resets), *pending[i]))
            last[i] = obs

        base.pipeline(n_steps, act, take)
        self._obs = np.concatenate(last)
        if self._shadow is not None:
            stacks = [s.stacked_obs for s in shadows if s is not None]
            self._shadow.stacked_obs = np.concatenate(stacks)
        steps, acts, env_acts, values, log_probs = [], [], [], [], []
        for t in range(n_steps):
            parts = [done[i][t] for i in range(len(base.blocks))]
            results = [p[0] for p in parts]
            steps.append(
                (
                    np.concatenate([r[0] for r in results]),
                    np.concatenate([r[1] for r in results]),
                    np.concatenate([r[2] for r in results]),
                    [info for r in results for info in r[3]],
                    [info for r in results for info in r[4]],
                )
            )
            for out, k in ((acts, 1), (env_acts, 2), (values, 3), (log_probs, 4)):
                out.append(np.concatenate([p[k] for p in parts]))
        return steps, acts, env_acts, values, log_probs
