"""Connecting the driver to Ray: a local instance on demand, or an existing cluster.

``ray.init`` waits a long time on a bad address: where something other than Ray answers
it retries for many minutes (20 tries of about 40 s in Ray 2.60). :func:`connect` first
checks the address with a bounded timeout: a TCP connection to the port, then one gRPC
call to the cluster's GCS (the first call ``ray.init`` makes), so a wrong
``--ray-address`` becomes a one-line :class:`~rlkit.core.errors.UserError` in seconds.
"""

from __future__ import annotations

import atexit
import functools
import gc
import logging
import os
import signal
import socket
import time

import grpc
import ray

from rlkit.core.errors import UserError

logger = logging.getLogger(__name__)

#: Seconds to wait for the cluster's GCS port to answer (TCP connection and gRPC call).
CONNECT_TIMEOUT_S = 5.0

#: Object store size of a local instance, in bytes: enough for thousands of Atari frames in
#: flight, small next to Ray's default of 30% of the machine's memory.
LOCAL_OBJECT_STORE_BYTES = 512 * 1024**2

#: How much nicer than the raylet a local instance's workers run (Ray's default is 15): the
#: rollout workers do the run's main work and should not yield to every other process.
WORKER_NICENESS = 0

#: Milliseconds a driver that leaves a cluster waits for the GCS to take its last task events
#: (Ray's ``task_events_shutdown_flush_timeout_ms``, 5,000 by default). The GCS takes them in
#: milliseconds when it answers; when the head is lost it never does, and a run that had
#: already said so in one line would sit for 5 s more before its process ended.
TASK_EVENTS_FLUSH_MS = 500

#: What to do when something answers at the address but it is not a Ray cluster.
_NOT_RAY_HINT = "give the head's GCS port (`ray start --head --port=PORT`, 6379 by default)"
_NOT_RAY_HINT_CLIENT = "give the head's Ray Client port (10001 by default)"


def _fail(address: str, why: str) -> UserError:
    return UserError(f"cannot reach Ray cluster at {address}: {why}")


def _host_port(address: str, target: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (optionally ``ray://HOST:PORT``, or ``[IPv6]:PORT``) as
    ``(host, port)``, or a UserError naming ``address``."""
    bare = target.removeprefix("ray://")
    host, sep, port = bare.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _fail(address, "expected HOST:PORT (e.g. 10.0.0.5:6379) or auto")
    return host, int(port)


def _resolve_auto(address: str) -> str:
    """The ``HOST:PORT`` that Ray's ``"auto"`` means on this machine (RAY_ADDRESS, then the
    cluster of the last ``ray start``, then a Ray GCS process running here), or a UserError
    when there is none."""
    from ray._private.services import canonicalize_bootstrap_address

    try:
        resolved = canonicalize_bootstrap_address(address)
    except ConnectionError:
        resolved = None
    except ValueError as exc:  # RAY_ADDRESS is malformed
        raise _fail(address, str(exc).strip().splitlines()[0]) from None
    if resolved is None:
        raise _fail(
            address,
            "no running Ray cluster found on this machine (RAY_ADDRESS is unset and no "
            "`ray start` ran here); start one with `ray start --head` or give HOST:PORT",
        )
    return resolved


def _probe_tcp(address: str, host: str, port: int, timeout_s: float) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, TimeoutError | socket.timeout):
            reason = f"no answer within {timeout_s:g} s"
        raise _fail(address, f"{reason}; is `ray start --head` running there?") from None


def _grpc_channel(target: str) -> grpc.Channel:
    """A channel as Ray's own clients open it (TLS and token authentication included)."""
    try:
        from ray._private.grpc_utils import init_grpc_channel
    except ImportError:  # a Ray version without it: plain channel
        return grpc.insecure_channel(target)
    return init_grpc_channel(target)


def _probe_gcs(address: str, target: str, timeout_s: float, found: bool = False) -> None:
    """One ``GetClusterId`` call (the first request ``ray.init`` makes) to ``target``,
    bounded by ``timeout_s``.

    For ``HOST:PORT``, any answer that only a Ray GCS gives passes, but a refused auth token:
    the channel carries the token as ``ray.init``'s would, which would then retry for 20 s,
    logging a warning a second, before failing. ``found`` (``auto``'s address): Ray sends
    its token to a cluster it found itself whatever ``RAY_AUTH_MODE`` says, so a refusal
    passes there. For ``ray://HOST:PORT``, a Ray Client server is a gRPC server without that
    method; a GCS there is the wrong port. Anything else is a UserError naming ``address``.
    """
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    try:
        from ray.exceptions import AuthenticationError

        no_token: tuple[type[Exception], ...] = (AuthenticationError,)
    except ImportError:  # a Ray without token authentication
        no_token = ()

    client = target.startswith("ray://")
    channel = None
    try:
        channel = _grpc_channel(target.removeprefix("ray://"))
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s)
        code = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    except no_token:  # RAY_AUTH_MODE=token, and no token here
        why = "RAY_AUTH_MODE=token, but this machine has no auth token; put the cluster's in"
        raise _fail(address, f"{why} RAY_AUTH_TOKEN or ~/.ray/auth_token") from None
    finally:
        if channel is not None:
            channel.close()
    auth = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        why = "the port accepts connections but does not answer Ray's requests"
    else:
        why = "the port answers, but not as a Ray cluster"
    if not client:
        if code == grpc.StatusCode.OK or (code in auth and found):
            return
        if code in auth:
            raise _fail(address, _auth_refused())
        raise _fail(address, f"{why}; {_NOT_RAY_HINT}")
    if code == grpc.StatusCode.UNIMPLEMENTED or code in auth:
        return
    if code == grpc.StatusCode.OK:
        why = "this is the GCS port; Ray Client listens on the head's port 10001 by default"
        raise _fail(address, why)
    raise _fail(address, f"{why}; {_NOT_RAY_HINT_CLIENT}")


