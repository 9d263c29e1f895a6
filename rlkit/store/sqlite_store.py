"""The clip/query/label store: one SQLite database per run, shared by trainer and labeling UI.

Layout in the run directory::

    store.sqlite            segments (metadata), queries, labels, meta
    segments/seg_<id>.npz   each queried segment's arrays (obs, acts, true_rews, render_state)

SQLite runs in WAL mode with ``synchronous=FULL``, so a committed label survives a kill -9
of the process (and a power cut) right after the commit, and readers (the UI) never block
the writer (the trainer) or each other. Every write is one short ``BEGIN IMMEDIATE``
transaction. Segment arrays are written atomically *before* their row, so a row always
points at a complete file.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import sqlite3
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import numpy as np

from rlkit.core.checkpoint import atomic_write_bytes
from rlkit.core.errors import UserError
from rlkit.core.types import CHOICES, Segment

SCHEMA_VERSION = 1

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    env_id TEXT NOT NULL,
    env_index INTEGER NOT NULL,
    step INTEGER NOT NULL,
    episode_start INTEGER NOT NULL,
    length INTEGER NOT NULL,
    true_return REAL NOT NULL,
    path TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS queries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    segment_a INTEGER NOT NULL REFERENCES segments(id),
    segment_b INTEGER NOT NULL REFERENCES segments(id),
    score REAL NOT NULL,
    created REAL NOT NULL,
    labels_wanted INTEGER NOT NULL DEFAULT 1,
    gold INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL
);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    query_id INTEGER NOT NULL REFERENCES queries(id),
    choice TEXT NOT NULL CHECK (choice IN ({", ".join(repr(c) for c in CHOICES)})),
    labeler TEXT NOT NULL,
    source TEXT NOT NULL,
    created REAL NOT NULL,
    watch_seconds REAL,
    idempotency_key TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS labels_by_query ON labels(query_id);
CREATE INDEX IF NOT EXISTS queries_by_score ON queries(score DESC);
"""


