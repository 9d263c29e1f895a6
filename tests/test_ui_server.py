"""The labeling server as a real uvicorn process on a real store: API, auth, concurrency, kill -9."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid

import httpx
import pytest
from test_ui_helpers import Server, fake_segments, make_run

from rlkit.cli import main
from rlkit.store import Store

QUIET = ("--render-ahead", "0", "--gold-every", "0")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run = tmp_path_factory.mktemp("api")
    make_run(run, fake_segments(8), n_queries=6)
    srv = Server(run, *QUIET)
    yield srv
    srv.stop()


def test_api_validates_every_input(server):
    with server.client() as c:
        bad = [
            ("/api/queries/next", {}),
            ("/api/queries/next", {"labeler": ""}),
            ("/api/queries/next", {"labeler": "a" * 65}),
            ("/api/queries/next", {"labeler": "ann", "extra": 1}),
            ("/api/labels", {"query_id": 1, "choice": "maybe", "labeler": "ann",
                             "idempotency_key": "k" * 10}),
            ("/api/labels", {"query_id": 1, "choice": "left", "labeler": "ann",
                             "idempotency_key": "short"}),
            ("/api/labels", {"query_id": -3, "choice": "left", "labeler": "ann",
                             "idempotency_key": "k" * 10}),
            ("/api/labels", {"query_id": 1, "choice": "left", "labeler": "ann",
                             "idempotency_key": "k" * 10, "watch_seconds": -1}),
        ]  # fmt: skip
        for path, body in bad:
            r = c.post(path, json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.json()["detail"]
        r = c.post(
            "/api/labels", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 422
        r = c.post("/api/labels", json={"query_id": 424242, "choice": "left", "labeler": "ann",
                                        "idempotency_key": "k" * 10})  # fmt: skip
        assert r.status_code == 404 and r.json()["detail"] == "there is no query 424242"
        assert c.get("/api/clips/99999").status_code == 404
        assert c.get("/api/clips/abc").status_code == 422
        for probe in ("/api/clips/..%2F..%2Fstore.sqlite", "/api/clips/../config.json",
                      "/static/../store.sqlite", "/static/..%2F..%2Fapp.py"):  # fmt: skip
            r = c.get(probe)
            assert r.status_code in (404, 422) and b"CREATE TABLE" not in r.content, probe
        # no token on loopback, but only loopback Host names are answered (DNS rebinding)
        assert c.get("/api/status", headers={"host": "evil.example"}).status_code == 403
        page = c.get("/")
        assert page.status_code == 200
        for text in (
            "Left is better",
            "Right is better",
            "Equally good",
            "Can't tell",
            "<kbd>x</kbd>",
        ):
            assert text in page.text


def test_hostile_bodies_get_4xx_never_a_500(server):
    """What FastAPI's own 422 cannot answer (it echoes the input back: NaN and a lone
    surrogate are not JSON), look-alike names, loose types and oversized or unsized bodies."""
    label = {"query_id": 1, "choice": "left", "labeler": "ann", "idempotency_key": "k" * 10}
    with server.client() as c:
        raw = [
            ("/api/labels", b'{"query_id": 1, "choice": "left", "labeler": "ann",'
                            b' "idempotency_key": "kkkkkkkkkk", "watch_seconds": NaN}'),
            ("/api/labels", b'{"query_id": NaN, "choice": "left", "labeler": "ann",'
                            b' "idempotency_key": "kkkkkkkkkk"}'),
            ("/api/queries/next", rb'{"labeler": "\ud800"}'),  # a lone surrogate, escaped
            ("/api/queries/next", rb'{"labeler": "ann\u200d"}'),  # an invisible joiner
        ]  # fmt: skip
        for path, body in raw:
            r = c.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 422, (body, r.status_code, r.text)
            assert r.json()["detail"] and len(r.content) < 2000
        for loose in ("1", True, 1.0):  # a query id is an integer, not something like one
            r = c.post("/api/labels", json={**label, "query_id": loose})
            assert r.status_code == 422, loose
        big = {"labeler": "a" * 100_000}
        r = c.post("/api/queries/next", json=big)
        assert r.status_code == 413 and len(r.content) < 200
        chunks = iter([b'{"labeler": ', b'"ann"}'])
        r = c.post(
            "/api/queries/next", content=chunks, headers={"content-type": "application/json"}
        )
        assert r.status_code == 411
        # a name written with fullwidth letters is the same labeler as the plain one
        plain = c.post("/api/queries/next", json={"labeler": "ANN"}).json()
        wide = c.post("/api/queries/next", json={"labeler": "\uff21\uff2e\uff2e"}).json()
        assert wide["query"]["id"] == plain["query"]["id"]  # the same lease, not a new one


def test_a_store_another_process_is_writing_still_answers_reads_and_says_busy(server):
    """Reads do not wait on another process's write (WAL; a server thread opens the store
    with a read); a write that waits 5 s for it gets 503 and Retry-After, not a 500."""
    import sqlite3
    import time

    holder = sqlite3.connect(server.run_dir / "store.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with server.client() as c:
            start = time.monotonic()
            assert c.get("/api/status").status_code == 200
            assert time.monotonic() - start < 3
            r = c.post("/api/queries/next", json={"labeler": "while-locked"})
            assert r.status_code == 503 and r.headers["retry-after"] == "2"
            assert "busy" in r.json()["detail"] and time.monotonic() - start >= 4.5
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with server.client() as c:
        assert c.post("/api/queries/next", json={"labeler": "while-locked"}).status_code == 200


def test_next_submit_round_trip_is_idempotent(server):
    with server.client() as c:
        nxt = c.post("/api/queries/next", json={"labeler": "round trip"}).json()
        qid = nxt["query"]["id"]
        assert nxt["progress"] == {"labels_done": 0, "queue_depth": 6}
        body = {"query_id": qid, "choice": "equal", "labeler": "round trip",
                "idempotency_key": uuid.uuid4().hex, "watch_seconds": 4.2}  # fmt: skip
        first = c.post("/api/labels", json=body).json()
        again = c.post("/api/labels", json=body).json()
        assert first["created"] and not again["created"]
        assert first["label_id"] == again["label_id"]
        assert first["progress"] == {"labels_done": 1, "queue_depth": 5}
        other = c.post("/api/labels", json={**body, "choice": "left"})
        assert other.status_code == 409
        status = c.get("/api/status").json()
        assert status["queue_depth"] == 5
        assert status["labelers"][0]["name"] == "round trip"
        assert status["labelers"][0]["mean_watch_seconds"] == 4.2
    rows = [r for r in Store(server.run_dir).labels_after(0) if r.labeler == "round trip"]
    assert [(r.query_id, r.choice, r.source) for r in rows] == [(qid, "equal", "human")]


def test_head_answers_wherever_get_does_with_the_same_headers(server):
    """Uptime monitors and ``curl -I`` ask with HEAD: the GET's status and headers, no body."""
    paths = ["/", "/status", "/static/app.js", "/api/auth", "/api/status", "/api/clips/0",
             "/api/clips/99999", "/nowhere", "/api/labels"]  # fmt: skip
    with server.client() as c:
        for path in paths:
            get, head = c.get(path), c.head(path)
            assert head.status_code == get.status_code, (path, head.status_code)
            assert head.content == b"", path
            assert head.headers["content-type"] == get.headers["content-type"], path
        for path in ("/", "/static/app.js"):  # a file: every header the same but the date
            get, head = c.get(path), c.head(path)
            assert {**head.headers, "date": ""} == {**get.headers, "date": ""}, path
        assert c.head("/api/labels").status_code == 405  # POST only, as for GET