def _auth_refused() -> str:
    """Why a cluster with token authentication refused this driver, and what to do."""
    if os.environ.get("RAY_AUTH_MODE") != "token":
        return (
            "the cluster uses token authentication; set RAY_AUTH_MODE=token, with its token in"
            " RAY_AUTH_TOKEN or ~/.ray/auth_token"
        )
    return (
        "the cluster refused this machine's auth token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or"
        " ~/.ray/auth_token); give the head's"
    )


# How Ray says a local start timed out: the node as a whole, or the GCS server never publishing
# its port (3 of 112 local starts on one day of test runs on a 2-core VM; the next start
# succeeded each time).
_START_TIMEOUTS = ("timed out during startup", "Timed out waiting for file")

#: Seconds the first local start waits for its GCS server to publish its port (Ray's
#: ``RAY_gcs_server_port_wait_time_s``, 30 by default; a later attempt waits Ray's time). In
#: the starts that timed out the GCS had not written a line of its log in 30 s; in the 175
#: that worked that day (test runs with both cores busy) it listened on its port 0.03 s after
#: the start began (median; 0.11 s at most): waiting longer only delays the start that works.
FIRST_GCS_PORT_WAIT_S = 10

_GCS_PORT_WAIT = "RAY_gcs_server_port_wait_time_s"


