"""RayVecEnv: an SB3 VecEnv whose envs live in Ray actors, one batched call per worker per step."""

from __future__ import annotations

import copy
import logging
import operator
import threading
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import ray
from ray.exceptions import RayChannelError, RayChannelTimeoutError
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from envs.factory import ATARI_FRAME_STACK, EnvSpec, check_env_id, env_kind
from envs.frame_stack import AtariFrameStack
from envs.render_state import RENDER_STATE_KEY
from rlkit.core.rollout_plan import RolloutPlan
from rlkit.distributed.connection import error_line
from rlkit.distributed.pool import CALL_TIMEOUT_S, WORKER_LOST, WorkerPool
from rlkit.distributed.step_graph import StepGraph, graphs_supported, step_timeout_s

if TYPE_CHECKING:  # agents sits above this package; its policies only pass through here
    from agents.worker_rollouts import RandomRolloutPolicy, RolloutPolicy
    from rlkit.core.policy_weights import PolicyWeights

logger = logging.getLogger("rlkit.distributed")

#: ``info`` key set on the step where a worker's death cut its envs' episodes.
WORKER_RESTARTED_KEY = "worker_restarted"
#: How long a :class:`RayVecEnv` waits for a compiled graph's teardown before it steps with
#: actor calls until the teardown ends: Ray's waits for every actor's loop, and a hung one's
#: ends only once the pool kills that worker.
TEARDOWN_TIMEOUT_S = 30.0


