"""Keeping freed memory for reuse, instead of handing it back to the OS after every op.

PyTorch's CPU tensors come straight from ``malloc``. With glibc's defaults a block above the
mmap threshold (dynamic, at most 32 MB) is a fresh ``mmap`` each time, and freed heap memory
above the trim threshold goes back to the OS, so a training step whose activations are a few
MB each pays a page fault on every page of every intermediate, every step. On the 2-core VM
this made the reward ensemble's training round ~1.4x slower (BENCHMARKS.md, "Overhead").
PyTorch's performance guide suggests jemalloc or tcmalloc for the same reason; this is the
glibc-only equivalent, with nothing to install: raise both thresholds so freed blocks stay in
the heap and are reused. The price is a process whose resident size stays at its peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 << 20
"""Blocks below this come from the heap (glibc's dynamic threshold stops at 32 MB)."""
TRIM_THRESHOLD = 512 << 20
"""Free memory at the top of the heap kept for reuse rather than returned to the OS."""


def keep_freed_memory(
    mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD
) -> bool:
    """Tune glibc's malloc for reuse (process-wide; a no-op returning False elsewhere).

    Call it once, early, from an entry point (the ``rlkit`` command and the benchmarks do),
    never from library code: it changes the whole process. Returns whether it took effect.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs without mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(M_TRIM_THRESHOLD, trim_threshold)
    )
