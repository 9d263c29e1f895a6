"""rlkit.core.stop: the first Ctrl-C or SIGTERM asks for a stop, the second stops at once."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from rlkit.core.stop import GracefulStop, StopRequested, signals_deferred


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_asks_second_stops_at_once_and_handlers_come_back(signum):
    before = signal.getsignal(signum)
    lines: list[str] = []
    with GracefulStop(announce=lines.append) as stop:
        stop.check(5)  # nothing asked yet
        os.kill(os.getpid(), signum)
        assert stop.requested == signum
        assert len(lines) == 1 and "again to stop at once" in lines[0]
        with pytest.raises(StopRequested) as info:
            stop.check(1024)
        assert info.value.step == 1024 and info.value.exit_code == 128 + signum
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signum)
    assert signal.getsignal(signum) is before


def test_outside_the_main_thread_it_installs_nothing():
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    seen: list[object] = []

    def body() -> None:
        with GracefulStop() as stop:
            seen.append({s: signal.getsignal(s) for s in handlers})
            stop.check(0)  # never requested

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [handlers]


def test_released_early_a_signal_acts_as_before_the_context():
    """After release(), the handler from before the context (here a known one, not whatever
    an earlier test in this process left) gets the signal, and no stop is requested. The
    handler is waited for: the kernel may hand the signal to another thread of the process
    (this test process has many), and Python runs it in the main thread a moment later (a
    suite run once saw "DID NOT RAISE KeyboardInterrupt" right after os.kill)."""
    seen: list[int] = []
    before = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        with GracefulStop() as stop:
            stop.release()
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.monotonic() + 10
            while not seen and time.monotonic() < deadline:
                time.sleep(0.01)
            assert seen == [signal.SIGINT] and stop.requested is None
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_signal_during_a_deferred_block_is_handled_not_lost():
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with GracefulStop() as stop:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested == signal.SIGINT  # by now, whichever thread took it
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask


CHILD_MASK = """
import json, multiprocessing, os, signal, sys, threading


def child(conn):  # its mask as it started, then a Ctrl-C while blocked, then ignore_signals()
    started = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    os.kill(os.getpid(), signal.SIGINT)
    from rlkit.core.stop import ignore_signals

    ignore_signals()
    conn.send([sorted(started), sorted(signal.pthread_sigmask(signal.SIG_BLOCK, []))])


if __name__ == "__main__":
    from rlkit.core.stop import start_ignoring_signals

    ctx = multiprocessing.get_context("spawn")
    seen = {}
    for thread in sys.argv[1:]:
        parent, end = ctx.Pipe()
        proc = ctx.Process(target=child, args=(end,))
        if thread == "main":
            start_ignoring_signals(proc)
        else:
            starter = threading.Thread(target=start_ignoring_signals, args=(proc,))
            starter.start()
            starter.join()
        started, after = parent.recv() if parent.poll(60) else (None, None)
        proc.join(30)
        seen[thread] = {"started": started, "after": after, "exitcode": proc.exitcode}
    print(json.dumps(seen))
"""


def test_a_child_started_ignoring_signals_starts_with_them_blocked(tmp_path):
    """The reward learner's child never acts on Ctrl-C, from its first import on, whichever
    thread starts it: the first child of a fresh process from the main thread (its start
    launches multiprocessing's resource tracker, which unblocks them), then one from another
    thread."""
    script = tmp_path / "child_mask.py"
    script.write_text(CHILD_MASK)
    out = subprocess.run(
        [sys.executable, str(script), "main", "other"],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    seen = json.loads(out.stdout)
    assert list(seen) == ["main", "other"]
    for report in seen.values():
        assert {signal.SIGINT, signal.SIGTERM} <= set(report["started"])
        assert signal.SIGINT not in report["after"] and signal.SIGTERM not in report["after"]
        assert report["exitcode"] == 0  # the SIGINT sent while blocked did not end it
