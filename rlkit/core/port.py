"""Whether a TCP port answers, for a while: how a driver tells that its cluster's head is gone."""

from __future__ import annotations

import socket
import time

#: Seconds a port that refuses connections gets to answer again: a Ray head whose GCS does
#: not answer within them counts as lost (Ray itself waits 60 s, then ends the driver's
#: process with a log line and exit code 1).
GRACE_S = 5.0


def port_answers(address: str, grace_s: float = GRACE_S) -> bool:
    """Whether ``address`` (``HOST:PORT``, ``[IPv6]:PORT``) accepts a TCP connection within
    ``grace_s`` seconds, tried every half second, each try waiting up to 1 s (a server
    restarting on the same port, as a Ray GCS under its fault tolerance does, gets that long
    to come back; 0: one try)."""
    host, _, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    deadline = time.monotonic() + grace_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                return True
        except OSError:
            if time.monotonic() + 0.5 >= deadline:
                return False
            time.sleep(0.5)
