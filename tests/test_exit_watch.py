"""The exit watch (rlkit.commands.exit_watch) and the port check it and the Ray pool use
(rlkit.core.port): a run that Ray ends from outside Python, its cluster's head gone, still
gets its one line; one that ends normally, or for another reason, gets nothing more."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rlkit.core.port import port_answers


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed


@pytest.fixture
def listening():
    """``127.0.0.1:PORT`` of a socket that accepts connections."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield f"127.0.0.1:{s.getsockname()[1]}"


def test_port_answers_within_its_grace_or_not_at_all(listening):
    assert port_answers(listening, grace_s=0)
    closed = f"127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    assert not port_answers(closed, grace_s=1.0)
    assert 0.5 <= time.monotonic() - t0 < 3.0  # tried for its grace, not longer
    # A server that comes back on the same port within the grace counts as answering.
    port = int(closed.rsplit(":", 1)[1])
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def come_back() -> None:
        time.sleep(0.7)
        server.bind(("127.0.0.1", port))
        server.listen()

    thread = threading.Thread(target=come_back)
    thread.start()
    try:
        assert port_answers(closed, grace_s=3.0)
    finally:
        thread.join()
        server.close()


def _run_watched(
    head: str, run_dir: Path, how: str, grace_s: float = 1.0
) -> subprocess.CompletedProcess:
    """A process that starts an ExitWatch and then ends ``how``: ``exit`` as Ray's C++ core
    ends a driver (``os._exit(1)``: no Python cleanup), ``done`` normally."""
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from rlkit.commands.exit_watch import ExitWatch\n"
        f"watch = ExitWatch({head!r}, Path({str(run_dir)!r}), grace_s={grace_s})\n"
        + ("watch.done()\nsys.exit(0)\n" if how == "done" else "os._exit(1)\n")
    )
    # Its stderr is a pipe the watch shares: this returns once the watch has ended too.
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )


def test_a_run_ray_ended_with_its_head_gone_gets_its_line(tmp_path):
    head = f"127.0.0.1:{_closed_port()}"
    ended = _run_watched(head, tmp_path, "exit")
    assert ended.returncode == 1
    assert ended.stderr.splitlines() == [
        f"error: lost the Ray cluster: its head's GCS at {head} no longer answers (Ray ended"
        " this process); stopped before the first checkpoint; the 0 labels stored so far are"
        f" kept: `rlkit prefs train --run-dir {tmp_path} --resume` starts the run again from"
        " step 0 with them once the cluster is up again (a new head: add --ray-address"
        " HOST:PORT)"
    ]


def test_a_run_that_ends_normally_or_with_its_head_alive_gets_nothing_more(tmp_path, listening):
    closed = f"127.0.0.1:{_closed_port()}"
    done = _run_watched(closed, tmp_path, "done")
    assert done.returncode == 0 and done.stderr == ""
    # Ended from outside Python with the head still there: not the watch's to explain.
    ended = _run_watched(listening, tmp_path, "exit")
    assert ended.returncode == 1 and ended.stderr == ""


def test_a_head_that_goes_seconds_after_the_run_still_gets_the_line(tmp_path):
    """`ray stop` ends the raylet (and with it the driver) ~5 s before the GCS: the watch
    waits its grace for the head to go before putting the run's end down to something else."""
    server = socket.create_server(("127.0.0.1", 0))
    head = f"127.0.0.1:{server.getsockname()[1]}"
    threading.Timer(2.0, server.close).start()  # the GCS goes 2 s after the run
    start = time.monotonic()
    ended = _run_watched(head, tmp_path, "exit", grace_s=10.0)
    assert ended.returncode == 1 and 1.5 < time.monotonic() - start < 9
    assert ended.stderr.startswith(f"error: lost the Ray cluster: its head's GCS at {head}")


def test_the_watch_and_its_line_need_neither_torch_nor_ray():
    """The watch imports what its line needs before it waits (a run's process may be ended
    at any moment after): light modules only, so that it starts in a fraction of a second and
    holds tens of MB, not torch's hundreds."""
    # The watch's main, its pipe read recording what is imported by then.
    script = (
        "import sys\n"
        "from rlkit.commands import exit_watch\n"
        "class Pipe:\n"
        "    def read(self):\n"
        "        print(' '.join(m for m in ('rlkit.commands.stopped', 'rlkit.core.port')\n"
        "                       if m in sys.modules))\n"
        "        return exit_watch.DONE\n"
        "class Stdin:\n"
        "    buffer = Pipe()\n"
        "sys.stdin = Stdin()\n"
        "exit_watch.main(['127.0.0.1:1', '.'])\n"
        "print(' '.join(m for m in ('torch', 'ray', 'gymnasium') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["rlkit.commands.stopped rlkit.core.port", ""]