#: The tables and indexes :data:`_SCHEMA` makes.
_SCHEMA_NAMES = set(re.findall(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)", _SCHEMA))


@dataclasses.dataclass(frozen=True)
class LabelRow:
    """A stored label joined with its query's segments."""

    id: int
    query_id: int
    segment_a: int
    segment_b: int
    choice: str
    labeler: str
    source: str
    created: float


def connect(path: str | os.PathLike, timeout: float = 30.0) -> sqlite3.Connection:
    """A connection in autocommit mode with WAL, synchronous=FULL and foreign keys on."""
    conn = sqlite3.connect(
        str(path), timeout=timeout, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return conn


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """Read-only; with no -wal file beside it (no open writer), also without the -shm and
    -wal files a WAL reader would leave behind."""
    live = path.with_name(path.name + "-wal").exists()
    return sqlite3.connect(f"file:{path}?mode=ro" + ("" if live else "&immutable=1"), uri=True)


def stored_label_count(run_dir: str | os.PathLike) -> int:
    """Labels in the run's store, read without writing to it (0 if it cannot be read)."""
    try:
        conn = _connect_read_only(Path(run_dir) / Store.DB_NAME)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM labels").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


#: The tables every store has (``_SCHEMA``); one missing means the file was damaged.
STORE_TABLES = ("meta", "segments", "queries", "labels")


def check_store(run_dir: str | os.PathLike, required: bool = True) -> None:
    """Raise a one-line :class:`~rlkit.core.errors.UserError` if the run's store is missing
    (when ``required``) or is not a readable SQLite database, before anything opens it for
    writing; the file is left as it is."""
    path = Path(run_dir) / Store.DB_NAME
    if not path.exists():
        if required:
            raise UserError(f"{path} is missing: the run's labels are not there")
        return
    try:
        conn = _connect_read_only(path)
        try:
            verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise UserError(f"{path} is not a readable SQLite store ({exc}); left as it is") from None
    if verdict != "ok":
        raise UserError(f"{path} is damaged ({verdict}); left as it is")
    if "labels" not in tables:
        raise UserError(f"{path} holds no label table: not a store rlkit wrote; left as it is")
    missing = [t for t in STORE_TABLES if t not in tables]
    if missing:
        raise UserError(
            f"{path} lacks its {', '.join(missing)} table{'s' if len(missing) > 1 else ''}:"
            " damaged; left as it is"
        )


def segment_file_name(segment_id: int) -> str:
    """The file in ``segments/`` that holds a stored segment's arrays."""
    return f"seg_{segment_id:09d}.npz"


def check_segment_files(run_dir: str | os.PathLike) -> None:
    """Raise a one-line :class:`~rlkit.core.errors.UserError` if a segment the store lists has
    no file in ``segments/`` (its arrays: the run cannot train on its labels without them).
    Call after :func:`check_store`; a run without a store passes."""
    path = Path(run_dir) / Store.DB_NAME
    if not path.exists():
        return
    conn = _connect_read_only(path)
    try:
        ids = [row[0] for row in conn.execute("SELECT id FROM segments ORDER BY id")]
    finally:
        conn.close()
    folder = Path(run_dir) / "segments"
    missing = [i for i in ids if not (folder / segment_file_name(i)).is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} of the {len(ids)} segments the store lists have no file in {folder}"
            f" (first: {segment_file_name(missing[0])}): the run is damaged; left as it is"
        )
    damaged = [i for i in ids if not _segment_file_whole(folder / segment_file_name(i))]
    if damaged:
        raise UserError(
            f"{len(damaged)} of the {len(ids)} segment files in {folder} are damaged (first:"
            f" {segment_file_name(damaged[0])}): the run is damaged; left as it is"
        )


class DamagedSegmentError(UserError, ValueError):
    """A stored segment's file is missing or unreadable (one line, exit code 2 at the CLI; a
    ValueError to code that skips a bad segment, as the clip renderer does)."""


def _segment_file_whole(path: Path) -> bool:
    """Whether a segment file's zip directory (at its end: gone if the file was cut short)
    reads and names the arrays every segment has. Cheap: the arrays themselves are not read."""
    try:
        with zipfile.ZipFile(path) as archive:
            return {"obs.npy", "acts.npy", "true_rews.npy"} <= set(archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


class Store:
    """The run's store. One instance per process (or per thread, for servers).

    Args:
        run_dir: the run directory (created if missing).
    """

    DB_NAME = "store.sqlite"

    def __init__(self, run_dir: str | os.PathLike, read_only: bool = False) -> None:
        """The run's store, created if missing. ``read_only``: the existing store opened for
        reading only; nothing is created or written (with no writer open, not even the WAL's
        ``-shm`` file), so a read-only run directory (an archived or another user's run) can
        be read, e.g. by ``label export``; any write raises ``sqlite3.OperationalError``."""
        self.run_dir = Path(run_dir)
        self.segment_dir = self.run_dir / "segments"
        self.path = self.run_dir / self.DB_NAME
        if read_only:
            self.conn = _connect_read_only(self.path)
            return
        self.segment_dir.mkdir(parents=True, exist_ok=True)
        self.conn = connect(self.path)
        if self._schema_ready():  # a read, so a store another process is writing opens at once
            return
        with self.transaction():
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    self.conn.execute(stmt)
            self.conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def _schema_ready(self) -> bool:
        """Whether every table and index of the schema, and its version, are there."""
        names = {row[0] for row in self.conn.execute("SELECT name FROM sqlite_master")}
        if not _SCHEMA_NAMES <= names:
            return False
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return row is not None

    # -- plumbing -----------------------------------------------------------------------
    class _Tx:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def __enter__(self) -> sqlite3.Connection:
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn

        def __exit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> None:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")

    def transaction(self) -> Store._Tx:
        """``with store.transaction() as conn:``: one write transaction, committed durably."""
        return Store._Tx(self.conn)

    def close(self) -> None:
        """Close the database connection."""
        self.conn.close()

    def set_meta(self, key: str, value: str) -> None:
        """Set ``meta[key] = value`` in one write transaction."""
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        """``meta[key]``, or ``default`` if the key is not stored."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    # -- segments -----------------------------------------------------------------------
    def segment_path(self, segment_id: int) -> Path:
        """Where segment ``segment_id``'s arrays are (or would be) stored."""
        return self.segment_dir / segment_file_name(segment_id)

    def has_segment(self, segment_id: int) -> bool:
        """Whether segment ``segment_id`` has a row in the store."""
        q = "SELECT 1 FROM segments WHERE id = ?"
        return self.conn.execute(q, (segment_id,)).fetchone() is not None

    def add_segment(self, seg: Segment) -> None:
        """Persist a segment (arrays, then row); a no-op if its id is already stored."""
        if seg.id < 0:
            raise ValueError("only segments with an id (from a SegmentPool) can be stored")
        if self.has_segment(seg.id):
            return
        buf = io.BytesIO()
        arrays = {"obs": seg.obs, "acts": seg.acts, "true_rews": seg.true_rews}
        if seg.render_state is not None:
            arrays["render_state"] = seg.render_state
        np.savez(buf, **arrays)
        path = self.segment_path(seg.id)
        atomic_write_bytes(path, buf.getvalue())
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO segments(id, env_id, env_index, step, episode_start, length,"
                " true_return, path, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seg.id, seg.env_id, seg.env_index, seg.step, seg.episode_start, len(seg),
                 seg.true_return, path.name, time.time()),
            )  # fmt: skip

    def load_segment(self, segment_id: int) -> Segment:
        """The stored segment ``segment_id``, its arrays read from its file.

        Raises:
            KeyError: no such segment.
            DamagedSegmentError: its file is missing or unreadable.
        """
        row = self.conn.execute(
            "SELECT env_id, env_index, step, episode_start, path FROM segments WHERE id = ?",
            (segment_id,),
        ).fetchone()
        if row is None:
            raise KeyError(f"segment {segment_id} is not in the store")
        env_id, env_index, step, episode_start, name = row
        try:
            with np.load(self.segment_dir / name) as data:
                return Segment(
                    obs=data["obs"], acts=data["acts"], true_rews=data["true_rews"],
                    render_state=data["render_state"] if "render_state" in data else None,
                    id=segment_id, env_id=env_id, env_index=env_index, step=step,
                    episode_start=episode_start,
                )  # fmt: skip
        except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError) as exc:
            raise DamagedSegmentError(
                f"segment file {self.segment_dir / name} is damaged ({type(exc).__name__});"
                " left as it is"
            ) from exc

    def max_segment_id(self) -> int:
        """The largest stored segment id, -1 if none is stored."""
        return int(self.conn.execute("SELECT COALESCE(MAX(id), -1) FROM segments").fetchone()[0])

    # -- queries ------------------------------------------------------------------------
    def add_queries(
        self, pairs: Iterable[tuple[int, int, float]], labels_wanted: int = 1, gold: bool = False
    ) -> list[int]:
        """Insert ``(segment_a, segment_b, score)`` queries in one transaction; return their ids."""
        now = time.time()
        ids = []
        with self.transaction() as conn:
            for a, b, score in pairs:
                cur = conn.execute(
                    "INSERT INTO queries(segment_a, segment_b, score, created, labels_wanted, gold)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (int(a), int(b), float(score), now, labels_wanted, int(gold)),
                )
                ids.append(int(cur.lastrowid))
        return ids

    def query(self, query_id: int) -> tuple[int, int] | None:
        """``(segment_a, segment_b)`` of a query, or None if there is no such query."""
        q = "SELECT segment_a, segment_b FROM queries WHERE id = ?"
        row = self.conn.execute(q, (query_id,)).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def asked_pairs(self) -> set[tuple[int, int]]:
        """``(segment_a, segment_b)`` of every query stored (gold ones too), as asked."""
        rows = self.conn.execute("SELECT segment_a, segment_b FROM queries").fetchall()
        return {(int(a), int(b)) for a, b in rows}

    def count_queries(self) -> int:
        """How many queries are stored, gold ones included."""
        return int(self.conn.execute("SELECT COUNT(*) FROM queries").fetchone()[0])

    def count_selected_queries(self) -> int:
        """Queries the trainer asked, without the gold queries the labeling UI mixes in."""
        q = "SELECT COUNT(*) FROM queries WHERE gold = 0"
        return int(self.conn.execute(q).fetchone()[0])

    def unanswered_queries(self) -> list[tuple[int, int, int]]:
        """``(query_id, segment_a, segment_b)`` of queries with fewer labels than wanted."""
        rows = self.conn.execute(
            "SELECT q.id, q.segment_a, q.segment_b FROM queries q"
            " WHERE (SELECT COUNT(*) FROM labels l WHERE l.query_id = q.id) < q.labels_wanted"
            " ORDER BY q.score DESC, q.id"
        ).fetchall()
        return [(int(a), int(b), int(c)) for a, b, c in rows]

    # -- labels -------------------------------------------------------------------------
    def add_label(
        self,
        query_id: int,
        choice: str,
        labeler: str,
        source: str,
        watch_seconds: float | None = None,
        idempotency_key: str | None = None,
    ) -> int:
        """Store a label durably and return its id.

        A repeated ``idempotency_key`` stores nothing and returns the first label's id.
        """
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}, got {choice!r}")
        with self.transaction() as conn:
            if idempotency_key is not None:
                row = conn.execute(
                    "SELECT id FROM labels WHERE idempotency_key = ?", (idempotency_key,)
                ).fetchone()
                if row:
                    return int(row[0])
            cur = conn.execute(
                "INSERT INTO labels(query_id, choice, labeler, source, created, watch_seconds,"
                " idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (query_id, choice, labeler, source, time.time(), watch_seconds, idempotency_key),
            )
            return int(cur.lastrowid)

    def labels_after(self, label_id: int = 0) -> list[LabelRow]:
        """Every label with id > ``label_id``, oldest first, with its query's segments."""
        rows = self.conn.execute(
            "SELECT l.id, l.query_id, q.segment_a, q.segment_b, l.choice, l.labeler, l.source,"
            " l.created FROM labels l JOIN queries q ON q.id = l.query_id"
            " WHERE l.id > ? ORDER BY l.id",
            (label_id,),
        ).fetchall()
        return [LabelRow(*row) for row in rows]

    def count_labels(self) -> int:
        """How many labels are stored."""
        return int(self.conn.execute("SELECT COUNT(*) FROM labels").fetchone()[0])