class RayVecEnv(VecEnv):
    """``n_envs`` copies of ``spec`` spread over ``n_workers`` Ray actors.

    Each worker holds a contiguous block of envs in a DummyVecEnv; a step sends each worker
    its block of actions and gets back numpy arrays (observations ``(n_i, *obs_shape)``,
    rewards, dones, infos), so one vector step is one round trip per worker, all in
    parallel. Env ``k`` is seeded as in ``envs.make_vec_env(spec, n_envs, seed)``, so the
    two give the same observations and rewards for the same actions. Atari observations are
    single preprocessed frames ``(84, 84, 1)``; :func:`make_ray_vec_env` adds the 4-frame
    stack on the driver, as ``make_vec_env`` does.

    With ``compiled=True`` steps go through a compiled Ray graph
    (:mod:`rlkit.distributed.step_graph`), 3-6x cheaper per round trip than actor calls,
    unless the driver is a Ray Client or some worker runs on another node than the driver;
    ``reset`` and the attribute calls stay ordinary actor calls. It pays when the driver and
    every worker have a core of their own; on oversubscribed cores the graph's polling makes
    stepping several times slower (``BENCHMARKS.md``), hence off by default.

    Fault tolerance: if a worker's process dies, the worker is re-created with fresh envs
    (a new seed) and its envs' episodes end on that step as time-limit truncations: ``done``
    True, reward 0, ``info["TimeLimit.truncated"] = True``, ``info["terminal_observation"]``
    the last observation seen from that env, and the new episode's first observation in
    ``obs`` (SB3 then bootstraps from the value of the last observation). A warning is
    logged and :attr:`restarts` counts the re-creations; a worker that dies more than
    ``max_restarts`` times raises :class:`~rlkit.distributed.pool.WorkerFailedError`.
    ``get_attr``/``set_attr``/``env_method`` on a dead worker run again on its replacement.

    Args:
        spec: the env.
        n_envs: total number of envs (>= n_workers).
        n_workers: number of Ray actors.
        seed: env ``k`` is seeded ``seed + k``.
        max_restarts: re-creations allowed per worker.
        num_cpus: CPUs reserved per actor (lowered when the cluster has fewer); None: one
            per env process.
        compiled: step through a compiled Ray graph when possible (see above).
        worker_rollouts: let on-policy agents with
            :class:`agents.worker_rollouts.WorkerRolloutsMixin` (the presets' TRPO and A2C)
            collect each rollout with one :meth:`rollout` call per worker instead of one
            round trip per step.
        compress: as for :class:`~rlkit.distributed.WorkerPool`: by default workers on
            another node than the driver's compress their results (Atari frames and clip
            frames shrink 90-290x), the others do not.
        env_processes: each worker steps its envs in this many processes of its own
            (:class:`~envs.process_blocks.ProcessBlocksVecEnv`: one message per process per
            step, observations in shared memory) and reserves that many CPUs; at most each
            worker's number of envs. 1 (the default): in the worker's own process.
        call_timeout_s: how long a call to a worker (a step, a whole rollout) may take
            before the worker is taken for hung: killed and re-created
            (:class:`~rlkit.distributed.WorkerPool`'s ``call_timeout_s``).
    """

    def __init__(
        self,
        spec: EnvSpec,
        n_envs: int,
        n_workers: int,
        seed: int,
        max_restarts: int = 3,
        num_cpus: float | None = None,
        compiled: bool = False,
        worker_rollouts: bool = True,
        compress: bool | None = None,
        env_processes: int = 1,
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        check_env_id(spec.env_id)
        self._closed = False
        self.spec = spec
        self.worker_rollouts = worker_rollouts
        self._rollout_policy: RolloutPolicy | None = None
        self._rollout_policy_ref: ray.ObjectRef | None = None
        self._rollout_weights_ref: ray.ObjectRef | None = None
        # Steps the workers took in a rollout, not yet replayed: (per-worker step results, the
        # actions the envs were given, which of them step_async must be given again).
        self._replay: deque[tuple[list[tuple], np.ndarray, np.ndarray]] = deque()
        self._graph: StepGraph | None = None
        self._teardown: threading.Thread | None = None  # a graph's, in a thread of its own
        self.teardown_timeout_s = TEARDOWN_TIMEOUT_S
        self._teardown_late = False  # it outlasted teardown_timeout_s
        self._use_graph = compiled and graphs_supported()
        self._step_numbers = [0] * n_workers
        self._jobs: list[tuple[int, np.ndarray]] | None = None
        self.pool = WorkerPool(
            spec, n_envs, n_workers, seed, max_restarts, num_cpus=num_cpus,
            on_restart=self._on_restart, shadow_stack=worker_rollouts, compress=compress,
            env_processes=env_processes, call_timeout_s=call_timeout_s,
        )  # fmt: skip
        observation_space, action_space = self.pool.call(0, "spaces")
        self._last_obs: np.ndarray | None = None
        self._last_states: list[Any] = [None] * n_envs
        self._pending: list[ray.ObjectRef] | None = None
        super().__init__(n_envs, observation_space, action_space)
        self.seed(seed)

    @property
    def restarts(self) -> int:
        """How many times a worker was re-created after its process died."""
        return self.pool.restarts

    def worker_pid(self, worker: int) -> int:
        """Process id of worker ``worker`` (for monitoring, and for tests that kill it)."""
        self._check_open()
        return self.pool.pid(worker)

    def worker_node_id(self, worker: int) -> str:
        """Id (hex) of the Ray node that worker ``worker`` runs on."""
        self._check_open()
        return self.pool.node_id(worker)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called: the workers are gone, and every call that needs
        them raises."""
        return self._closed

    def _check_open(self) -> None:
        """Raise one clear line instead of the ``IndexError`` of a pool with no workers."""
        if self._closed:
            raise RuntimeError("RayVecEnv is closed")

    # -- reset and step -----------------------------------------------------------------

    @property
    def compiled(self) -> bool:
        """Whether the next step goes through a compiled Ray graph."""
        return self._use_graph

    def reset(self) -> VecEnvObs:
        """Reset every env (with the seeds/options of :meth:`seed`/:meth:`set_options`, once).

        Returns: observations, shape ``(n_envs, *obs_shape)``.

        Raises:
            RuntimeError: the VecEnv was closed.
        """
        self._check_open()
        self._pending = None
        self._replay.clear()
        if self._jobs is not None and self._graph is not None:
            self._graph.drain()
        self._jobs = None
        args = [
            (self._seeds[r.start : r.stop], self._options[r.start : r.stop])
            for r in self.pool.ranges
        ]
        refs = [self.pool.submit(i, "reset", *a) for i, a in enumerate(args)]
        results = self.pool.results(refs, retry=[("reset", a) for a in args])
        obs = np.concatenate([o for o, _ in results])
        self.reset_infos = [info for _, infos in results for info in infos]
        self._reset_seeds()
        self._reset_options()
        self._remember(obs, self.reset_infos, np.ones(self.num_envs, dtype=bool))
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Send each worker its block of ``actions`` (shape ``(n_envs, *act_shape)``)."""
        self._check_open()
        actions = np.asarray(actions)
        if self._replay:
            _, expected, checked = self._replay[0]
            if not np.array_equal(actions[checked], expected[checked]):
                self._replay.clear()
                raise RuntimeError(
                    "step_async got other actions than the workers took in the rollout being"
                    " replayed"
                )
            return
        blocks = [actions[r.start : r.stop] for r in self.pool.ranges]
        graph = self._step_graph()
        if graph is None:
            self._pending = [self.pool.submit(i, "step", b) for i, b in enumerate(blocks)]
            return
        self._step_numbers = [n + 1 for n in self._step_numbers]
        self._jobs = list(zip(self._step_numbers, blocks, strict=True))
        try:
            graph.submit(self._jobs)
        except (*WORKER_LOST, RayChannelError):
            self._forget_graph()  # step_wait asks each worker on its own

    def step_wait(self) -> VecEnvStepReturn:
        """Collect every worker's step: ``(obs, rews, dones, infos)`` as from a DummyVecEnv."""
        self._check_open()
        if self._replay:
            results = self._replay.popleft()[0]
        elif self._jobs is not None:
            results = self._graph_results()
        elif self._pending is not None:
            refs, self._pending = self._pending, None
            results = self.pool.results(refs, on_death=self._truncated_step)
        else:
            raise RuntimeError("step_wait called without step_async")
        obs = np.concatenate([r[0] for r in results])
        rews = np.concatenate([r[1] for r in results])
        dones = np.concatenate([r[2] for r in results])
        infos = [info for r in results for info in r[3]]
        for k, reset_info in enumerate(info for r in results for info in r[4]):
            if dones[k]:
                self.reset_infos[k] = reset_info
        self._remember(obs, infos, dones)
        return obs, rews, dones, infos

    def _step_graph(self) -> StepGraph | None:
        """The compiled step graph, compiled on first use; ``None``: use actor calls."""
        if self._graph is None and self._use_graph and not self._tearing_down():
            here = ray.get_runtime_context().get_node_id()
            if any(node != here for node in self.pool.nodes):
                # Across nodes a graph's channels go through the raylets' RPCs, which were
                # unreliable in our two-node test (a worker lost mid-step), and the gain
                # is the same-node shared memory anyway.
                self._use_graph = False
                logger.info("stepping with Ray actor calls: some workers run on other nodes")
                return None
            try:
                self._graph = StepGraph(self.pool.handles)
            except WORKER_LOST:
                return None  # a dead worker: this step's actor calls restart it
            except Exception as exc:  # noqa: BLE001 - any reason: fall back, and say so
                self._use_graph = False
                logger.warning(
                    "stepping with Ray actor calls: no compiled graph (%s)", error_line(exc)
                )
        return self._graph

    def _graph_results(self) -> list[tuple]:
        """The results of the graph step in flight. If a worker died, the graph is gone:
        each worker is asked again for its numbered step (a survivor returns the step it
        took) and a dead one is restarted, its episodes truncated."""
        jobs, self._jobs = self._jobs, None
        assert jobs is not None
        timeout = None
        if self._graph is not None:
            try:
                return self._graph.results()
            except RayChannelTimeoutError:
                # A worker hung (a step takes milliseconds, Ray waited 10 s): the calls below
                # find which, given as long again; Ray's teardown would wait on it for ever.
                self._forget_graph(wait=False)
                timeout = step_timeout_s()
            except (*WORKER_LOST, RayChannelError):
                self._forget_graph()
        return [
            self.pool.result(
                i,
                self.pool.submit(i, "step_numbered", job),
                on_death=self._truncated_step,
                timeout=timeout,
            )
            for i, job in enumerate(jobs)
        ]

    def _tearing_down(self) -> bool:
        """Whether an earlier graph is still being torn down: no new one on the same actors
        until it is. Waits up to ``teardown_timeout_s`` for it, once; while it lasts longer
        (waiting on a hung worker's loop, until the pool kills that worker), steps go by
        actor calls."""
        if self._teardown is None:
            return False
        self._teardown.join(timeout=0 if self._teardown_late else self.teardown_timeout_s)
        if not self._teardown.is_alive():
            self._teardown, self._teardown_late = None, False
            return False
        if not self._teardown_late:
            self._teardown_late = True
            logger.warning(
                "stepping with Ray actor calls until a compiled graph's teardown ends"
                " (it waits on a worker that hung)"
            )
        return True

    def _forget_graph(self, wait: bool = True) -> None:
        """Tear the compiled graph down, in a thread of its own; ``wait``: for at most
        ``teardown_timeout_s`` (:meth:`_tearing_down`). A worker that died ends its loop, but
        another that hung at the same moment would keep the teardown waiting on it for ever;
        once its call times out the pool kills it, and the teardown ends in the background."""
        if self._graph is not None:
            graph, self._graph = self._graph, None
            self._teardown = graph.teardown()
            if wait:
                self._tearing_down()

    def _on_restart(self, i: int) -> None:
        """Worker ``i`` was re-created: the graph held the dead actor, and steps restart; the
        rollout policy and its latest weights are installed again."""
        self._forget_graph()
        self._step_numbers[i] = 0
        if self._rollout_policy_ref is not None:
            self.pool.call(i, "set_rollout_policy", self._rollout_policy_ref)
        if self._rollout_weights_ref is not None:
            self.pool.call(i, "load_rollout_state_dict", self._rollout_weights_ref)

    # -- rollouts on the workers ----------------------------------------------------------

    def rollout(
        self,
        policy: RolloutPolicy | RandomRolloutPolicy,
        n_steps: int,
        weights: PolicyWeights | None,
    ) -> RolloutPlan:
        """Every worker takes ``n_steps`` steps of its envs with its copy of ``policy`` (sent
        once per policy object) and ``weights`` (put in the object store once per call;
        None: the policy's as they are), in one call each.

        The steps are queued: the next ``n_steps`` :meth:`step` calls, which must be given
        the actions the workers took (the plan's actions, clipped as SB3 clips them), return
        them instead of stepping, so that every wrapper above sees the rollout step by
        step. A worker that dies meanwhile is re-created; its envs' first step is then the
        truncation :meth:`step` makes on a death, and its replacement takes the other
        ``n_steps - 1`` from fresh episodes (see :class:`~rlkit.core.rollout_plan.RolloutPlan`).

        Returns: the policy's actions, values and log-probabilities for every step.
        """
        self._check_open()
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        if self._replay:
            raise RuntimeError(
                f"{len(self._replay)} steps of the last rollout were not replayed: step through"
                " them (or reset) before the next rollout"
            )
        self._pending = None
        if self._jobs is not None:  # a compiled-graph step in flight: take it first
            self._graph_results()
        if self._rollout_policy is not policy:
            self._rollout_policy, self._rollout_policy_ref = policy, ray.put(policy)
            self._rollout_weights_ref = None  # the last policy's
            for i in range(self.pool.n_workers):
                self.pool.call(i, "set_rollout_policy", self._rollout_policy_ref)
        ref = None
        if weights is not None:
            self._rollout_weights_ref = ref = ray.put(weights)
        refs = [self.pool.submit(i, "rollout", n_steps, ref) for i in range(self.pool.n_workers)]
        decide_first: list[range] = []

        def on_death(i: int) -> tuple:
            decide_first.append(self.pool.ranges[i])
            return self._restarted_rollout(i, n_steps)

        results = self.pool.results(refs, on_death=on_death)
        actions, env_actions, values, log_probs = (
            np.concatenate([r[k] for r in results], axis=1) for k in range(1, 5)
        )
        every = np.ones(self.num_envs, dtype=bool)
        first = every.copy()  # the driver decides the first step of the restarted blocks
        for block in decide_first:
            first[block.start : block.stop] = False
        for t in range(n_steps):
            self._replay.append(([r[0][t] for r in results], env_actions[t], every if t else first))
        return RolloutPlan(actions, values, log_probs, tuple(decide_first))

    def _restarted_rollout(self, i: int, n_steps: int) -> tuple:
        """Worker ``i``'s rollout after it died: the truncation of its episodes, then
        ``n_steps - 1`` steps of its replacement (the step-0 policy rows are zeros)."""
        while True:
            first = self._truncated_step(i)
            if n_steps == 1:
                break
            ref = self.pool.submit(i, "rollout", n_steps - 1, None)
            try:
                steps, *arrays = self.pool.get(ref)
                break
            except WORKER_LOST as exc:
                self.pool.restart(i, exc)  # raises once it has died too often
        if n_steps == 1:
            n = len(self.pool.ranges[i])
            act_shape = self.action_space.shape or ()
            zeros = np.zeros((1, n, *act_shape), dtype=self.action_space.dtype)
            return [first], zeros, zeros, np.zeros((1, n), np.float32), np.zeros((1, n), np.float32)
        padded = [np.concatenate([np.zeros_like(a[:1]), a]) for a in arrays]
        return [first, *steps], *padded

    def _remember(self, obs: np.ndarray, infos: list[dict[str, Any]], dones: np.ndarray) -> None:
        """Keep what a truncation needs if a worker dies during the next step."""
        self._last_obs = obs
        if self.spec.render_state:
            for k, info in enumerate(infos):
                key_info = self.reset_infos[k] if dones[k] else info
                self._last_states[k] = key_info.get(RENDER_STATE_KEY)

    def _truncated_step(self, i: int) -> tuple:
        """The step of freshly re-created worker ``i``: its envs' episodes end, truncated."""
        envs = self.pool.ranges[i]
        obs, reset_infos = self.pool.call(i, "reset")
        assert self._last_obs is not None
        infos = []
        for k in envs:
            info = {
                "TimeLimit.truncated": True,
                "terminal_observation": self._last_obs[k],
                WORKER_RESTARTED_KEY: True,
            }
            if self.spec.render_state:
                info[RENDER_STATE_KEY] = self._last_states[k]
            infos.append(info)
        n = len(envs)
        return obs, np.zeros(n, dtype=np.float32), np.ones(n, dtype=bool), infos, reset_infos

    # -- a stopped run's snapshot ------------------------------------------------------

    #: What the driver keeps between steps, besides the workers' own state.
    _DRIVER_STATE = ("_last_obs", "_last_states", "reset_infos", "_seeds", "_options")

    def get_env_state(self) -> dict[str, Any] | None:
        """Every worker's envs mid-episode, generators and frame stack
        (:meth:`RolloutWorker.get_state`), and what this side keeps between steps, for a
        stopped run's checkpoint (``envs.env_state.vec_env_state``). ``None`` if a worker
        died meanwhile: its envs are gone, and the resumed run starts new episodes.

        Raises:
            RuntimeError: a step or a rollout's replay is in flight, or the VecEnv was closed.
        """
        self._check_open()
        if self._pending is not None or self._jobs is not None or self._replay:
            raise RuntimeError("the envs cannot be saved in the middle of a step or rollout")
        refs = [self.pool.submit(i, "get_state") for i in range(self.pool.n_workers)]
        workers = self.pool.results(refs, on_death=lambda i: None)
        if any(w is None for w in workers):
            return None
        driver = {name: copy.deepcopy(getattr(self, name)) for name in self._DRIVER_STATE}
        restarts = {"restarts": self.pool.restarts, "per_worker": list(self.pool.worker_restarts)}
        return {"workers": workers, "driver": driver, "restarts": restarts}

    def set_env_state(self, state: dict[str, Any]) -> None:
        """Go back to ``state`` from :meth:`get_env_state` of a RayVecEnv built alike: the
        workers' envs step on where they were, and a worker that dies from now on gets a new
        seed, as it would have.

        Raises:
            ValueError: the state has another number of workers or envs, or its workers
                kept other parts (checked by each worker before it changes anything).
            RuntimeError: the VecEnv was closed.
        """
        self._check_open()
        if len(state["workers"]) != self.pool.n_workers:
            raise ValueError(
                f"the state has {len(state['workers'])} Ray workers, this VecEnv"
                f" {self.pool.n_workers}"
            )
        if len(state["driver"]["reset_infos"]) != self.num_envs:
            raise ValueError(
                f"the state has {len(state['driver']['reset_infos'])} envs, this VecEnv"
                f" {self.num_envs}"
            )
        refs = [self.pool.submit(i, "set_state", w) for i, w in enumerate(state["workers"])]
        refused = []  # every worker's answer is taken (Ray logs the errors nobody takes)
        for i, (ref, saved) in enumerate(zip(refs, state["workers"], strict=True)):
            try:
                self.pool.result(i, ref, retry=("set_state", (saved,)))
            except ValueError as exc:  # raised in the worker, with its traceback
                refused.append(str(getattr(exc, "cause", exc)))
        if refused:
            raise ValueError(refused[0])
        for name, value in state["driver"].items():
            setattr(self, name, copy.deepcopy(value))
        self.pool.restarts = int(state["restarts"]["restarts"])
        self.pool.worker_restarts = list(state["restarts"]["per_worker"])

    # -- attributes and methods of the envs -----------------------------------------------

    def _by_worker(self, indices: VecEnvIndices) -> tuple[list[int], dict[int, list[int]]]:
        """The requested global indices, and the local indices each worker holds of them.

        Negative indices count from the end, as a DummyVecEnv's list does.

        Raises:
            RuntimeError: the VecEnv was closed.
            IndexError: an index is not that of one of the envs.
        """
        self._check_open()
        wanted = []
        for index in self._get_indices(indices):
            k = operator.index(index)
            if not -self.num_envs <= k < self.num_envs:
                raise IndexError(f"env index {k} out of range ({self.num_envs} envs)")
            wanted.append(k % self.num_envs)
        local: dict[int, list[int]] = {}
        for k in wanted:
            i = next(i for i, r in enumerate(self.pool.ranges) if k in r)
            local.setdefault(i, []).append(k - self.pool.ranges[i].start)
        return wanted, local

    def _gather(self, method: str, indices: VecEnvIndices, *args: Any) -> list[Any]:
        wanted, local = self._by_worker(indices)
        refs = {i: self.pool.submit(i, method, *args, idx) for i, idx in local.items()}
        by_index: dict[int, Any] = {}
        for i, ref in refs.items():
            values = self.pool.result(i, ref, retry=(method, (*args, local[i])))
            start = self.pool.ranges[i].start
            by_index.update({start + j: v for j, v in zip(local[i], values, strict=True)})
        return [by_index[k] for k in wanted]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Attribute ``attr_name`` of the envs at ``indices`` (all if None), in that order.

        Raises:
            RuntimeError: the VecEnv was closed.
            IndexError: an index is out of range.
        """
        return self._gather("get_attr", indices, attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set attribute ``attr_name`` to ``value`` on the envs at ``indices`` (all if None)."""
        self._gather("set_attr", indices, attr_name, value)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        """``env.method_name(*method_args, **method_kwargs)`` of each env at ``indices`` (all if
        None), in that order."""
        return self._gather("env_method", indices, method_name, method_args, method_kwargs)

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        """Whether each env at ``indices`` (all if None) is wrapped in ``wrapper_class``."""
        return self._gather("env_is_wrapped", indices, wrapper_class)

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Each env's ``render()`` frame ``(H, W, 3)`` if ``render_mode`` is ``"rgb_array"``,
        else one None per env."""
        if self.render_mode != "rgb_array":
            return [None] * self.num_envs
        return self.env_method("render")

    def close(self) -> None:
        """End the workers (their envs are closed first); safe to call twice. A compiled
        graph is torn down first, waiting at most the graph's timeout: a worker that hung
        (a frozen process) would keep Ray's teardown waiting for ever, and ending the workers
        ends it. Every call that needs the workers raises afterwards."""
        self._closed = True
        self._pending = None
        self._jobs = None
        self._replay.clear()
        self._forget_graph(wait=False)
        teardown, self._teardown = self._teardown, None
        if teardown is not None:
            teardown.join(timeout=step_timeout_s())
        self.pool.close()
        if teardown is not None:
            teardown.join(timeout=10)  # its actors are gone: it ends


def make_ray_vec_env(
    spec: EnvSpec,
    n_envs: int,
    n_workers: int,
    seed: int,
    max_restarts: int = 3,
    compiled: bool = False,
    worker_rollouts: bool = True,
    compress: bool | None = None,
    env_processes: int = 1,
    call_timeout_s: float = CALL_TIMEOUT_S,
) -> VecEnv:
    """Like ``envs.make_vec_env(spec, n_envs, seed)``, with the envs on ``n_workers`` Ray
    actors: a :class:`RayVecEnv`, wrapped in a 4-frame ``AtariFrameStack`` (SB3's ``VecFrameStack``) for Atari."""
    venv: VecEnv = RayVecEnv(
        spec, n_envs, n_workers, seed, max_restarts, compiled=compiled,
        worker_rollouts=worker_rollouts, compress=compress, env_processes=env_processes,
        call_timeout_s=call_timeout_s,
    )  # fmt: skip
    if env_kind(spec.env_id) == "atari":
        venv = AtariFrameStack(venv, ATARI_FRAME_STACK)
    return venv
