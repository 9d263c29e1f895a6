"""Worker results compressed on their way from one Ray node to another.

A worker on the driver's node hands its results over through shared memory, where
compressing would only cost CPU. From another node they cross the network, and there an
Atari worker's frames (8 kB per env step) and clip frames (34 kB with both) fill a link long
before the CPUs are busy: a Pong worker stepping ~2,000 env steps/s with clip frames sends
~69 MB/s. The screens are mostly flat colour: Zstandard's level 1 shrinks a call's pickled
fragments 90-290x (Pong 13.8 MB to 48 kB; Breakout, Space Invaders, Seaquest 73-154 kB) in
3-4.5 ms, about 1.5% of the 240-310 ms the worker took to step them, and the driver inflates
them in ~2 ms (zlib's fastest level: 22-28 ms and 8-11 ms, for blobs 2-3x bigger).
Measurements: ``BENCHMARKS.md``, "Across a link".
"""

from __future__ import annotations

import pickle
from typing import Any

import zstandard

#: Zstandard's level: 1 is its fastest positive level; -1 saves <1 ms for 20-30% more bytes.
LEVEL = 1


class Compressed:
    """``value``, pickled as its own pickle compressed by Zstandard (level :data:`LEVEL`).

    Unpickling gives back ``value`` itself, not a :class:`Compressed`: a worker method
    returns ``Compressed(result)`` and the driver's ``ray.get`` returns ``result``, with no
    change on the driver's side. ``value`` must pickle with the standard :mod:`pickle`
    (numpy arrays, dataclasses of them, dicts, lists, tuples).
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        raw = pickle.dumps(self.value, protocol=pickle.HIGHEST_PROTOCOL)
        return inflate, (zstandard.ZstdCompressor(level=LEVEL).compress(raw),)


def inflate(blob: bytes) -> Any:
    """The value whose compressed pickle is ``blob`` (what unpickling a :class:`Compressed`
    calls)."""
    return pickle.loads(zstandard.ZstdDecompressor().decompress(blob))