def start_local(attempts: int = 3, worker_niceness: int = WORKER_NICENESS) -> None:
    """Start the local Ray instance ``connect(None)`` uses; on a small machine a start can time
    out (its GCS silent, or its node not up in time while other processes hold the cores), and
    is tried again (``attempts`` in all; the first waits
    :data:`FIRST_GCS_PORT_WAIT_S` for the GCS server unless ``RAY_gcs_server_port_wait_time_s``
    is set). ``worker_niceness``: Ray's setting (benchmarks compare Ray's 15)."""
    user_wait = os.environ.get(_GCS_PORT_WAIT)
    for attempt in range(attempts):
        if user_wait is None and attempt == 0:
            os.environ[_GCS_PORT_WAIT] = str(FIRST_GCS_PORT_WAIT_S)
        before = set(_children())
        try:
            ray.init(
                address="local",
                num_cpus=len(os.sched_getaffinity(0)),
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                logging_level=logging.WARNING,
                log_to_driver=False,
                # By default Ray runs its workers at the raylet's niceness + 15 (a far lower
                # CPU priority): beside any busy process the rollouts get a sliver of a core
                # (BENCHMARKS.md, "Worker niceness").
                _system_config={"worker_niceness": worker_niceness},
            )
            return
        except Exception as exc:  # Ray raises a bare Exception (or RuntimeError) on a timeout
            if not any(t in str(exc) for t in _START_TIMEOUTS):
                raise
            ray.shutdown()
            _stop_left_behind(before)
            if attempt == attempts - 1:
                raise
            logger.warning("Ray's local start timed out (%s); trying again", error_line(exc))
        finally:
            if user_wait is None:
                os.environ.pop(_GCS_PORT_WAIT, None)


def _children() -> dict[int, str]:
    """This process's child processes, ``{pid: command line}`` (from Linux's
    ``/proc/self/task/*/children``; empty elsewhere)."""
    found = {}
    try:
        threads = os.listdir("/proc/self/task")
    except OSError:
        return found
    for tid in threads:
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids = [int(pid) for pid in f.read().split()]
        except OSError:  # the thread ended meanwhile
            continue
        for pid in pids:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    found[pid] = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # it ended meanwhile
                continue
    return found


def _stop_left_behind(before: set[int]) -> None:
    """Kill the Ray processes a failed ``ray.init`` started (children not in ``before``
    whose command line names a session directory): ``ray.shutdown`` stops only a node that
    finished starting, and a GCS server that never published its port, or a whole node whose
    raylet never registered, would otherwise run beside the next start until this process
    ends."""
    for pid, cmdline in _children().items():
        if pid not in before and "/session_" in cmdline:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def _init_remote(target: str, attempts: int = 3) -> None:
    """``ray.init`` on a cluster. Ray Client's server starts a process per driver, which can
    fail on a busy head (twice in a row, seen in a test run): then the driver tries again,
    ``attempts`` times in all."""
    # Read by Ray's core worker when ray.init creates it; a value set by the user wins.
    os.environ.setdefault("RAY_task_events_shutdown_flush_timeout_ms", str(TASK_EVENTS_FLUSH_MS))
    for attempt in range(attempts):
        try:
            ray.init(address=target, logging_level=logging.WARNING, log_to_driver=False)
            return
        except (ConnectionError, RuntimeError, ValueError) as exc:
            if target.startswith("ray://"):
                _forget_client()
            if "Initialization failure from server" not in str(exc) or attempt == attempts - 1:
                raise
            logger.warning(
                "Ray Client could not start a session (%s); trying again", error_line(exc)
            )
            time.sleep(1.0)  # the head's proxier is still cleaning up the failed session


def _forget_client() -> None:
    """A failed Ray Client ``ray.init`` leaves this process in client mode, where a later
    ``ray.init`` (even of a local instance) fails on an assertion deep in Ray: leave it."""
    from ray.util.client import ray as client_ray

    client_ray.disconnect()


