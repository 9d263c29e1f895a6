"""The labeling queue on top of the run's store: leases, submissions and gold queries.

Rules (each one a single ``BEGIN IMMEDIATE`` transaction, so they hold across threads
and processes):

- A query is *open* for people while it has no synthetic label (with ``--teacher mixed``
  the synthetic teacher took it) and fewer labels than ``max(labels_wanted,
  labels_per_query)``; a labeler never gets the same query twice.
- ``next`` hands a labeler the open query with the highest selection score that nobody
  else holds a live lease on, and leases it to them for ``lease_seconds``. A labeler
  holds at most one lease: asking again returns the same query until it is answered or
  the lease runs out, after which it goes back to the queue.
- ``submit`` stores a label if the query is open for that labeler and leased to them,
  then clears the lease. A lease that ran out still counts while nobody else has been
  handed the query since: a labeler who watched the clips past ``lease_seconds`` keeps
  their answer. A query never leased to them, handed on to someone else, or given up
  (asking for the next query drops a lapsed lease) is refused with 409, so that a client
  cannot pick the queries it labels. A repeated idempotency key stores nothing and
  returns the first label, so a retried POST is harmless.
- Gold queries (``queries.gold = 1``) are pairs of stored segments whose true returns
  differ clearly, so the synthetic teacher's answer is known. Every ``gold_every``-th
  query a labeler sees is one (made on demand); each labeler answers each gold query at
  most once. They measure a labeler's agreement with the true reward; like any label,
  the trainer learns from the answers too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import threading
import time
from collections.abc import Iterator

import numpy as np

from rlkit.core.types import CHOICES
from rlkit.store import Store

HUMAN = "human"


class QueueError(Exception):
    """A request the queue refuses; ``status`` is the HTTP status that describes it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Lease:
    """A query leased to a labeler."""

    query_id: int
    segment_a: int
    segment_b: int
    lease_until: float
    gold: bool


@dataclasses.dataclass(frozen=True)
class Submitted:
    """The outcome of a submission: the label's id and whether this call stored it."""

    label_id: int
    created: bool


# Open for people: no synthetic label, fewer labels than wanted, not yet answered by :who.
_OPEN = """
    NOT EXISTS (SELECT 1 FROM labels l WHERE l.query_id = q.id AND l.source != 'human')
    AND (SELECT COUNT(*) FROM labels l WHERE l.query_id = q.id) < MAX(q.labels_wanted, :n)
    AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.query_id = q.id AND l.labeler = :who)
"""
_FREE = "(q.lease_owner IS NULL OR q.lease_until < :now OR q.lease_owner = :who)"


@contextlib.contextmanager
def _not_synced(conn: sqlite3.Connection) -> Iterator[None]:
    """Commit without fsync (``synchronous=NORMAL``; WAL keeps the database consistent).

    For leases only: a lease lost to a power cut just returns its query to the queue a
    few minutes early, and skipping the fsync halves the disk waits of a labeling round
    trip. Labels are always committed with the store's ``synchronous=FULL``.
    """
    conn.execute("PRAGMA synchronous=NORMAL")
    try:
        yield
    finally:
        conn.execute("PRAGMA synchronous=FULL")


def open_queries(
    store: Store, labels_per_query: int, limit: int, now: float | None = None
) -> list[tuple[int, int, int]]:
    """``(query_id, segment_a, segment_b)`` of the ``limit`` best open ordinary queries that
    nobody holds a live lease on: the ones people will be shown next."""
    rows = store.conn.execute(
        f"SELECT q.id, q.segment_a, q.segment_b FROM queries q WHERE q.gold = 0 AND {_OPEN}"
        " AND (q.lease_owner IS NULL OR q.lease_until < :now)"
        " ORDER BY q.score DESC, q.id LIMIT :limit",
        {"n": labels_per_query, "who": "", "now": time.time() if now is None else now,
         "limit": limit},
    ).fetchall()  # fmt: skip
    return [(int(a), int(b), int(c)) for a, b, c in rows]


