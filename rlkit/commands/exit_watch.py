"""A line for a run that Ray ended abruptly, printed by a small process that outlives it.

When a driver loses its Ray cluster's head, Ray's C++ core may end the driver's process
itself, skipping Python altogether: at once (``_exit(1)``, no output) when the driver was
reading from the head's object store, or after 60 s of trying to reach the GCS. No
``except`` or ``finally`` runs, so the run cannot say what happened or how to resume.
:class:`ExitWatch` starts a child process that waits on a pipe from the run: the run
writes ``done`` when it ends normally (however it ends in Python); if the pipe closes
without it, the run's process was ended from outside Python, and if the cluster's head no
longer answers either (or stops answering within ``HEAD_GONE_WITHIN_S``), the child prints
the run's one-line error (what was saved, how to resume) to the stderr it shares with the run.

    python -m rlkit.commands.exit_watch HEAD_HOST:PORT RUN_DIR [GRACE_S]   # started by ExitWatch
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

DONE = b"done"
#: How long after a run's abrupt end its cluster's head may take to go too (`ray stop` ends
#: the raylet, and so the driver, ~5 s before the GCS) for the end to be put down to it.
HEAD_GONE_WITHIN_S = 15.0


class ExitWatch:
    """Watch this process's end while it uses the Ray cluster whose GCS is at ``head``.

    Args:
        head: ``HOST:PORT`` of the cluster's GCS
            (:func:`rlkit.distributed.connection.head_address`).
        run_dir: the run directory (the line says what it holds and how to resume).
        grace_s: how long the head may take to go after the run's abrupt end.

    Call :meth:`done` when the run ends in Python (any way); the watch then ends silently.
    """

    def __init__(self, head: str, run_dir: Path, grace_s: float = HEAD_GONE_WITHIN_S) -> None:
        self._proc: subprocess.Popen | None = subprocess.Popen(
            [sys.executable, "-m", "rlkit.commands.exit_watch", head, str(run_dir), str(grace_s)],
            stdin=subprocess.PIPE,
        )

    def done(self) -> None:
        """The run ended normally: end the watch (safe to call twice)."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        try:
            assert proc.stdin is not None
            proc.stdin.write(DONE)
            proc.stdin.close()
        except OSError:  # the watch died already
            pass
        proc.wait(timeout=10)


def _ended_abruptly(head: str, run_dir: Path, grace_s: float) -> str | None:
    """The line to print for a run that ended without saying ``done`` (None: its cluster's
    head kept answering for ``grace_s`` seconds, so Ray did not end it for that).

    The head is watched for a while rather than tried once: `ray stop` ends a node's raylet
    first, which ends the driver at once, and the GCS seconds later."""
    from rlkit.commands.stopped import stopped_line
    from rlkit.core.errors import head_lost_message
    from rlkit.core.port import port_answers

    deadline = time.monotonic() + grace_s
    while port_answers(head, grace_s=0.0):  # one try each: a head that answers is there
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.25)
    message = head_lost_message(head, "Ray ended this process")
    return stopped_line(message, run_dir, lost_address=head)


def main(argv: list[str]) -> int:
    """The watch process: ``argv`` is ``HEAD_HOST:PORT RUN_DIR [GRACE_S]``. Ignores the run's
    signals, waits for the pipe from the run to close, and prints the one-line error if the
    run did not write ``done`` and its head is gone; returns 0."""
    head, run_dir = argv[0], Path(argv[1])
    grace_s = float(argv[2]) if len(argv) > 2 else HEAD_GONE_WITHIN_S
    # The run's Ctrl-C (the whole terminal's process group gets it) and its SIGTERM are the
    # run's business: this process ends when the pipe closes.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    # What the line needs, imported now (a tenth of a second, no torch) rather than once the
    # run has ended: the line then follows the run's end at once, not after its shell prompt.
    import rlkit.commands.stopped  # noqa: F401
    import rlkit.core.port  # noqa: F401

    said = sys.stdin.buffer.read()
    if said == DONE:
        return 0
    line = _ended_abruptly(head, run_dir, grace_s)
    if line is not None:
        try:
            print(line, file=sys.stderr, flush=True)
        except OSError:  # the terminal is gone too
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
