"""The labeling queue on a real SQLite store: order, leases, labels per query, gold, export."""

import csv
import io
import json

import numpy as np
import pytest
from test_ui_helpers import fake_segments, make_run

from feedback_ui.agreement import gold_agreement, rational_choice
from feedback_ui.export import write_export
from feedback_ui.queue import LabelQueue, QueueError
from feedback_ui.status import status
from rlkit.core.types import mu_for_choice
from rlkit.store import Store


def _queue(run, **kwargs) -> LabelQueue:
    kwargs.setdefault("gold_every", 0)
    return LabelQueue(Store(run), rng=np.random.default_rng(0), **kwargs)


def test_served_in_score_order_with_leases_that_expire(tmp_path):
    by_score = make_run(tmp_path, fake_segments(10), n_queries=5)
    q = _queue(tmp_path, lease_seconds=60)
    t = 1000.0
    a = q.next("ann", now=t)
    b = q.next("bob", now=t)
    assert [a.query_id, b.query_id] == by_score[:2]  # best first, never the same query twice
    assert q.next("ann", now=t + 1).query_id == a.query_id  # asking again: same lease, renewed
    assert q.next("cat", now=t + 30).query_id == by_score[2]
    # bob walks away: once his lease runs out (ann's was renewed at t+1) his query is next
    assert q.next("dan", now=t + 60.5).query_id == b.query_id
    assert q.next("eve", now=t + 62).query_id == a.query_id  # and then ann's
    with pytest.raises(QueueError, match="leased to another") as err:
        q.submit(a.query_id, "left", "ann", "key-ann-1", now=t + 63)
    assert err.value.status == 409
    assert q.submit(a.query_id, "left", "eve", "key-eve-1", now=t + 63).created
    # dan and cat still hold theirs: eve gets the best query nobody holds
    assert q.next("eve", now=t + 64).query_id == by_score[3]
    assert q.queue_depth() == 4
    # leases commit without fsync; the connection is back to synchronous=FULL for labels
    assert q.conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_idempotency_labels_per_query_and_refusals(tmp_path):
    make_run(tmp_path, fake_segments(6), n_queries=3)
    q = _queue(tmp_path, labels_per_query=2)
    first = q.next("ann")
    s1 = q.submit(first.query_id, "equal", "ann", "key-aaaa-1", watch_seconds=3.5)
    again = q.submit(first.query_id, "equal", "ann", "key-aaaa-1", watch_seconds=3.5)
    assert s1.created and not again.created and again.label_id == s1.label_id
    with pytest.raises(QueueError, match="different label"):
        q.submit(first.query_id, "left", "ann", "key-aaaa-1")
    with pytest.raises(QueueError, match="needs no more labels from ann"):
        q.submit(first.query_id, "right", "ann", "key-aaaa-2")  # one label per person
    with pytest.raises(QueueError, match="no query 999") as err:
        q.submit(999, "left", "ann", "key-aaaa-3")
    assert err.value.status == 404
    with pytest.raises(QueueError, match="choice must be one of"):
        q.submit(first.query_id, "maybe", "bob", "key-bbbb-0")
    # with two labels per query, bob gets the query ann answered first (it has the best score)
    assert q.next("bob").query_id == first.query_id
    q.submit(first.query_id, "skip", "bob", "key-bbbb-1")
    assert q.next("cat").query_id != first.query_id  # two labels: done
    rows = q.store.labels_after(0)
    assert [(r.choice, r.labeler, r.source) for r in rows] == [
        ("equal", "ann", "human"), ("skip", "bob", "human")
    ]  # fmt: skip
    # "equally good" trains as (0.5, 0.5); "can't tell" is stored and never trained on
    assert mu_for_choice("equal") == (0.5, 0.5) and mu_for_choice("skip") is None
    watch = q.store.conn.execute("SELECT watch_seconds FROM labels WHERE id = ?", (s1.label_id,))
    assert watch.fetchone()[0] == 3.5