class LabelQueue:
    """Leases and submissions for one run's store.

    Args:
        store: the run's store; its connection is used from the calling thread only.
        lease_seconds: how long a shown query stays reserved for its labeler.
        labels_per_query: people's labels wanted per query (at least the query's own
            ``labels_wanted``).
        gold_every: one gold query after every this many ordinary ones; 0 disables gold.
        rng: chooses gold pairs.
        write_lock: serializes this process's write transactions, so that concurrent
            requests queue on a cheap lock instead of SQLite's sleeping busy handler.
    """

    def __init__(
        self,
        store: Store,
        lease_seconds: float = 300.0,
        labels_per_query: int = 1,
        gold_every: int = 10,
        rng: np.random.Generator | None = None,
        write_lock: threading.Lock | None = None,
    ) -> None:
        if lease_seconds <= 0 or labels_per_query < 1 or gold_every < 0:
            raise ValueError("need lease_seconds > 0, labels_per_query >= 1, gold_every >= 0")
        if rng is None:
            raise ValueError("LabelQueue needs an explicit rng (np.random.Generator)")
        self.store = store
        self.conn: sqlite3.Connection = store.conn
        self.lease_seconds = lease_seconds
        self.labels_per_query = labels_per_query
        self.gold_every = gold_every
        self.rng = rng
        self.lock = write_lock or threading.Lock()
        with self.lock, store.transaction() as conn:
            conn.execute("CREATE INDEX IF NOT EXISTS labels_by_labeler ON labels(labeler)")

    # -- reading ----------------------------------------------------------------------
    def open_queries(self, limit: int, now: float | None = None) -> list[tuple[int, int, int]]:
        """``(query_id, segment_a, segment_b)`` of the best open, unleased ordinary queries."""
        return open_queries(self.store, self.labels_per_query, limit, now)

    def queue_depth(self) -> int:
        """Ordinary queries that still want a person's label (leased ones included)."""
        q = f"SELECT COUNT(*) FROM queries q WHERE q.gold = 0 AND {_OPEN}"
        return int(self.conn.execute(q, {"n": self.labels_per_query, "who": ""}).fetchone()[0])

    def labels_by(self, labeler: str) -> int:
        """Labels ``labeler`` has given (skips included)."""
        q = "SELECT COUNT(*) FROM labels WHERE labeler = ?"
        return int(self.conn.execute(q, (labeler,)).fetchone()[0])

    # -- leasing ----------------------------------------------------------------------
    def next(self, labeler: str, now: float | None = None) -> Lease | None:
        """Lease the labeler's next query (see module docstring); None when nothing is open."""
        now = time.time() if now is None else now
        args = {"n": self.labels_per_query, "who": labeler, "now": now}
        with self.lock, _not_synced(self.conn), self.store.transaction() as conn:
            held = conn.execute(
                "SELECT q.id, q.gold FROM queries q WHERE q.lease_owner = :who"
                " AND q.lease_until >= :now ORDER BY q.lease_until DESC",
                args,
            ).fetchall()
            for qid, gold in held:
                if self._is_open_for(conn, qid, bool(gold), args):
                    return self._lease(conn, qid, labeler, now)
            conn.execute("UPDATE queries SET lease_owner = NULL, lease_until = NULL"
                         " WHERE lease_owner = :who", args)  # fmt: skip
            qid = self._gold_for(conn, args) if self._gold_due(conn, labeler) else None
            if qid is None:
                row = conn.execute(
                    f"SELECT q.id FROM queries q WHERE q.gold = 0 AND {_OPEN} AND {_FREE}"
                    " ORDER BY q.score DESC, q.id LIMIT 1",
                    args,
                ).fetchone()
                qid = None if row is None else int(row[0])
            return None if qid is None else self._lease(conn, qid, labeler, now)

    def _is_open_for(self, conn: sqlite3.Connection, qid: int, gold: bool, args: dict) -> bool:
        if gold:
            q = "SELECT 1 FROM labels WHERE query_id = :qid AND labeler = :who"
            return conn.execute(q, {**args, "qid": qid}).fetchone() is None
        q = f"SELECT 1 FROM queries q WHERE q.id = :qid AND {_OPEN}"
        return conn.execute(q, {**args, "qid": qid}).fetchone() is not None

    def _lease(self, conn: sqlite3.Connection, qid: int, labeler: str, now: float) -> Lease:
        until = now + self.lease_seconds
        conn.execute(
            "UPDATE queries SET lease_owner = ?, lease_until = ? WHERE id = ?",
            (labeler, until, qid),
        )
        a, b, gold = conn.execute(
            "SELECT segment_a, segment_b, gold FROM queries WHERE id = ?", (qid,)
        ).fetchone()
        return Lease(qid, int(a), int(b), until, bool(gold))

    # -- gold -------------------------------------------------------------------------
    def _gold_due(self, conn: sqlite3.Connection, labeler: str) -> bool:
        if self.gold_every <= 0:
            return False
        row = conn.execute(
            "SELECT COUNT(*) FROM labels l JOIN queries q ON q.id = l.query_id"
            " WHERE l.labeler = :who AND q.gold = 0 AND l.id > COALESCE((SELECT MAX(l2.id)"
            " FROM labels l2 JOIN queries q2 ON q2.id = l2.query_id"
            " WHERE l2.labeler = :who AND q2.gold = 1), 0)",
            {"who": labeler},
        ).fetchone()
        return int(row[0]) >= self.gold_every

    def _gold_for(self, conn: sqlite3.Connection, args: dict) -> int | None:
        """A gold query the labeler has not answered, made now if there is none free."""
        row = conn.execute(
            "SELECT q.id FROM queries q WHERE q.gold = 1 AND NOT EXISTS (SELECT 1 FROM labels l"
            f" WHERE l.query_id = q.id AND l.labeler = :who) AND {_FREE} ORDER BY q.id LIMIT 1",
            args,
        ).fetchone()
        if row is not None:
            return int(row[0])
        pair = self._gold_pair(conn, args["who"])
        if pair is None:
            return None
        cur = conn.execute(
            "INSERT INTO queries(segment_a, segment_b, score, created, labels_wanted, gold)"
            " VALUES (?, ?, 0.0, ?, 1, 1)",
            (pair[0], pair[1], time.time()),
        )
        return int(cur.lastrowid)

    def _gold_pair(
        self, conn: sqlite3.Connection, labeler: str, candidates: int = 64
    ) -> tuple[int, int] | None:
        """Two stored segments whose true returns differ by more than a typical pair's.

        Among ``candidates`` random pairs, one with a return gap at or above the median
        gap is picked at random: a clear answer, yet not only the most extreme pairs.
        """
        rows = conn.execute("SELECT id, true_return FROM segments").fetchall()
        if len(rows) < 2:
            return None
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        rets = np.array([r[1] for r in rows], dtype=np.float64)
        a = self.rng.integers(0, len(ids), candidates)
        b = self.rng.integers(0, len(ids), candidates)
        gap = np.abs(rets[a] - rets[b])
        ok = (a != b) & (gap > 0)
        if not ok.any():
            return None
        median = np.median(gap[ok])
        pick = np.flatnonzero(ok & (gap >= median))
        i = int(self.rng.choice(pick))
        return int(ids[a[i]]), int(ids[b[i]])

    # -- submitting -------------------------------------------------------------------
    def submit(
        self,
        query_id: int,
        choice: str,
        labeler: str,
        idempotency_key: str,
        watch_seconds: float | None = None,
        now: float | None = None,
    ) -> Submitted:
        """Store a person's label (see module docstring); QueueError (4xx) when refused."""
        if choice not in CHOICES:
            raise QueueError(422, f"choice must be one of {', '.join(CHOICES)}, got {choice!r}")
        now = time.time() if now is None else now
        with self.lock, self.store.transaction() as conn:
            row = conn.execute(
                "SELECT id, query_id, choice, labeler FROM labels WHERE idempotency_key = ?",
                (idempotency_key,),
            ).fetchone()
            if row is not None:
                if (row[1], row[2], row[3]) != (query_id, choice, labeler):
                    raise QueueError(
                        409, "this idempotency key was already used for a different label"
                    )
                return Submitted(int(row[0]), created=False)
            q = conn.execute(
                "SELECT gold, lease_owner, lease_until FROM queries WHERE id = ?", (query_id,)
            ).fetchone()
            if q is None:
                raise QueueError(404, f"there is no query {query_id}")
            gold, owner, until = q
            args = {"n": self.labels_per_query, "who": labeler, "now": now, "qid": query_id}
            if not self._is_open_for(conn, query_id, bool(gold), args):
                raise QueueError(409, f"query {query_id} needs no more labels from {labeler}")
            if owner != labeler:
                if owner is not None and until is not None and until >= now:
                    raise QueueError(409, f"query {query_id} is leased to another labeler")
                raise QueueError(
                    409, f"query {query_id} is not leased to {labeler} (POST /api/queries/next"
                    " leases one)",
                )  # fmt: skip
            cur = conn.execute(
                "INSERT INTO labels(query_id, choice, labeler, source, created, watch_seconds,"
                " idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (query_id, choice, labeler, HUMAN, now, watch_seconds, idempotency_key),
            )
            conn.execute(
                "UPDATE queries SET lease_owner = NULL, lease_until = NULL"
                " WHERE id = ? AND lease_owner = ?",
                (query_id, labeler),
            )
            return Submitted(int(cur.lastrowid), created=True)
