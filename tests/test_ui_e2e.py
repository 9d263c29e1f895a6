"""End to end: `rlkit prefs train --teacher human` and `rlkit label serve` as separate processes,
and a scripted labeler answering over HTTP from the true reward; the learned reward must
rank held-out pairs like the true reward."""

import os
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest
from test_ui_helpers import Server

from feedback_ui.agreement import ModelJudge, held_out_agreement
from rlkit.core.checkpoint import CheckpointManager
from rlkit.store import Store

TRAIN = [
    "--env", "Hopper-v5", "--steps", "12288", "--labels", "200", "--teacher", "human",
    "--n-envs", "2", "--round-steps", "1024", "--policy.n-steps", "256",
    "--segment-seconds", "0.2", "--eval-episodes", "0", "--pool-size", "200",
    "--checkpoint-every", "1024", "--seed", "0", "--trainer.l2-factor", "1.0", "--trainer.min-steps", "200",
]  # fmt: skip


def scripted_labeler(srv: Server, run, stop: threading.Event, answered: list[int]) -> None:
    """Leases queries over HTTP and answers from the segments' true returns (the test's oracle)."""
    store = Store(run)
    with srv.client() as c:
        while not stop.is_set():
            q = c.post("/api/queries/next", json={"labeler": "script"}).json()["query"]
            if q is None:
                time.sleep(0.1)
                continue
            ra = store.load_segment(q["left"]["segment_id"]).true_return
            rb = store.load_segment(q["right"]["segment_id"]).true_return
            choice = "equal" if ra == rb else "left" if ra > rb else "right"
            r = c.post("/api/labels", json={"query_id": q["id"], "choice": choice,
                                            "labeler": "script", "idempotency_key": uuid.uuid4().hex,
                                            "watch_seconds": 0.0})  # fmt: skip
            assert r.status_code == 200, r.text
            answered.append(q["id"])


@pytest.mark.slow
def test_human_teacher_over_http_learns_the_true_reward(tmp_path):
    run = tmp_path / "hopper"
    trainer = subprocess.Popen(
        [sys.executable, "-m", "rlkit.cli", "prefs", "train", *TRAIN, "--run-dir", str(run)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    deadline = time.time() + 120
    while not (run / "store.sqlite").is_file() and time.time() < deadline:
        if trainer.poll() is not None:  # it failed before creating its store: say why, now
            pytest.fail(f"rlkit prefs train exited {trainer.returncode}: {trainer.stderr.read()}")
        time.sleep(0.2)
    srv = Server(run, "--render-ahead", "1", "--clip.width", "64", "--clip.height", "64")
    stop, answered = threading.Event(), []
    labeler = threading.Thread(target=scripted_labeler, args=(srv, run, stop, answered))
    labeler.start()
    try:
        _, err = trainer.communicate(timeout=400)
        assert trainer.returncode == 0, err[-3000:]
    finally:
        stop.set()
        labeler.join(timeout=30)
        trainer.kill()
        srv.stop()
    store = Store(run)
    rows = store.labels_after(0)
    assert len(answered) >= 30 and {r.source for r in rows} == {"human"}
    _, state = CheckpointManager(run).load_latest()
    assert state["last_label_id"] >= 30  # the trainer used people's labels as they came
    # held-out pairs: stored segments never compared with each other in a query
    compared = {
        frozenset(p) for p in store.conn.execute("SELECT segment_a, segment_b FROM queries")
    }
    ids = np.array([r[0] for r in store.conn.execute("SELECT id FROM segments")])
    rng = np.random.default_rng(0)
    pairs = [p for p in rng.choice(ids, size=(400, 2)) if p[0] != p[1]
             and frozenset(map(int, p)) not in compared][:200]  # fmt: skip
    judge = ModelJudge(run)
    assert judge.refresh()
    agreement = held_out_agreement(judge, store, np.array(pairs))
    print(
        f"held-out agreement with the true reward: {agreement:.3f} on {len(pairs)} pairs, {len(rows)} labels"
    )
    # Labels arrive over HTTP at times the run does not control, so the model varies from
    # run to run: 0.785-0.87 measured; chance is 0.5.
    assert agreement >= 0.75
