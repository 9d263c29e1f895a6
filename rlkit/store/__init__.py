"""The run's clip/query/label store (SQLite), shared by the trainer and the labeling UI."""

from rlkit.store.sqlite_store import (
    LabelRow,
    Store,
    check_segment_files,
    check_store,
    connect,
    stored_label_count,
)

__all__ = [
    "LabelRow",
    "Store",
    "check_segment_files",
    "check_store",
    "connect",
    "stored_label_count",
]
