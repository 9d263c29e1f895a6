"""rlkit.core.memory: buffers too big for the machine are refused up front, in one line."""

import pytest

from rlkit.core import memory
from rlkit.core.errors import UserError


def test_available_memory_is_read_from_the_kernel():
    available = memory.available_memory()
    with open("/proc/meminfo") as f:
        total = int(next(line for line in f if line.startswith("MemTotal:")).split()[1]) * 1024
    assert available is not None and 0 < available <= total


def test_a_buffer_over_the_available_memory_is_refused(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 8 * memory.GIB)
    memory.check_fits_in_memory(8 * memory.GIB, "--x 1", "lower --x")  # exactly fits
    with pytest.raises(UserError) as err:
        memory.check_fits_in_memory(12 * memory.GIB, "--x 3 (a buffer)", "lower --x")
    assert str(err.value) == (
        "--x 3 (a buffer) needs 12.0 GiB, more than the 8.0 GiB of memory available here: lower --x"
    )


def test_where_memory_cannot_be_read_nothing_is_refused(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: None)
    memory.check_fits_in_memory(10**18, "--x", "lower --x")
