import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rlkit.core import Segment
from rlkit.store import Store


def _seg(i: int) -> Segment:
    return Segment(obs=np.full((3, 2), i, np.float32), acts=np.zeros((3, 1)), true_rews=np.arange(3.0),
                   render_state=np.ones((3, 5)), id=i, env_id="Hopper-v5", step=100 + i)  # fmt: skip


def test_segments_queries_labels_round_trip(tmp_path):
    store = Store(tmp_path)
    for i in range(3):
        store.add_segment(_seg(i))
    other = Segment(
        obs=np.full((3, 2), 7, np.float32), acts=np.ones((3, 1)), true_rews=np.ones(3), id=0
    )
    store.add_segment(other)  # idempotent: a stored segment is never overwritten
    np.testing.assert_array_equal(store.load_segment(0).obs, _seg(0).obs)
    loaded = store.load_segment(1)
    np.testing.assert_array_equal(loaded.obs, _seg(1).obs)
    np.testing.assert_array_equal(loaded.render_state, np.ones((3, 5)))
    assert loaded.step == 101 and loaded.env_id == "Hopper-v5"
    q1, q2 = store.add_queries([(0, 1, 0.9), (1, 2, 0.1)])
    assert store.unanswered_queries() == [(q1, 0, 1), (q2, 1, 2)]
    first = store.add_label(q1, "left", "ann", "human", idempotency_key="k1")
    again = store.add_label(q1, "left", "ann", "human", idempotency_key="k1")
    assert first == again and store.count_labels() == 1
    store.add_label(q2, "skip", "bob", "human")
    rows = store.labels_after(0)
    assert [(r.segment_a, r.segment_b, r.choice) for r in rows] == [(0, 1, "left"), (1, 2, "skip")]
    assert store.labels_after(rows[0].id)[0].choice == "skip"
    with pytest.raises(ValueError, match="choice must be one of"):
        store.add_label(q1, "maybe", "ann", "human")
    with pytest.raises(sqlite3.IntegrityError):
        store.add_label(9999, "left", "ann", "human")  # unknown query: foreign key
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from rlkit.core import Segment
    from rlkit.store import Store
    store = Store(sys.argv[1])
    for i in range(2):
        store.add_segment(Segment(obs=np.zeros((2, 1)), acts=np.zeros((2, 1)), true_rews=np.zeros(2), id=i))
    (q,) = store.add_queries([(0, 1, 1.0)], labels_wanted=10**9)
    i = 0
    while True:
        label_id = store.add_label(q, "left", "writer", "synthetic", idempotency_key=f"k{i}")
        print(label_id, flush=True)  # acknowledged only after the commit returned
        i += 1
    """
)


def test_store_survives_kill_9_mid_write(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    acked = []
    try:
        while len(acked) < 200:
            line = proc.stdout.readline()
            assert line, "writer died"
            acked.append(int(line))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    store = Store(tmp_path)
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {r.id for r in store.labels_after(0)}
    assert set(acked) <= stored
    assert store.count_labels() >= len(acked)


SEGMENT_WRITER = textwrap.dedent(
    """
    import os, signal, sys, numpy as np
    from rlkit.core import Segment
    from rlkit.store import Store
    store = Store(sys.argv[1])
    doomed, when = store.segment_path(3), sys.argv[2]
    real = os.replace

    def replace(src, dst):  # the kill lands just before or just after segment 3's file is in place
        if dst == doomed and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst)
        if dst == doomed and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    for i in range(5):
        obs = np.full((30, 10), i, np.float32)
        store.add_segment(Segment(obs=obs, acts=obs[:, :1], true_rews=np.full(30, float(i)), id=i))
    """
)


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_segment_killed_mid_write_is_not_stored_and_can_be_added_again(tmp_path, when):
    """Arrays go to disk atomically, before their row: a kill -9 while segment 3 is written
    (just before its file is renamed into place, or just after) leaves no row for it, the
    earlier ones whole, and segment 3 can be stored again."""
    args = [sys.executable, "-c", SEGMENT_WRITER, str(tmp_path), when]
    assert subprocess.run(args, check=False).returncode == -signal.SIGKILL
    store = Store(tmp_path)
    assert [r[0] for r in store.conn.execute("SELECT id FROM segments ORDER BY id")] == [0, 1, 2]
    assert not store.has_segment(3)
    for i in range(3):
        assert (store.load_segment(i).obs == i).all()
    obs = np.full((30, 10), 3, np.float32)
    store.add_segment(Segment(obs=obs, acts=obs[:, :1], true_rews=np.full(30, 3.0), id=3))
    assert (store.load_segment(3).obs == 3).all()
