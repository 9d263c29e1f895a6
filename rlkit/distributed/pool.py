"""A pool of rollout-worker actors that re-creates a worker when its process or node dies,
or when it hangs.

Ray can restart actors by itself (``max_restarts``), but it re-runs the constructor with
the same arguments, so the envs would replay the same seeds, and a queued call on a
restarting actor may wait rather than fail. The pool instead kills the dead actor's handle
and creates a fresh one with a new seed, counting restarts per worker: on another node than
the old one where that node may be lost, and without a CPU of its own where no node has one
free for it, so that losing a node slows a run down instead of stopping it. Losing the head
(the cluster's GCS) does stop it, within seconds and with a one-line :class:`ClusterLostError`,
where Ray would end the driver's process a minute later.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import (
    ActorUnavailableError,
    GetTimeoutError,
    ObjectLostError,
    RayActorError,
    RayError,
)

from envs.factory import EnvSpec
from envs.process_blocks import contiguous_blocks
from rlkit.core.errors import RunStoppedError, UserError, head_lost_message
from rlkit.core.port import port_answers
from rlkit.distributed.connection import connect, error_line, head_address
from rlkit.distributed.worker import RolloutWorker

logger = logging.getLogger("rlkit.distributed")

#: A restarted worker's envs are seeded ``seed + RESTART_SEED_STRIDE * k`` for its k-th
#: restart, so that they do not replay the episodes they played before dying.
RESTART_SEED_STRIDE = 1_000_003

#: How long a call to a rollout worker may take before the worker is taken for hung (see
#: :class:`WorkerHungError`): far more than any call takes (a rollout or a fragment of
#: thousands of env steps takes seconds), so that only a stuck worker reaches it.
CALL_TIMEOUT_S = 600.0


class WorkerHungError(RayError):
    """A call to a rollout worker did not return within the pool's ``call_timeout_s``: the
    worker is stuck (an env that never returns, a stopped process, a node that no longer
    answers and is not yet declared dead), and is killed and re-created as a dead one is,
    rather than the run waiting on it for ever."""


#: What the pool takes for a worker that is gone: its actor died (the process, or the node
#: under it), a result it had finished was lost with its node before this driver fetched
#: it (``ObjectLostError``: a result over Ray's inline size, ~100 kB, stays in the worker's
#: node's object store until then, as a prefetched fragment does), or it hung.
WORKER_LOST: tuple[type[RayError], ...] = (RayActorError, ObjectLostError, WorkerHungError)

#: The deaths that say the worker's node, not only its process, may be gone: the connection
#: to it dropped, or a result was lost with the node.
NODE_LOST: tuple[type[RayError], ...] = (ActorUnavailableError, ObjectLostError)

#: The label every Ray node carries with its id (``ray._raylet.RAY_NODE_ID_KEY``).
NODE_ID_LABEL = "ray.io/node-id"


class WorkerFailedError(RunStoppedError, RuntimeError):
    """A rollout worker died more often than allowed, or could not be started.

    A :class:`RunStoppedError` (exit code 1): the CLI prints it as one line, and
    ``rlkit prefs train`` adds what the run saved and how to resume it.
    """


class ClusterLostError(WorkerFailedError):
    """The cluster's head is gone (its GCS no longer answers): no worker can be re-created,
    and the driver cannot go on. Ray would end the driver's process 60 s later."""

    cluster_lost = True


def split_envs(n_envs: int, n_workers: int) -> list[range]:
    """Global env indices of each worker: contiguous, sizes differing by at most one."""
    if n_workers < 1:
        raise UserError(f"the number of Ray workers must be >= 1, got {n_workers}")
    if n_envs < n_workers:
        raise UserError(f"n_envs ({n_envs}) must be >= the number of Ray workers ({n_workers})")
    return contiguous_blocks(n_envs, n_workers)


def _driver_node_id() -> str | None:
    """The id (hex) of the node this driver runs on; None for a Ray Client driver, which is
    on no node of the cluster (Ray names the node of its proxy on the head)."""
    from ray.util.client import ray as client_ray

    return None if client_ray.is_connected() else ray.get_runtime_context().get_node_id()