def error_line(exc: BaseException) -> str:
    """One line for ``exc``: its first line, and when that only introduces a traceback
    sent by the server (``"...from server:"``), the traceback's last line too."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].endswith(":") and len(lines) > 1:
        return f"{lines[0]} {lines[-1]}"
    return lines[0]


def check_address(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> str:
    """Check that a Ray cluster answers at ``address``, within about ``timeout_s`` seconds.

    Args:
        address: ``"auto"``, ``"HOST:PORT"`` or ``"ray://HOST:PORT"``.
        timeout_s: the time budget for the whole check.

    Returns:
        The address to give ``ray.init`` (``"auto"`` resolved to ``HOST:PORT``).

    Raises:
        UserError: (exit code 2, one line) ``cannot reach Ray cluster at ADDRESS: ...`` when
            the address is malformed, nothing listens there, nothing answers within
            ``timeout_s``, or what answers is not a Ray cluster.
    """
    deadline = time.monotonic() + timeout_s
    target = _resolve_auto(address) if address == "auto" else address.strip()
    shown = f"auto ({target})" if address == "auto" else address
    host, port = _host_port(shown, target)
    _probe_tcp(shown, host, port, timeout_s)
    _probe_gcs(shown, target, max(deadline - time.monotonic(), 1.0), found=address == "auto")
    return target


@functools.cache
def _shut_down_at_exit() -> None:
    """Register :func:`shutdown` to run at exit, once: before Ray's own exit hook (``atexit``
    runs the last registered first), so that the garbage is collected while Ray is up."""
    atexit.register(shutdown)


def connect(address: str | None = None, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Connect this process to Ray, once.

    Args:
        address: ``None`` starts a local Ray instance sized to this machine (all its cores,
            no dashboard, a 512 MiB object store, Ray's log lines kept out of the driver's
            output, workers as nice as the driver rather than Ray's 15 steps nicer); it
            never joins a cluster that happens to run here. ``"auto"`` joins
            the cluster this machine belongs to (``RAY_ADDRESS``, or the one the last
            ``ray start`` created or joined). ``"HOST:PORT"`` joins the cluster whose head
            ran ``ray start --head --port=PORT`` (``ray://HOST:PORT`` uses Ray Client).
        timeout_s: seconds to wait for the cluster to answer (see :func:`check_address`).

    If this process is already connected to Ray, that connection is kept (after checking
    that ``address``, when given, answers).

    Raises:
        UserError: (exit code 2, one line) ``cannot reach Ray cluster at ADDRESS: ...`` when
            the address is malformed, nothing answers there within ``timeout_s``, what
            answers is not a Ray cluster, or Ray refuses the connection.
    """
    # Ray reads this when it starts; usage reporting needs the network we may not have.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    target = None if address is None else check_address(address, timeout_s)
    if ray.is_initialized():
        return
    if address is None and os.environ.get("RAY_ADDRESS"):
        logger.warning(
            "RAY_ADDRESS is set (%s), but no Ray address was given: starting a local Ray"
            " instance (--ray-address auto joins RAY_ADDRESS's cluster)",
            os.environ["RAY_ADDRESS"],
        )
    try:
        if target is None:
            start_local()
        else:
            # "auto" as given, not as resolved: Ray sends its auth token only to a cluster
            # it found itself (a token-authenticated cluster refuses the resolved address)
            _init_remote("auto" if address == "auto" else target)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if address is None:
            raise
        why = error_line(exc)
        if os.environ.get("RAY_AUTH_MODE") != "token":
            # Ray sends its auth token only to clusters it found itself ("auto").
            why += " (if the cluster uses token authentication, set RAY_AUTH_MODE=token)"
        raise _fail(address, why) from None
    _shut_down_at_exit()
    logger.info("connected to Ray: %s", ray.cluster_resources())


def head_address() -> str | None:
    """``HOST:PORT`` of the GCS (on the head node) of the cluster this process is connected
    to; None when it is not connected, or connected through Ray Client (whose driver runs on
    the head and may not reach the GCS port from here)."""
    if not ray.is_initialized():
        return None
    from ray.util.client import ray as client_ray

    if client_ray.is_connected():
        return None
    return ray.get_runtime_context().gcs_address


def shutdown() -> None:
    """Disconnect from Ray (and stop the local instance if :func:`connect` started one).

    Unreachable objects are collected first: an array read from a compiled graph's channel
    is a view of memory that Ray's core manages, and one freed after the core has shut down
    crashes the process (SIGSEGV, or an abort on a failed check). Such arrays end up in
    garbage when a step fails (a worker killed mid-step): the error's traceback holds the
    frames of Ray's read, and Python's cycle collector may reach them long after this call,
    or at exit: :func:`connect` registers this function to run at exit, before Ray's own
    ``ray.shutdown``.
    """
    if ray.is_initialized():
        gc.collect()
        ray.shutdown()