def test_a_label_for_a_query_not_leased_to_the_labeler_is_refused(server):
    with server.client() as c:
        held = c.post("/api/queries/next", json={"labeler": "holder"}).json()["query"]["id"]
        store = Store(server.run_dir)
        (free,) = store.conn.execute(
            "SELECT id FROM queries WHERE lease_owner IS NULL AND id NOT IN"
            " (SELECT query_id FROM labels) LIMIT 1"
        ).fetchone()  # open, and leased to nobody
        for qid, says in [(free, f"query {free} is not leased to mal"),
                          (held, "leased to another labeler")]:  # fmt: skip
            r = c.post("/api/labels", json={"query_id": qid, "choice": "left", "labeler": "mal",
                                            "idempotency_key": uuid.uuid4().hex})  # fmt: skip
            assert r.status_code == 409 and says in r.json()["detail"], r.text
    assert not [r for r in store.labels_after(0) if r.labeler == "mal"]


def test_no_docs_pages_that_load_scripts_from_a_cdn(server):
    with server.client() as c:
        assert c.get("/docs").status_code == 404 and c.get("/redoc").status_code == 404
        assert c.get("/docs/oauth2-redirect").status_code == 404
        assert "/api/labels" in c.get("/openapi.json").json()["paths"]  # the spec stays


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_an_ipv6_loopback_in_brackets_as_in_a_url_is_served_without_a_token(tmp_path):
    make_run(tmp_path, fake_segments(4), n_queries=2)
    srv = Server(tmp_path, "--host", "[::1]", *QUIET)
    try:
        assert srv.base.startswith("http://[::1]:") and srv.token is None
        with httpx.Client(base_url=srv.base, timeout=30) as c:
            assert c.get("/api/status").status_code == 200
    finally:
        srv.stop()


