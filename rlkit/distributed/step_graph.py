"""A compiled Ray graph that steps every rollout worker at once.

An ordinary actor call goes through Ray's task submission and object store: 0.7-1.5 ms per
round trip on a 2-core machine, as long as a step of a few MuJoCo envs. A
compiled graph (Ray's ``experimental_compile``) is set up once; each execution writes the
inputs into shared-memory channels that the actors already wait on, and reads the results
back the same way, 3-6x faster, but the channels are polled: on oversubscribed cores the
polling takes the CPU from the envs. :class:`~rlkit.distributed.RayVecEnv` steps through
one when asked (``compiled=True``) and able, and falls back to actor calls otherwise (Ray
Client, workers on other nodes, or a graph that fails to compile).

When any worker of a compiled graph dies, Ray tears the whole graph down, and the results
of the step in flight may be lost for the survivors too. Steps are therefore numbered
(:meth:`RolloutWorker.step_numbered`): asked again, a survivor returns the step it already
took instead of taking it twice.
"""

from __future__ import annotations

import copy
import logging
import threading
from typing import Any

import numpy as np
import ray

logger = logging.getLogger("rlkit.distributed")


class _QuietCancelErrors(logging.Filter):
    """Drops the traceback Ray logs while tearing down a graph whose actor is dead (the
    death is handled, and reported, by the pool)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Error cancelling worker task" not in record.getMessage()


_ray_graph_logger = logging.getLogger("ray.dag.compiled_dag_node")
if not any(isinstance(f, _QuietCancelErrors) for f in _ray_graph_logger.filters):
    _ray_graph_logger.addFilter(_QuietCancelErrors())


def graphs_supported() -> bool:
    """Compiled graphs need a driver inside the cluster: not through Ray Client."""
    from ray.util.client import ray as client_ray

    return not client_ray.is_connected()


def step_timeout_s() -> float:
    """How long Ray waits for a compiled graph's step (``DAGContext.get_timeout``, 10 s by
    default): a step takes milliseconds, so a worker that outlasts it has hung."""
    from ray.dag import DAGContext

    return float(DAGContext.get_current().get_timeout)


class StepGraph:
    """``handles[i].step_numbered(jobs[i])`` for every worker ``i``, as one compiled graph.

    Args:
        handles: the rollout-worker actors, in env order.

    Raises:
        Exception: whatever Ray raises when the graph cannot be compiled.
    """

    def __init__(self, handles: list[Any]) -> None:
        from ray.dag import InputNode, MultiOutputNode

        with InputNode() as inp:
            outputs = [h.step_numbered.bind(inp[i]) for i, h in enumerate(handles)]
        self._graph = MultiOutputNode(outputs).experimental_compile()
        self._refs: list[Any] | None = None

    def submit(self, jobs: list[tuple[int, np.ndarray]]) -> None:
        """Start one step: ``jobs[i] = (step number, actions of worker i's envs)``."""
        self._refs = self._graph.execute(*jobs)

    def results(self) -> list[tuple]:
        """Each worker's ``step_numbered`` result, in worker order.

        Raises:
            ray.exceptions.RayError: a worker died (``RayActorError``), the graph was torn
                down (``RayChannelError``), or a step raised (``RayTaskError``).
        """
        refs, self._refs = self._refs, None
        if refs is None:
            raise RuntimeError("no step in flight")
        values = ray.get(refs)
        # Arrays read from a channel are zero-copy views of its shared memory, and the
        # worker cannot write its next result there while any of them is alive: a caller
        # that keeps an observation (a recorder, a rollout buffer) would deadlock the next
        # step. Copies hold nothing of the channel.
        copies = copy.deepcopy(values)
        del values
        return copies

    def drain(self) -> None:
        """Collect and drop the step in flight, if any (a graph runs one step at a time)."""
        if self._refs is not None:
            try:
                self.results()
            except ray.exceptions.RayError:
                pass

    def teardown(self) -> threading.Thread:
        """Stop the graph's loops on the actors (they stay alive for ordinary calls), in a
        thread of its own, which is returned: Ray's teardown waits for every actor's loop to
        end, for ever where one never does (a hung worker, which the pool kills once a call to
        it times out), and the workers can be called meanwhile. The thread ends once every
        loop has (the hung worker's with it)."""
        self._refs = None
        thread = threading.Thread(target=self._teardown, name="rlkit-graph-teardown")
        thread.daemon = True
        thread.start()
        return thread

    def _teardown(self) -> None:
        try:
            self._graph.teardown()
        except Exception as exc:  # noqa: BLE001 - a graph Ray already tore down
            logger.debug("compiled step graph teardown: %s", exc)
