"""Standard streams the caller closed (``rlkit ... >&-``): noted, and given /dev/null."""

from __future__ import annotations

import os
import sys

CLOSED_STREAMS: set[str] = set()
"""The standard streams (``stdin``, ``stdout``, ``stderr``) the caller had closed (``>&-``)."""


def fill_closed_streams() -> None:
    """Give closed standard streams /dev/null, so that no file a command opens (the label
    store, a checkpoint) takes their number and gets the prints; note which they were in
    :data:`CLOSED_STREAMS`. Call it first thing in an entry point (the ``rlkit`` command does)."""
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        if getattr(sys, name) is not None:
            continue
        mode = "r" if fd == 0 else "w"
        try:
            os.fstat(fd)
        except OSError:  # closed: the lowest free number, which open() takes, is this one
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            stream = open(fd, mode, closefd=False)  # noqa: SIM115
        else:  # something opened since took the number: leave it, print into nothing
            stream = open(os.devnull, mode)  # noqa: SIM115
        setattr(sys, name, stream)
        CLOSED_STREAMS.add(name)
