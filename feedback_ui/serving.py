"""How ``rlkit label serve`` runs the app: uvicorn, with limits on slow and idle clients.

Uvicorn's HTTP/1.1 protocol (h11) only times out a connection that sits idle after a
response (``timeout_keep_alive``). A connection that has sent no request yet, or only part
of one, it keeps forever: a client that opens connections and trickles a header byte now
and then (slowloris) holds a file descriptor each, and the server runs out of them.
:class:`RequestDeadline` closes a connection whose request (headers and body) has not fully
arrived ``REQUEST_SECONDS`` after the connection opened or the previous response ended; the
app's own time to answer is not limited.

The deadline reads three attributes of uvicorn's h11 protocol that are not public API
(``H11Protocol.cycle``, and the cycle's ``response_complete`` and ``more_body``); the
versions in ``scripts/constraints.txt`` have them. :func:`uvicorn_config` checks that the
installed uvicorn still does, and where it does not serves with its plain h11 protocol (no
deadline, a warning saying so) rather than failing on every connection.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

#: Seconds a client has to send a whole request: on a new connection, or after a response
#: on a kept-alive one. The API's requests are a few hundred bytes (the body limit is 64 KiB).
REQUEST_SECONDS = 10.0
#: Seconds an idle kept-alive connection stays open after a response (uvicorn's default).
KEEP_ALIVE_SECONDS = 5
#: Connections (or requests in progress) past which a request gets 503 at once: far more
#: than a few dozen labelers' browsers open (six each), well under the usual 1024 files.
MAX_CONCURRENCY = 512
#: Largest request line plus headers, in bytes (h11's default, stated here).
MAX_HEADER_BYTES = 16 * 1024


class RequestDeadline(H11Protocol):
    """Uvicorn's h11 protocol that closes a connection whose request takes longer than
    ``deadline_seconds`` to arrive (see the module docstring).

    The deadline starts when the connection is made or a response ends, is not moved by
    the bytes that trickle in, and stops once the request is whole (the app then answers).
    """

    deadline_seconds: float = REQUEST_SECONDS
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Accept the connection and start its deadline."""
        super().connection_made(transport)
        self._update_deadline()

    def data_received(self, data: bytes) -> None:
        """Feed the bytes to h11; stop the deadline if they completed the request."""
        super().data_received(data)
        self._update_deadline()

    def on_response_complete(self) -> None:
        """Finish the response; start the deadline for the next request (unless a pipelined
        one is already whole)."""
        super().on_response_complete()
        self._update_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection, and its deadline."""
        self._stop_deadline()
        super().connection_lost(exc)

    def _update_deadline(self) -> None:
        cycle = self.cycle
        waiting = cycle is None or cycle.response_complete or cycle.more_body
        if not waiting:
            self._stop_deadline()
        elif self._deadline is None and not self.transport.is_closing():
            self._deadline = self.loop.call_later(self.deadline_seconds, self._too_slow)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()  # the app, if it waits on the body, hears a disconnect


def deadline_supported(protocol: type = H11Protocol, cycle: type = RequestResponseCycle) -> bool:
    """Whether uvicorn's h11 ``protocol`` and its request ``cycle`` still set the attributes
    :class:`RequestDeadline` reads (names their ``__init__`` assigns)."""
    try:
        protocol_sets = set(protocol.__init__.__code__.co_names)
        cycle_sets = set(cycle.__init__.__code__.co_names)
    except AttributeError:  # not plain Python functions any more
        return False
    return "cycle" in protocol_sets and {"response_complete", "more_body"} <= cycle_sets


def uvicorn_config(app: Any, request_seconds: float = REQUEST_SECONDS) -> uvicorn.Config:
    """The uvicorn settings ``rlkit label serve`` runs ``app`` with: h11 with a deadline of
    ``request_seconds`` per request (see the module docstring), no WebSockets (the app
    has none, and an upgraded connection would leave the deadline behind), and the limits
    above. Where the installed uvicorn lacks what the deadline reads
    (:func:`deadline_supported`), plain h11 and a warning on stderr."""
    if deadline_supported():
        protocol: type | str = type(
            "RequestDeadline", (RequestDeadline,), {"deadline_seconds": request_seconds}
        )
    else:
        print(
            f"warning: uvicorn {uvicorn.__version__} changed the internals rlkit's request"
            " deadline reads; serving without it (a client that sends its request slowly is"
            " not cut off). scripts/constraints.txt names the uvicorn it is tested with.",
            file=sys.stderr,
        )
        protocol = "h11"
    return uvicorn.Config(
        app, http=protocol, ws="none", log_level="warning", access_log=False,
        timeout_graceful_shutdown=5, timeout_keep_alive=KEEP_ALIVE_SECONDS,
        limit_concurrency=MAX_CONCURRENCY, h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )  # fmt: skip
