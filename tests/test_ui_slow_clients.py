"""Slow clients (slowloris) against the labeling server: a real uvicorn in this process, with
a short request deadline, talked to over raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import uvicorn
from test_ui_helpers import fake_segments, make_run

import feedback_ui.serving as serving_module
from feedback_ui.app import create_app
from feedback_ui.serving import (
    KEEP_ALIVE_SECONDS,
    MAX_CONCURRENCY,
    REQUEST_SECONDS,
    RequestDeadline,
    deadline_supported,
    uvicorn_config,
)
from rlkit.cli import main

DEADLINE = 0.5
SLOW_HANDLER_SECONDS = 1.2  # longer than the deadline: the app's own time is not limited


@contextlib.contextmanager
def serving(run_dir) -> Iterator[tuple[str, int]]:
    """The labeling app (plus a ``/slow`` route that answers after SLOW_HANDLER_SECONDS)
    served as ``rlkit label serve`` serves it, with a DEADLINE-second request deadline."""
    app = create_app(run_dir, render_ahead=0, gold_every=0)

    async def with_slow_route(scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == "/slow":
            await asyncio.sleep(SLOW_HANDLER_SECONDS)
            scope = {**scope, "path": "/api/auth", "raw_path": b"/api/auth"}
        await app(scope, receive, send)

    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn_config(with_slow_route, request_seconds=DEADLINE))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        yield sock.getsockname()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _closed_by_server(conn: socket.socket) -> bool:
    """Whether the server has closed ``conn`` (reads end), without waiting."""
    if not select.select([conn], [], [], 0)[0]:
        return False
    try:
        return conn.recv(65536) == b""
    except ConnectionResetError:
        return True


def _status(conn: socket.socket) -> int:
    """Read one whole response from ``conn``; its status code."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"closed mid-response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))  # fmt: skip
    while len(body) < length:
        body += conn.recv(65536)
    return int(head.split()[1])


def test_connections_whose_request_never_completes_are_closed(tmp_path):
    make_run(tmp_path, fake_segments(4), n_queries=2)
    with serving(tmp_path) as address, contextlib.ExitStack() as open_sockets:
        clients = {name: open_sockets.enter_context(socket.create_connection(address))
                   for name in ("silent", "trickle", "half body", "kept alive", "slow handler")}  # fmt: skip
        start = time.monotonic()
        clients["trickle"].sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        clients["half body"].sendall(
            b"POST /api/queries/next HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b'Content-Type: application/json\r\nContent-Length: 20\r\n\r\n{"labeler"'
        )
        kept = clients["kept alive"]
        kept.sendall(b"GET /api/auth HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _status(kept) == 200
        kept.sendall(b"GET /api/auth HTTP/1.1\r\n")  # its next request stalls
        clients["slow handler"].sendall(b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        closed: dict[str, float] = {}
        while time.monotonic() - start < 3 and len(closed) < 4:
            time.sleep(0.05)
            with contextlib.suppress(OSError):  # a header byte now and then, as slowloris does
                clients["trickle"].sendall(b"X")
            for name, conn in clients.items():
                if name != "slow handler" and name not in closed and _closed_by_server(conn):
                    closed[name] = time.monotonic() - start
        assert set(closed) == {"silent", "trickle", "half body", "kept alive"}
        assert all(DEADLINE - 0.1 < t < DEADLINE + 1.0 for t in closed.values()), closed
        # a request that arrived whole waits on the app past the deadline, and is answered
        slow = clients["slow handler"]
        slow.settimeout(10)
        assert _status(slow) == 200
        assert time.monotonic() - start >= SLOW_HANDLER_SECONDS
        r = httpx.get(f"http://{address[0]}:{address[1]}/api/status", timeout=10)
        assert r.status_code == 200  # and the server still serves everyone else


def test_label_serve_runs_uvicorn_with_the_limits(tmp_path, monkeypatch):
    make_run(tmp_path, fake_segments(4), n_queries=1)
    ran: list[tuple[uvicorn.Config, list[socket.socket]]] = []

    def run(self: uvicorn.Server, sockets: list[socket.socket]) -> None:
        ran.append((self.config, sockets))

    monkeypatch.setattr(uvicorn.Server, "run", run)
    assert main(["label", "serve", str(tmp_path), "--port", "0", "--render-ahead", "0"]) == 0
    ((config, sockets),) = ran
    for sock in sockets:
        sock.close()
    assert isinstance(config.http, type) and issubclass(config.http, RequestDeadline)
    assert config.http.deadline_seconds == REQUEST_SECONDS
    assert config.timeout_keep_alive == KEEP_ALIVE_SECONDS < REQUEST_SECONDS
    assert config.limit_concurrency == MAX_CONCURRENCY
    assert config.h11_max_incomplete_event_size == 16 * 1024
    assert config.ws == "none" and not config.access_log


def test_the_deadline_does_not_cut_off_a_quick_keep_alive_client(tmp_path):
    """Requests that each arrive at once share one kept-alive connection for longer than
    the deadline."""
    make_run(tmp_path, fake_segments(4), n_queries=1)
    with serving(tmp_path) as address, socket.create_connection(address) as conn:
        conn.settimeout(10)
        for _ in range(4):
            time.sleep(DEADLINE / 2)  # under the deadline each time, over it in all
            conn.sendall(b"GET /api/auth HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert _status(conn) == 200


def test_the_installed_uvicorn_has_what_the_deadline_reads():
    # Fails when an upgraded uvicorn drops an attribute RequestDeadline reads, rather than
    # the server quietly serving without its deadline.
    assert deadline_supported()


def test_a_uvicorn_without_those_internals_is_recognized():
    class Protocol:
        def __init__(self) -> None:
            self.state = None  # no ``cycle``

    class Cycle:
        def __init__(self) -> None:
            self.response_complete = False  # no ``more_body``

    class FullCycle(Cycle):
        def __init__(self) -> None:
            self.response_complete = False
            self.more_body = True

    class FullProtocol:
        def __init__(self) -> None:
            self.cycle = None

    assert not deadline_supported(Protocol, FullCycle)
    assert not deadline_supported(FullProtocol, Cycle)
    assert deadline_supported(FullProtocol, FullCycle)
    assert not deadline_supported(object, FullCycle)  # a C-level __init__


def test_without_them_the_server_runs_plain_h11_and_says_so(monkeypatch, capsys):
    monkeypatch.setattr(serving_module, "deadline_supported", lambda: False)
    config = uvicorn_config(create_app, request_seconds=DEADLINE)
    assert config.http == "h11"
    assert config.limit_concurrency == MAX_CONCURRENCY  # the other limits stay
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "serving without it" in err and uvicorn.__version__ in err
