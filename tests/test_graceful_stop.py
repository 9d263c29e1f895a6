"""rlkit.core.stop: the first Ctrl-C or SIGTERM asks for a stop, the second stops at once."""

import os
import signal
import threading

import pytest

from rlkit.core.stop import GracefulStop, StopRequested


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
    with GracefulStop() as stop:
        stop.release()
        with pytest.raises(KeyboardInterrupt):  # Python's own SIGINT handler again
            os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested is None
