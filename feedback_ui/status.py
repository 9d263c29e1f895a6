"""The status page's numbers: labels per hour, queue depth, and per labeler counts and agreement.

Counts come straight from the store on each request (cheap SQL). Agreement with the
reward model needs the ensemble and every labeled segment's predicted return, so a
background thread recomputes it every ``every_seconds`` and the page shows the last result.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from feedback_ui.agreement import Agreement, ModelJudge, gold_agreement
from feedback_ui.queue import LabelQueue
from rlkit.store import Store


class ModelAgreementWorker:
    """Recomputes per-labeler agreement with the latest reward model in a daemon thread."""

    def __init__(self, run_dir: Path, every_seconds: float = 15.0) -> None:
        self.run_dir = Path(run_dir)
        self.every_seconds = every_seconds
        self.result: dict[str, Agreement] = {}
        self.checkpoint: str | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-agreement", daemon=True)

    def start(self) -> ModelAgreementWorker:
        """Start the background thread; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the thread to stop after its current computation; does not wait for it."""
        self._stop.set()

    def _run(self) -> None:
        import torch

        torch.set_num_threads(1)  # a side job: leave the cores to the trainer and the renderer
        judge = ModelJudge(self.run_dir)
        store = Store(self.run_dir)
        try:
            while not self._stop.is_set():
                try:
                    self.result = judge.agreement(store)
                    self.checkpoint, self.error = judge.checkpoint, None
                except Exception as exc:  # noqa: BLE001  (shown on the status page, never fatal)
                    self.error = f"{type(exc).__name__}: {exc}"
                self._stop.wait(self.every_seconds)
        finally:
            store.close()


def status(
    store: Store, queue: LabelQueue, model: ModelAgreementWorker | None, now: float | None = None
) -> dict[str, Any]:
    """Everything the status page shows, as JSON-ready values."""
    now = time.time() if now is None else now
    conn = store.conn
    hour_ago = now - 3600.0
    total, human, last_hour = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(source = 'human'), 0),"
        " COALESCE(SUM(source = 'human' AND created >= ?), 0) FROM labels",
        (hour_ago,),
    ).fetchone()
    queries, gold = conn.execute("SELECT COUNT(*), COALESCE(SUM(gold), 0) FROM queries").fetchone()
    rows = conn.execute(
        "SELECT labeler, COUNT(*), SUM(choice = 'skip'), SUM(created >= ?), AVG(watch_seconds)"
        " FROM labels WHERE source = 'human' GROUP BY labeler ORDER BY COUNT(*) DESC, labeler",
        (hour_ago,),
    ).fetchall()
    golds = gold_agreement(store)
    models = model.result if model is not None else {}
    labelers = []
    for name, count, skips, recent, watch in rows:
        g, m = golds.get(name, Agreement()), models.get(name, Agreement())
        labelers.append({
            "name": name, "labels": int(count), "skips": int(skips or 0),
            "last_hour": int(recent or 0),
            "mean_watch_seconds": None if watch is None else round(float(watch), 2),
            "gold_answered": g.total, "gold_agreement": g.rate,
            "model_compared": m.total, "model_agreement": m.rate,
        })  # fmt: skip
    return {
        "labels_total": int(total),
        "human_labels": int(human),
        "labels_per_hour": int(last_hour),
        "queue_depth": queue.queue_depth(),
        "queries_total": int(queries),
        "gold_queries": int(gold),
        "labelers": labelers,
        "model_checkpoint": None if model is None else model.checkpoint,
        "model_error": None if model is None else model.error,
        "labels_per_query": queue.labels_per_query,
        "lease_seconds": queue.lease_seconds,
        "gold_every": queue.gold_every,
    }
