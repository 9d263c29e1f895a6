"""Scalar logs to TensorBoard and CSV, with grouped names (``charts/...``, ``losses/...``)."""

from __future__ import annotations

import csv
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


class MetricsLogger:
    """Writes each scalar to TensorBoard (``run_dir/tb``) and a long-format CSV (``run_dir/metrics.csv``).

    The CSV has columns ``step, name, value`` so that new metric names can appear at any
    time, and it is appended to on resume.
    """

    def __init__(self, run_dir: str | Path) -> None:
        run_dir = Path(run_dir)
        self.tb = SummaryWriter(str(run_dir / "tb"))
        path = run_dir / "metrics.csv"
        new = not path.exists()
        self._file = open(path, "a", newline="")  # noqa: SIM115 (closed in close())
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(["step", "name", "value"])

    def log(self, step: int, **scalars: float) -> None:
        for name, value in scalars.items():
            self.tb.add_scalar(name, float(value), step)
            self._csv.writerow([step, name, float(value)])
        self._file.flush()

    def log_dict(self, step: int, scalars: dict[str, float]) -> None:
        self.log(step, **scalars)

    def close(self) -> None:
        self.tb.close()
        self._file.close()


def read_metrics(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """The CSV log as ``name -> [(step, value), ...]``."""
    out: dict[str, list[tuple[int, float]]] = {}
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return out
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["name"], []).append((int(row["step"]), float(row["value"])))
    return out
