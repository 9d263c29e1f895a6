"""Scalar logs to TensorBoard and CSV, with grouped names (``charts/...``, ``losses/...``)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TextIO

from torch.utils.tensorboard import SummaryWriter


class MetricsLogger:
    """Writes each scalar to TensorBoard (``run_dir/tb``) and a long-format CSV (``run_dir/metrics.csv``).

    The CSV has columns ``step, name, value`` so that new metric names can appear at any
    time, and it is appended to on resume. Both files are opened at the first row, so a run
    that fails before logging anything (a resume refused on a damaged checkpoint) writes
    nothing.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._tb: SummaryWriter | None = None
        self._file: TextIO | None = None

    def _open(self) -> tuple[SummaryWriter, TextIO]:
        if self._tb is None or self._file is None:
            path = self.run_dir / "metrics.csv"
            # A run killed before its first row left an empty file; one killed mid-row, a last
            # line without its newline (which the next row must not run on from).
            size = path.stat().st_size if path.exists() else 0
            torn = size > 0 and _last_byte(path) != b"\n"
            self._file = open(path, "a", newline="")  # noqa: SIM115 (closed in close())
            if torn:
                self._file.write("\n")
            if size == 0:
                csv.writer(self._file).writerow(["step", "name", "value"])
            self._tb = SummaryWriter(str(self.run_dir / "tb"))
        return self._tb, self._file

    def log(self, step: int, **scalars: float) -> None:
        """Write each ``name=value`` scalar at ``step`` to TensorBoard and to ``metrics.csv``,
        flushed."""
        tb, file = self._open()
        writer = csv.writer(file)
        for name, value in scalars.items():
            tb.add_scalar(name, float(value), step)
            writer.writerow([step, name, float(value)])
        file.flush()

    def log_dict(self, step: int, scalars: dict[str, float]) -> None:
        """Like :meth:`log`, with the scalars in a dict (for names that are not identifiers)."""
        self.log(step, **scalars)

    def close(self) -> None:
        """Flush and close both files (safe to call twice; a later row opens them again).
        TensorBoard's writer writes its rows from a thread of its own: a process that exits
        without this may lose the rows it logged last (seen: 3 of 5 rows logged just before
        the exit)."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._file is not None:
            self._file.close()
            self._file = None


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1)


def read_metrics(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """The CSV log as ``name -> [(step, value), ...]``; a row torn by a kill is skipped."""
    out: dict[str, list[tuple[int, float]]] = {}
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return out
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                step, value = int(row["step"]), float(row["value"])
            except (KeyError, TypeError, ValueError):
                continue
            if row.get("name"):
                out.setdefault(row["name"], []).append((step, value))
    return out