def test_a_label_needs_the_labelers_lease_though_a_late_one_counts(tmp_path):
    """A query never leased to the labeler, or handed on to someone else, takes no label
    from them; one whose lease ran out while nobody else took it still does."""
    by_score = make_run(tmp_path, fake_segments(8), n_queries=4)
    q = _queue(tmp_path, lease_seconds=60)
    t = 1000.0
    with pytest.raises(QueueError, match=f"query {by_score[0]} is not leased to mal") as err:
        q.submit(by_score[0], "left", "mal", "key-mal-1", now=t)  # never asked for it
    assert err.value.status == 409
    a = q.next("ann", now=t)
    b = q.next("bob", now=t)
    assert q.submit(a.query_id, "left", "ann", "key-ann-1", now=t + 90).created  # late: kept
    assert q.next("cat", now=t + 70).query_id == b.query_id  # bob's lapsed lease: handed on
    with pytest.raises(QueueError, match="leased to another labeler"):
        q.submit(b.query_id, "left", "bob", "key-bob-1", now=t + 71)
    with pytest.raises(QueueError, match=f"query {b.query_id} is not leased to bob"):
        q.submit(b.query_id, "left", "bob", "key-bob-2", now=t + 140)  # cat's lapsed too
    with pytest.raises(QueueError, match="not leased to mal"):
        q.submit(by_score[2], "right", "mal", "key-mal-2", now=t + 140)
    assert q.submit(b.query_id, "right", "cat", "key-cat-1", now=t + 140).created
    rows = q.store.labels_after(0)
    assert [(r.query_id, r.labeler) for r in rows] == [(a.query_id, "ann"), (b.query_id, "cat")]


def test_synthetic_labels_close_queries_for_people(tmp_path):
    ids = make_run(tmp_path, fake_segments(6), n_queries=2)
    store = Store(tmp_path)
    store.add_label(ids[0], "left", "synthetic", "synthetic")  # --teacher mixed answered it
    q = _queue(tmp_path, labels_per_query=3)
    assert q.next("ann").query_id == ids[1]
    assert q.queue_depth() == 1


def test_gold_queries_are_mixed_in_and_scored(tmp_path):
    segs = fake_segments(12)
    make_run(tmp_path, segs, n_queries=30)
    q = _queue(tmp_path, gold_every=3)
    returns = {s.id: s.true_return for s in segs}
    served = []
    for i in range(12):
        lease = q.next("ann")
        served.append(lease.gold)
        a, b = returns[lease.segment_a], returns[lease.segment_b]
        truth = rational_choice(a, b)
        assert not lease.gold or truth != "equal"
        # ann agrees with the true reward on gold, except once
        wrong = {"left": "right", "right": "left"}[truth] if lease.gold else "left"
        choice = wrong if i == 3 else truth if lease.gold else "left"
        q.submit(lease.query_id, choice, "ann", f"key-gold-{i:03d}")
    assert served == [False, False, False, True] * 3
    agreement = gold_agreement(q.store)["ann"]
    assert (agreement.agree, agreement.total) == (2, 3)
    # gold queries do not count toward the trainer's label schedule
    assert q.store.count_selected_queries() == 30
    assert q.store.count_queries() == 33
    info = status(q.store, q, None)
    assert info["gold_queries"] == 3 and info["human_labels"] == 12
    (ann,) = info["labelers"]
    assert ann["labels"] == 12 and ann["gold_agreement"] == pytest.approx(2 / 3)
    # a second labeler gets the existing gold queries too (each person answers each once)
    for i in range(4):
        lease = q.next("bob")
        q.submit(lease.query_id, "left", "bob", f"key-bob-{i:03d}")
    assert lease.gold and q.store.count_queries() == 33


def test_export_jsonl_and_csv_carry_provenance(tmp_path):
    segs = fake_segments(4)
    ids = make_run(tmp_path, segs, n_queries=2, seed=7)
    q = _queue(tmp_path)
    assert q.next("ann").query_id == ids[0]
    q.submit(ids[0], "right", "ann", "key-export-1", watch_seconds=2.0)
    q.store.add_label(ids[1], "skip", "synthetic", "synthetic")
    out = io.StringIO()
    assert write_export(q.store, "jsonl", out) == 2
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert rows[0]["choice"] == "right" and rows[0]["mu"] == [0.0, 1.0]
    assert rows[1]["mu"] is None and rows[1]["source"] == "synthetic"
    a, b = q.store.query(ids[0])
    left = rows[0]["left"]
    assert left["segment"] == a and rows[0]["right"]["segment"] == b
    assert left["env_id"] == "HalfCheetah-v5" and left["seed"] == 7
    assert left["step"] == segs[a].step and left["episode_end"] - left["episode_start"] == 4
    out = io.StringIO()
    write_export(q.store, "csv", out)
    table = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(table) == 2 and table[0]["left_seed"] == "7" and table[0]["mu_right"] == "1.0"
    assert table[0]["watch_seconds"] == "2.0" and table[0]["labeler"] == "ann"
