"""Connecting the driver to Ray: a local instance on demand, or an existing cluster.

Ray's own ``ray.init`` retries an unreachable address for minutes; :func:`connect` first
opens a plain TCP connection to the cluster's GCS port with a bounded timeout, so a wrong
``--ray-address`` becomes a one-line :class:`~rlkit.core.errors.UserError` in seconds.
"""

from __future__ import annotations

import logging
import os
import socket

import ray

from rlkit.core.errors import UserError

logger = logging.getLogger(__name__)

#: Seconds to wait for a TCP connection to the cluster's GCS port before giving up.
CONNECT_TIMEOUT_S = 5.0

#: Object store size of a local instance, in bytes: enough for thousands of Atari frames in
#: flight, small next to Ray's default of 30% of the machine's memory.
LOCAL_OBJECT_STORE_BYTES = 512 * 1024**2


def _fail(address: str, why: str) -> UserError:
    return UserError(f"cannot reach Ray cluster at {address}: {why}")


def _host_port(address: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (optionally ``ray://HOST:PORT``) as ``(host, port)``, or a UserError."""
    bare = address.removeprefix("ray://")
    host, sep, port = bare.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _fail(address, "expected HOST:PORT (e.g. 10.0.0.5:6379) or auto")
    return host, int(port)


def _resolve_auto(address: str) -> str:
    """The ``HOST:PORT`` that Ray's ``"auto"`` means on this machine (RAY_ADDRESS, then the
    cluster of the last ``ray start``), or a UserError when there is none."""
    from ray._private.services import canonicalize_bootstrap_address

    try:
        resolved = canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError) as exc:
        raise _fail(address, f"{exc}".splitlines()[0]) from None
    if resolved is None:
        raise _fail(address, "no running Ray cluster found; start one with `ray start --head`")
    return resolved


def _probe(address: str, host: str, port: int, timeout_s: float) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, TimeoutError | socket.timeout):
            reason = f"no answer within {timeout_s:g} s"
        raise _fail(address, f"{reason}; is `ray start --head` running there?") from None


def connect(address: str | None = None, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Connect this process to Ray, once.

    Args:
        address: ``None`` starts a local Ray instance sized to this machine (all its cores,
            no dashboard, a 512 MiB object store, Ray's log lines kept out of the driver's
            output); it never joins a cluster that happens to run here. ``"auto"`` joins
            the cluster this machine belongs to (``RAY_ADDRESS``, or the one the last
            ``ray start`` created or joined). ``"HOST:PORT"`` joins the cluster whose head
            ran ``ray start --head --port=PORT`` (``ray://HOST:PORT`` uses Ray Client).
        timeout_s: seconds to wait for the cluster's port to answer.

    If this process is already connected to Ray, that connection is kept (after checking
    that ``address``, when given, is reachable).

    Raises:
        UserError: (exit code 2, one line) ``cannot reach Ray cluster at ADDRESS: ...`` when
            the address is malformed, nothing answers there within ``timeout_s``, or Ray
            refuses the connection.
    """
    # Ray reads this when it starts; usage reporting needs the network we may not have.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is not None:
        target = _resolve_auto(address) if address == "auto" else address
        host, port = _host_port(target)
        _probe(address, host, port, timeout_s)
    if ray.is_initialized():
        return
    try:
        if address is None:
            ray.init(
                address="local",
                num_cpus=len(os.sched_getaffinity(0)),
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
        else:
            ray.init(address=target, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if address is None:
            raise
        why = str(exc).strip().splitlines()[0]
        if os.environ.get("RAY_AUTH_MODE") != "token":
            # Ray sends its auth token only to clusters it found itself ("auto").
            why += " (if the cluster uses token authentication, set RAY_AUTH_MODE=token)"
        raise _fail(address, why) from None
    logger.info("connected to Ray: %s", ray.cluster_resources())


def shutdown() -> None:
    """Disconnect from Ray (and stop the local instance if :func:`connect` started one)."""
    if ray.is_initialized():
        ray.shutdown()
