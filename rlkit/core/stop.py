"""Stopping a long run at its next checkpoint on Ctrl-C or SIGTERM, instead of losing the work
done since the last one.

The first SIGINT (Ctrl-C) or SIGTERM (``kill``, a cluster scheduler's preemption notice) only
records that a stop was asked for; the run checks :attr:`GracefulStop.requested` where it can
save (the end of a round), checkpoints and exits. A second signal stops at once, as Python's
default handler would (``KeyboardInterrupt``), losing only what came after the last checkpoint.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from multiprocessing import resource_tracker
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType, TracebackType

SIGNALS = (signal.SIGINT, signal.SIGTERM)
NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class StopRequested(Exception):
    """Raised by a run that stopped at a checkpoint because a stop was asked for.

    Attributes:
        signum: the signal that asked (``signal.SIGINT`` or ``signal.SIGTERM``).
        step: the step the run was saved at.
        run_dir: the run's directory, if the run says.
    """

    def __init__(self, signum: int, step: int, run_dir: Path | None = None) -> None:
        super().__init__(f"stopped by {NAMES.get(signum, signum)} at step {step}")
        self.signum = signum
        self.step = step
        self.run_dir = run_dir

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process the signal ended (130, 143)."""
        return 128 + int(self.signum)


class GracefulStop:
    """A context that turns the first SIGINT or SIGTERM into a request to stop.

    Args:
        announce: called with a line to show the user when the first signal arrives
            (from the signal handler: keep it short and non-blocking).
        what: how the announcement names the point the run will stop at.

    Only the main thread can own signal handlers; elsewhere the context does nothing and
    :attr:`requested` stays ``None``. The previous handlers come back on exit.
    """

    def __init__(
        self,
        announce: Callable[[str], None] | None = None,
        what: str = "at the end of this round, after a checkpoint",
    ) -> None:
        self.announce = announce
        self.what = what
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def release(self) -> None:
        """Put the previous handlers back now, for what is left of a run once nothing more
        would be saved (a signal then acts as it did before the context)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:  # the second one: stop now
            raise KeyboardInterrupt
        self.requested = signum
        if self.announce is not None:
            self.announce(
                f"{NAMES.get(signum, signum)}: stopping {self.what}; send it again to stop at"
                " once (what came after the last checkpoint is then lost)"
            )

    def check(self, step: int, run_dir: Path | None = None) -> None:
        """Raise :class:`StopRequested` at ``step`` if a stop was asked for (call it right
        after a checkpoint)."""
        if self.requested is not None:
            raise StopRequested(self.requested, step, run_dir)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM blocked in the calling thread while the block runs, for starting a
    child process that must never act on them.

    A child started in the block inherits the blocked mask through fork and exec, so a Ctrl-C
    that reaches it while it imports stays pending until it sets them to ignored (which
    discards it; see :func:`ignore_signals`). A signal meant for this process is not lost: it
    is handled on exit from the block, or at once if another thread of the process takes it.
    For a ``multiprocessing`` child use :func:`start_ignoring_signals`.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def ignore_signals() -> None:
    """In a child started under :func:`signals_deferred`: ignore SIGINT and SIGTERM from now
    on (one that arrived since the start is dropped), then unblock them."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def start_ignoring_signals(process: BaseProcess) -> None:
    """``process.start()`` under :func:`signals_deferred`; its target should call
    :func:`ignore_signals` first.

    multiprocessing's resource tracker, which a spawned child's start launches the first time,
    unblocks SIGINT and SIGTERM after its own start (``SIG_UNBLOCK``, not the mask it found), so
    it is made to run before they are blocked.
    """
    resource_tracker.ensure_running()
    with signals_deferred():
        process.start()
