"""Worker results compressed on their way from one Ray node to another.

A worker on the driver's node hands its results over through shared memory, where
compressing would only cost CPU. From another node they cross the network, and there an
Atari worker's frames (8 kB per env step) and clip frames (34 kB with both) fill a link long
before the CPUs are busy: a Pong worker stepping ~2,000 env steps/s with clip frames sends
~69 MB/s. The screens are mostly flat colour, so zlib's fastest level shrinks them 30-90x
(Pong, Breakout, Space Invaders, Seaquest: ``BENCHMARKS.md``, "Across a link") for about
7% of the worker's CPU and 3% of the driver's per step.
"""

from __future__ import annotations

import pickle
import zlib
from typing import Any

#: zlib's fastest level: the screens compress 30-90x already at it.
LEVEL = 1


class Compressed:
    """``value``, pickled as its own pickle compressed by zlib (level :data:`LEVEL`).

    Unpickling gives back ``value`` itself, not a :class:`Compressed`: a worker method
    returns ``Compressed(result)`` and the driver's ``ray.get`` returns ``result``, with no
    change on the driver's side. ``value`` must pickle with the standard :mod:`pickle`
    (numpy arrays, dataclasses of them, dicts, lists, tuples).
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        blob = zlib.compress(pickle.dumps(self.value, protocol=pickle.HIGHEST_PROTOCOL), LEVEL)
        return inflate, (blob,)


def inflate(blob: bytes) -> Any:
    """The value whose compressed pickle is ``blob`` (what unpickling a :class:`Compressed`
    calls)."""
    return pickle.loads(zlib.decompress(blob))