def test_non_loopback_bind_needs_the_printed_token(tmp_path):
    make_run(tmp_path, fake_segments(4), n_queries=2)
    srv = Server(tmp_path, "--host", "0.0.0.0", *QUIET)
    try:
        assert srv.token and len(srv.token) >= 32  # generated and printed
        base = srv.base.replace("0.0.0.0", "127.0.0.1")
        with httpx.Client(base_url=base, timeout=30) as anon:
            for method, path in [("POST", "/api/queries/next"), ("GET", "/api/status"),
                                 ("GET", "/api/clips/0"), ("GET", "/openapi.json"),
                                 ("POST", "/api/labels")]:  # fmt: skip
                r = anon.request(method, path, json={"labeler": "ann"})
                assert r.status_code == 401, path
                assert "token" in r.json()["detail"]
            r = anon.get("/api/status", headers={"authorization": "Bearer wrong-token"})
            assert r.status_code == 401
            assert anon.get("/api/auth").json() == {"token_required": True, "authorized": False}
            assert anon.get("/").status_code == 200  # the page shell asks for the token
            ok = anon.get("/api/status", headers={"authorization": f"Bearer {srv.token}"})
            assert ok.status_code == 200
        with httpx.Client(base_url=base, timeout=30, cookies={"rlkit_token": srv.token}) as c:
            assert c.get("/api/status").status_code == 200
    finally:
        srv.stop()


