"""The bottom layer: data types, buffers, seeding, run directories, logs, checkpoints.

Imports nothing else of the project, and no optional heavy dependency (Ray, web stack).
"""

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
