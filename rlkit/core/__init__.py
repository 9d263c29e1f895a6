"""The bottom layer: data types, buffers, seeding, run directories, logs, checkpoints.

Imports nothing else of the project, and no optional heavy dependency (Ray, web stack). The
names below are imported on first use (PEP 562), so that a light module of the package
(``rlkit.core.errors``, ``rlkit.core.port``, reading a run's checkpoint names) does not pull
in torch: the process that prints a lost run's last line starts in a fraction of a second.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlkit.core.buffers import ReplayBatch, ReplayBuffer, SegmentPool
    from rlkit.core.checkpoint import (
        CheckpointError,
        atomic_write_bytes,
        load_checkpoint,
        save_checkpoint,
    )
    from rlkit.core.errors import UserError
    from rlkit.core.seeding import seed_everything
    from rlkit.core.types import Comparison, Segment, Trajectory

#: Each exported name and the submodule that defines it.
_EXPORTS = {
    "ReplayBatch": "buffers",
    "ReplayBuffer": "buffers",
    "SegmentPool": "buffers",
    "CheckpointError": "checkpoint",
    "atomic_write_bytes": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "UserError": "errors",
    "seed_everything": "seeding",
    "Comparison": "types",
    "Segment": "types",
    "Trajectory": "types",
}

__all__ = [
    "CheckpointError",
    "Comparison",
    "ReplayBatch",
    "ReplayBuffer",
    "Segment",
    "SegmentPool",
    "Trajectory",
    "UserError",
    "atomic_write_bytes",
    "load_checkpoint",
    "save_checkpoint",
    "seed_everything",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