def test_cli_refuses_bad_input_in_one_line(tmp_path, capsys):
    assert main(["label", "serve", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "holds no run" in err and len(err.splitlines()) == 1
    other = tmp_path / "vpn"  # another command's run: refused, and no store made in it
    other.mkdir()
    (other / "config.json").write_text('{"env": "rlkit/Collect-v0", "algo": "vpn", "plan": "4"}')
    for command in ("serve", "export"):
        assert main(["label", command, str(other)]) == 2
        assert "is not a preference run" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["config.json"]
    make_run(tmp_path, fake_segments(4), n_queries=1)
    assert main(["label", "serve", str(tmp_path), "--token", "short"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err
    # a token travels in a URL and a cookie: characters those would encode are refused
    assert main(["label", "serve", str(tmp_path), "--token", "pass+word/x=1"]) == 2
    assert capsys.readouterr().err == "error: --token may hold only letters, digits and . _ ~ -\n"
    assert main(["label", "serve", str(tmp_path), "--clip.width", "3"]) == 2
    assert "clip size" in capsys.readouterr().err
    assert main(["label", "serve", str(tmp_path), "--port", "0", "--seed", "-1"]) == 2
    assert "--seed has an invalid value -1" in capsys.readouterr().err
    for flags, says in [(["--lease-seconds", "nan"], "--lease-seconds must be a finite number"),
                        (["--clip.max-fps", "nan"], "--clip.max-fps must be a finite number"),
                        (["--host", ""], "--host has an invalid value ''")]:  # fmt: skip
        assert main(["label", "serve", str(tmp_path), *flags]) == 2
        assert says in capsys.readouterr().err
    out = tmp_path / "labels.jsonl"
    Store(tmp_path).add_label(1, "left", "ann", "human")
    assert main(["label", "export", str(tmp_path), "--output", str(out)]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["labeler"] == "ann" and row["left"]["env_id"] == "HalfCheetah-v5"


def test_a_run_damaged_by_hand_is_named_in_one_line(tmp_path, capsys):
    """A store whose labelled query names a segment row deleted by hand (SQLite reads it
    fine) fails the export in one line, exit 2, writing nothing; a file where the server keeps
    segments or clips is named as such (it was "error: File exists", exit 1)."""
    import shutil
    import sqlite3

    make_run(tmp_path, fake_segments(4), n_queries=1)
    Store(tmp_path).add_label(1, "left", "ann", "human")
    with sqlite3.connect(tmp_path / "store.sqlite") as conn:  # foreign keys are off here
        conn.execute("DELETE FROM segments")
    out = tmp_path / "labels.jsonl"
    assert main(["label", "export", str(tmp_path), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "has a query of segment" in err and "no row for that segment: damaged" in err
    assert not out.exists()
    for name in ("segments", "clips"):
        shutil.rmtree(tmp_path / name, ignore_errors=True)
        (tmp_path / name).write_text("not a folder")
        assert main(["label", "serve", str(tmp_path), "--port", "0"]) == 2
        assert capsys.readouterr().err == (
            f"error: {tmp_path / name} is not a directory: the run is damaged; left as it is\n"
        )
        assert (tmp_path / name).read_text() == "not a folder"
        (tmp_path / name).unlink()
        (tmp_path / name).mkdir()


@pytest.mark.slow
def test_20_clients_50_labels_each_exactly_1000_stored(tmp_path):
    make_run(tmp_path, fake_segments(60), n_queries=1000)
    srv = Server(tmp_path, *QUIET)
    leased: list[list[int]] = [[] for _ in range(20)]
    errors: list[str] = []

    def labeler(i: int) -> None:
        name = f"labeler{i:02d}"
        try:
            with srv.client() as c:
                for _ in range(50):
                    q = c.post("/api/queries/next", json={"labeler": name}).json()["query"]
                    leased[i].append(q["id"])
                    body = {"query_id": q["id"], "choice": "left", "labeler": name,
                            "idempotency_key": uuid.uuid4().hex}  # fmt: skip
                    r = c.post("/api/labels", json=body)
                    r2 = c.post("/api/labels", json=body)  # a retried POST stores nothing
                    if r.status_code != 200 or r2.json()["created"]:
                        errors.append(f"{name}: {r.status_code} {r.text}")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{name}: {exc!r}")

    threads = [threading.Thread(target=labeler, args=(i,)) for i in range(20)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
    finally:
        srv.stop()
    assert not errors, errors[:3]
    store = Store(tmp_path)
    rows = store.labels_after(0)
    assert len(rows) == 1000 == store.count_labels()
    assert len({r.query_id for r in rows}) == 1000  # no query labeled twice
    every_lease = [q for ids in leased for q in ids]
    assert len(every_lease) == len(set(every_lease)) == 1000  # no query handed to two people
    for i, ids in enumerate(leased):  # each person labeled exactly what they were leased
        mine = [r.query_id for r in rows if r.labeler == f"labeler{i:02d}"]
        assert sorted(mine) == sorted(ids)


SUBMITTER = """
import sys, uuid, httpx
base = sys.argv[1]
with httpx.Client(base_url=base, timeout=30) as c:
    while True:
        q = c.post("/api/queries/next", json={"labeler": "crash"}).json()["query"]
        r = c.post("/api/labels", json={"query_id": q["id"], "choice": "right",
                   "labeler": "crash", "idempotency_key": uuid.uuid4().hex})
        if r.status_code == 200:
            print(r.json()["label_id"], flush=True)  # acknowledged
"""


@pytest.mark.slow
def test_kill_9_server_keeps_every_acknowledged_label(tmp_path):
    make_run(tmp_path, fake_segments(20), n_queries=400)
    srv = Server(tmp_path, *QUIET)
    client = subprocess.Popen([sys.executable, "-c", SUBMITTER, srv.base],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    acked = []
    try:
        while len(acked) < 60:
            line = client.stdout.readline()
            assert line, "submitter died"
            acked.append(int(line))
        os.kill(srv.proc.pid, signal.SIGKILL)  # mid-stream: requests are in flight
        srv.proc.wait()
    finally:
        client.kill()
        client.wait()
        srv.kill()
    restarted = Server(tmp_path, *QUIET)
    try:
        with restarted.client() as c:
            assert c.get("/api/status").json()["human_labels"] >= len(acked)
    finally:
        restarted.stop()
    store = Store(tmp_path)
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {r.id for r in store.labels_after(0)}
    assert set(acked) <= stored


def test_labelers_waiting_on_clips_leave_the_api_free(tmp_path):
    """Clip requests wait for their renders without holding the server's thread pool (40
    threads): with 80 of them waiting, the rest of the API still answers at once."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from test_ui_helpers import mujoco_segments

    make_run(tmp_path, mujoco_segments("HalfCheetah-v5", 24, 45), n_queries=4)
    srv = Server(tmp_path, *QUIET)
    try:
        with srv.client() as c, ThreadPoolExecutor(80) as pool:
            waits = [pool.submit(c.get, f"/api/clips/{i % 24}") for i in range(80)]
            time.sleep(1.0)  # every wait has reached the server
            start = time.monotonic()
            assert c.get("/api/status").status_code == 200
            assert time.monotonic() - start < 1.0
            assert not all(w.done() for w in waits)  # the renders were still going on
            answered = [w.result().status_code for w in waits if w.done()]
            assert set(answered) <= {200}
            srv.kill()  # the waits still open end with it (a graceful stop would wait for them)
    finally:
        srv.kill()
