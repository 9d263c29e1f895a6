"""Export a run's labels with each clip's provenance, as JSON lines or CSV.

One row per stored label (people's and the synthetic teacher's). Each side of the pair
carries where its clip came from: env id, the run's seed, the vectorized env index, the
global step at which the segment ended, and its range of steps within its episode
(``episode_start`` inclusive to ``episode_end`` exclusive).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from rlkit.core.errors import UserError
from rlkit.core.types import mu_for_choice
from rlkit.store import Store

_SIDE = ("segment", "env_id", "seed", "env_index", "step", "episode_start", "episode_end",
         "length", "true_return", "clip")  # fmt: skip
CSV_FIELDS = (
    ["label_id", "query_id", "choice", "mu_left", "mu_right", "labeler", "source", "created",
     "created_iso", "watch_seconds", "gold", "score"]
    + [f"left_{k}" for k in _SIDE] + [f"right_{k}" for k in _SIDE]
)  # fmt: skip


def _seed(run_dir: Path) -> int | None:
    try:
        return int(json.loads((run_dir / "config.json").read_text()).get("seed"))
    except (OSError, ValueError, TypeError):
        return None


def _clip(run_dir: Path, segment_id: int) -> str | None:
    for suffix in (".mp4", ".webm"):
        name = f"clips/seg_{segment_id:09d}{suffix}"
        if (run_dir / name).is_file():
            return name
    return None


def export_rows(store: Store) -> Iterator[dict[str, Any]]:
    """Every label, oldest first, as a nested dict (``left`` / ``right`` provenance)."""
    seed = _seed(store.run_dir)
    rows = store.conn.execute(
        "SELECT l.id, l.query_id, l.choice, l.labeler, l.source, l.created, l.watch_seconds,"
        " q.gold, q.score, q.segment_a, q.segment_b FROM labels l"
        " JOIN queries q ON q.id = l.query_id ORDER BY l.id"
    ).fetchall()
    segments: dict[int, dict[str, Any]] = {}

    def side(segment_id: int) -> dict[str, Any]:
        if segment_id not in segments:
            r = store.conn.execute(
                "SELECT env_id, env_index, step, episode_start, length, true_return"
                " FROM segments WHERE id = ?",
                (segment_id,),
            ).fetchone()
            if r is None:  # a row deleted by hand: the database itself reads fine
                raise UserError(
                    f"{store.run_dir / Store.DB_NAME} has a query of segment {segment_id} but no"
                    " row for that segment: damaged; left as it is"
                )
            env_id, env_index, step, start, length, ret = r
            segments[segment_id] = {
                "segment": segment_id, "env_id": env_id, "seed": seed, "env_index": env_index,
                "step": step, "episode_start": start, "episode_end": start + length,
                "length": length, "true_return": ret, "clip": _clip(store.run_dir, segment_id),
            }  # fmt: skip
        return segments[segment_id]

    for lid, qid, choice, labeler, source, created, watch, gold, score, a, b in rows:
        mu = mu_for_choice(choice)
        yield {
            "label_id": lid, "query_id": qid, "choice": choice,
            "mu": None if mu is None else list(mu), "labeler": labeler, "source": source,
            "created": created,
            "created_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
            "watch_seconds": watch, "gold": bool(gold), "score": score,
            "left": side(int(a)), "right": side(int(b)),
        }  # fmt: skip


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    mu = row["mu"] or (None, None)
    out = {k: v for k, v in row.items() if k not in ("mu", "left", "right")}
    out.update(mu_left=mu[0], mu_right=mu[1], gold=int(row["gold"]))
    for name in ("left", "right"):
        out.update({f"{name}_{k}": v for k, v in row[name].items()})
    return out


def write_export(store: Store, fmt: str, out: IO[str]) -> int:
    """Write every label to ``out`` as ``jsonl`` or ``csv``; return the number of rows."""
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"format must be jsonl or csv, got {fmt!r}")
    n = 0
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    for row in export_rows(store):
        if writer is None:
            out.write(json.dumps(row) + "\n")
        else:
            writer.writerow(_flat(row))
        n += 1
    return n