@functools.cache
def _remote_worker() -> Any:
    """The :class:`RolloutWorker` actor class, registered with Ray once per process."""
    return ray.remote(RolloutWorker)


class WorkerPool:
    """``n_workers`` :class:`RolloutWorker` actors sharing ``n_envs`` envs.

    Args:
        spec, n_envs, n_workers, seed: as for :class:`RolloutWorker`.
        max_restarts: how many times each worker may be re-created after dying; one more
            death raises :class:`WorkerFailedError` with the last error.
        frame_stack: stack Atari frames in the workers.
        shadow_stack: keep a copy of the driver's Atari frame stack in the workers (see
            :class:`RolloutWorker`).
        num_cpus: CPUs each actor reserves (None: ``env_processes``); lowered to
            ``cluster CPUs / n_workers`` when the cluster is smaller, so that the actors can
            always be placed.
        startup_timeout_s: how long to wait for the actors to be placed and build their envs.
        placement_timeout_s: how long a re-created worker may wait for a CPU when none is
            free before it is re-created without one (see :meth:`restart`).
        ping_timeout_s: how long a worker whose connection dropped has to answer a call
            before its node is taken for lost (see :meth:`_lost_node`).
        call_timeout_s: how long a call may take before its worker is taken for hung
            (:class:`WorkerHungError`) and restarted.
        on_restart: called with a fresh worker's index before it is used (to give it back
            state the dead one had, such as a policy).
        compress: compress the workers' results on the way to the driver
            (:mod:`rlkit.distributed.wire`); None (the default): those of workers on another
            node than the driver's, whose results cross the network (all of them when the
            driver's node is unknown, as for a Ray Client driver).
        env_processes: helper processes each worker steps its envs in (see
            :class:`RolloutWorker`); at most the fewest envs a worker has.
    """

    def __init__(
        self,
        spec: EnvSpec,
        n_envs: int,
        n_workers: int,
        seed: int,
        max_restarts: int = 3,
        frame_stack: bool = False,
        num_cpus: float | None = None,
        shadow_stack: bool = False,
        startup_timeout_s: float = 120.0,
        placement_timeout_s: float = 30.0,
        ping_timeout_s: float = 5.0,
        call_timeout_s: float = CALL_TIMEOUT_S,
        on_restart: Callable[[int], None] | None = None,
        compress: bool | None = None,
        env_processes: int = 1,
    ) -> None:
        self.ranges = split_envs(n_envs, n_workers)
        fewest = min(len(r) for r in self.ranges)
        if not 1 <= env_processes <= fewest:
            raise UserError(
                f"env processes per Ray worker must be in 1..{fewest} (the fewest envs a worker"
                f" has: {n_envs} envs on {n_workers} workers), got {env_processes}"
            )
        self.env_processes = env_processes
        num_cpus = float(env_processes) if num_cpus is None else num_cpus
        connect(None)
        self.compress = compress
        self._driver_node = _driver_node_id()
        #: Whether each worker compresses its results (see ``compress``), as it answered.
        self.compressing = [False] * n_workers
        #: The node each worker runs on (its id, hex).
        self.nodes: list[str | None] = [None] * n_workers
        cluster_cpus = float(ray.cluster_resources().get("CPU", 1.0))
        self.spec = spec
        self.seed = seed
        self.max_restarts = max_restarts
        self.frame_stack = frame_stack
        self.shadow_stack = shadow_stack
        self.num_cpus = min(num_cpus, cluster_cpus / n_workers)
        self.startup_timeout_s = startup_timeout_s
        self.placement_timeout_s = placement_timeout_s
        self.ping_timeout_s = ping_timeout_s
        self.call_timeout_s = call_timeout_s
        self.on_restart = on_restart
        self.restarts = 0
        self.worker_restarts = [0] * n_workers
        #: Whether the cluster was lost (:class:`ClusterLostError`).
        self.lost = False
        self.handles: list[Any] = [self._create(i) for i in range(n_workers)]
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        try:
            ray.get([h.ready.remote() for h in self.handles], timeout=self.startup_timeout_s)
        except GetTimeoutError:
            raise WorkerFailedError(self._timeout_message()) from None
        except WORKER_LOST:
            # Some worker died while starting: bring each one up on its own, with restarts.
            for i in range(self.n_workers):
                self.call(i, "ready")
        self._check_niceness()
        for i in range(self.n_workers):
            self._set_compression(i)
        if any(self.compressing):
            logger.info(
                "%d of %d Ray rollout workers compress their results (another node than the "
                "driver's)", sum(self.compressing), self.n_workers,
            )  # fmt: skip

    def _set_compression(self, i: int) -> None:
        """Note worker ``i``'s node, tell it whether to compress its results, as ``compress``
        says, and note what it answers."""
        self.nodes[i] = self.node_id(i)
        on = self.compress
        if on is None:
            on = self._driver_node is None or self.nodes[i] != self._driver_node
        self.compressing[i] = bool(self.call(i, "set_compress", on))

    def _check_niceness(self) -> None:
        """Warn when the workers run at a lower CPU priority than this process: Ray starts
        them ``worker_niceness`` (default 15) steps nicer than its raylet, and then any busy
        process on their node, this driver included, takes the CPU from the rollouts."""
        try:
            levels = ray.get([h.niceness.remote() for h in self.handles], timeout=30)
        except RayError:
            return  # a dying worker is the restart logic's business, not this check's
        mine = os.nice(0)
        if max(levels) > mine:
            logger.warning(
                "Ray runs %d of %d rollout workers at niceness %d (this process: %d): they "
                "yield the CPU to every busier process on their node; start Ray with "
                "RAY_worker_niceness=0 (a local instance rlkit starts already is)",
                sum(level > mine for level in levels), len(levels), max(levels), mine,
            )  # fmt: skip

    @property
    def n_workers(self) -> int:
        """How many rollout workers (Ray actors) the pool holds."""
        return len(self.handles)

    def _create(self, i: int, num_cpus: float | None = None, avoid: str | None = None) -> Any:
        """A new actor for worker ``i`` (``num_cpus``: instead of the pool's; ``avoid``: the id
        of a node it must not be placed on)."""
        first = self.ranges[i].start
        seed = self.seed + RESTART_SEED_STRIDE * self.worker_restarts[i]
        cpus = self.num_cpus if num_cpus is None else num_cpus
        options = {"num_cpus": cpus, "max_restarts": 0, "scheduling_strategy": "SPREAD"}
        if avoid is not None:
            options["label_selector"] = {NODE_ID_LABEL: f"!{avoid}"}
        return (
            _remote_worker()
            .options(**options)
            .remote(
                self.spec,
                seed,
                first,
                len(self.ranges[i]),
                frame_stack=self.frame_stack,
                policy_seed=seed + first,
                shadow_stack=self.shadow_stack,
                own_process=True,
                env_processes=self.env_processes,
            )
        )

    def _timeout_message(self) -> str:
        return (
            f"Ray workers did not start within {self.startup_timeout_s:g} s: {self.n_workers} "
            f"workers need {self.num_cpus:g} CPU each and the cluster has "
            f"{ray.available_resources().get('CPU', 0):g} of "
            f"{ray.cluster_resources().get('CPU', 0):g} CPUs free"
        )

    def restart(self, i: int, error: BaseException) -> None:
        """Replace dead worker ``i`` by a fresh one (fresh envs, not yet reset), on a node
        with a CPU free, or sharing the others' CPUs where none is (see :meth:`_wait_placed`).

        Raises:
            ClusterLostError: the cluster's head does not answer (checked first: a worker
                cannot be re-created without it).
            WorkerFailedError: worker ``i`` has died more than ``max_restarts`` times.
        """
        cause = error_line(error)
        if isinstance(error, ObjectLostError):  # Ray's line would only name the object
            cause = f"a result it had finished was lost with its node: {type(error).__name__}"
        elif isinstance(error, ActorUnavailableError):  # Ray's line: an RPC error, and a guess
            cause = f"its connection dropped, its node may be lost: {type(error).__name__}"
        elif isinstance(error, WorkerHungError):
            cause = str(error)
        head = head_address()
        if head is not None and not port_answers(head):
            self.lost = True
            raise ClusterLostError(
                head_lost_message(head, f"rollout worker {i} died: {cause}")
            ) from error
        self.worker_restarts[i] += 1
        self.restarts += 1
        if self.worker_restarts[i] > self.max_restarts:
            raise WorkerFailedError(
                f"Ray rollout worker {i} died {self.worker_restarts[i]} times "
                f"(max_restarts={self.max_restarts}); last error: {cause}"
            ) from error
        logger.warning(
            "Ray rollout worker %d died (%s); restarting it with fresh envs (restart %d of %d)",
            i,
            cause,
            self.worker_restarts[i],
            self.max_restarts,
        )
        avoid = self._lost_node(i, error)
        ray.kill(self.handles[i], no_restart=True)
        self.handles[i] = self._create(i, avoid=avoid)
        try:
            self._wait_placed(i, avoid)
        except WORKER_LOST as exc:
            self.restart(i, exc)
            return
        self._set_compression(i)
        if self.on_restart is not None:
            self.on_restart(i)

    def _lost_node(self, i: int, error: BaseException) -> str | None:
        """The node that dead worker ``i``'s replacement must avoid: its old one, where
        ``error`` says that node may be gone (the GCS takes seconds to declare it dead, and
        until then may place the replacement there, to die with it) and the cluster has
        another; None otherwise (its process died: its node may take the replacement). A
        dropped connection (``ActorUnavailableError``) only says so if the worker does not
        answer a call within ``ping_timeout_s``: after a network blip it does, and its node,
        with its CPU, takes the replacement rather than the other workers' CPUs."""
        old = self.nodes[i]
        if old is None or not isinstance(error, NODE_LOST):
            return None
        others = [n for n in ray.nodes() if n["Alive"] and n["NodeID"] != old]
        if not others:
            return None
        if isinstance(error, ActorUnavailableError) and self._answers(i):
            logger.warning(
                "Ray rollout worker %d answers again: its connection only dropped for a while, "
                "and its node keeps it (it is still re-created: the lost call may have run)", i,
            )  # fmt: skip
            return None
        return old

    def _answers(self, i: int) -> bool:
        """Whether worker ``i`` answers a call within ``ping_timeout_s`` (after a call to it
        failed with its connection: a node lost does not, a network blip's does)."""
        try:
            return bool(self.get(self.handles[i].ready.remote(), self.ping_timeout_s))
        except RayError:  # (WorkerHungError among them)
            return False

    def _wait_placed(self, i: int, avoid: str | None = None) -> None:
        """Wait for re-created worker ``i`` to be ready. If it is still waiting for a CPU after
        ``placement_timeout_s`` and no CPU is free for it (its node was lost, and the others
        are full), re-create it without a CPU of its own, sharing the others' (with a warning),
        so that the run goes on more slowly rather than stopping. ``avoid``: as for
        :meth:`_create`.

        Raises:
            WorkerFailedError: it is not ready within ``startup_timeout_s`` even so.
        """
        ref = self.handles[i].ready.remote()
        patience = min(self.placement_timeout_s, self.startup_timeout_s)
        ready, _ = ray.wait([ref], timeout=patience)
        # (The CPUs free on the node to avoid are not for it.)
        if not ready and (
            avoid is not None or ray.available_resources().get("CPU", 0.0) < self.num_cpus
        ):
            ray.kill(self.handles[i], no_restart=True)
            self.handles[i] = self._create(i, num_cpus=0, avoid=avoid)
            ref = self.handles[i].ready.remote()
            logger.warning(
                "Ray rollout worker %d re-created without a CPU of its own: no node%s had one "
                "free for it within %g s (a node lost?); it shares the other workers' CPUs",
                i, "" if avoid is None else " but the one it left", patience,
            )  # fmt: skip
        try:
            ray.get(ref, timeout=self.startup_timeout_s)
        except GetTimeoutError:
            raise WorkerFailedError(self._timeout_message()) from None

    def submit(self, i: int, method: str, *args: Any) -> ray.ObjectRef:
        """Start ``method(*args)`` on worker ``i``; collect it with :meth:`result`."""
        return getattr(self.handles[i], method).remote(*args)

    def call(self, i: int, method: str, *args: Any) -> Any:
        """Run ``method(*args)`` on worker ``i`` and return its result, re-creating the
        worker and running it again if the worker dies."""
        return self.result(i, self.submit(i, method, *args), retry=(method, args))

    def get(self, ref: ray.ObjectRef, timeout: float | None = None) -> Any:
        """``ray.get(ref)`` of a call to a worker, within ``timeout`` seconds (default
        ``call_timeout_s``; 0: it must be back already, as :meth:`results` asks once it has
        waited ``call_timeout_s`` for every worker's).

        Raises:
            WorkerHungError: it did not return within that time.
        """
        wait = self.call_timeout_s if timeout is None else timeout
        try:
            return ray.get(ref, timeout=wait)
        except GetTimeoutError:
            waited = self.call_timeout_s if wait == 0 else wait
            raise WorkerHungError(
                f"it did not answer a call within {waited:g} s: it hung, or its steps take"
                " longer (--ray-call-timeout, which --resume may raise)"
            ) from None

    def result(
        self,
        i: int,
        ref: ray.ObjectRef,
        retry: tuple[str, tuple] | None = None,
        on_death: Callable[[int], Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """The result of ``ref`` from worker ``i`` (within ``timeout``, default
        ``call_timeout_s``). If the worker died or hung, restart it and either run
        ``retry = (method, args)`` again or return ``on_death(i)``."""
        try:
            return self.get(ref, timeout)
        except WORKER_LOST as exc:
            self.restart(i, exc)
        if on_death is not None:
            return on_death(i)
        if retry is None:
            raise RuntimeError("a worker died and the call has neither retry nor on_death")
        return self.call(i, retry[0], *retry[1])

    def results(
        self,
        refs: list[ray.ObjectRef],
        retry: list[tuple[str, tuple]] | None = None,
        on_death: Callable[[int], Any] | None = None,
    ) -> list[Any]:
        """The results of one call per worker (``refs[i]`` from worker ``i``), in one
        ``ray.get`` unless a worker died or hung; then each as in :meth:`result` (after
        ``call_timeout_s``, those not back yet are the hung ones)."""
        try:
            return ray.get(refs, timeout=self.call_timeout_s)
        except GetTimeoutError:
            late: float | None = 0.0
        except WORKER_LOST:
            late = None
        return [
            self.result(i, ref, None if retry is None else retry[i], on_death, timeout=late)
            for i, ref in enumerate(refs)
        ]

    def pid(self, i: int) -> int:
        """Process id of worker ``i``."""
        return int(self.call(i, "pid"))

    def node_id(self, i: int) -> str:
        """Id (hex) of the Ray node that worker ``i`` runs on."""
        return str(self.call(i, "node_id"))

    def close(self) -> None:
        """Close every worker's envs and end the actors (safe to call twice; with the
        cluster lost, only forgets them)."""
        if self.lost or not ray.is_initialized():  # (a Ray Client whose connection dropped)
            self.handles = []
            return
        refs = [h.close.remote() for h in self.handles]
        try:  # (a worker that does not answer within a call's time has hung: killed below)
            ray.get(refs, timeout=min(10.0, self.call_timeout_s))
        except RayError:
            pass  # a dead or stuck worker is killed below all the same
        for h in self.handles:
            ray.kill(h, no_restart=True)
        self.handles = []
