"""Whether a buffer a setting asks for can fit in this machine's memory, asked up front.

NumPy and torch allocate large zeroed arrays lazily (the kernel maps pages on first write),
so a replay buffer far too big for the machine is created without complaint and the process
is killed by the kernel's OOM killer hours later, when the buffer fills. A one-line error at
set-up is kinder.
"""

from __future__ import annotations

from rlkit.core.errors import UserError

GIB = 1024**3


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``: free memory plus
    what the page cache would give back), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_fits_in_memory(nbytes: int, what: str, fix: str) -> None:
    """Raise a one-line :class:`UserError` if ``nbytes`` exceed the available memory.

    Args:
        nbytes: what the buffer will take once full.
        what: the buffer and the setting behind it, e.g. ``"--replay-size 1000000000 (a
            replay buffer of 84x84x4 observations)"``.
        fix: what to change, e.g. ``"lower --replay-size"``.
    """
    available = available_memory()
    if available is not None and nbytes > available:
        raise UserError(
            f"{what} needs {nbytes / GIB:,.1f} GiB, more than the {available / GIB:,.1f} GiB"
            f" of memory available here: {fix}"
        )
