"""The labeling page in a real Chromium (Debian's, driven by Playwright) against a real server."""

import os
import shutil
import time

import pytest
from test_ui_helpers import Server, make_run, mujoco_segments

from rlkit.store import Store

CHROMIUM = os.environ.get("RLKIT_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason=f"{CHROMIUM} is missing: apt-get install chromium (scripts/setup.sh --dev does)",
)


def _playing(page, video_id: str) -> bool:
    """The video's clock moves: currentTime advances over a short wait."""
    t0 = page.eval_on_selector(f"#{video_id}", "v => v.currentTime")
    page.wait_for_timeout(400)
    t1 = page.eval_on_selector(f"#{video_id}", "v => v.currentTime")
    return t1 != t0


@pytest.mark.slow
def test_page_plays_both_clips_and_keys_store_labels(tmp_path):
    from playwright.sync_api import sync_playwright

    make_run(tmp_path, mujoco_segments("HalfCheetah-v5", 8, 10), n_queries=4)
    srv = Server(tmp_path, "--gold-every", "0")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page()
            page.goto(srv.base + "/")
            page.fill("#name", "Ann Example")
            page.click("button[type=submit]")
            page.wait_for_function("document.body.dataset.queryId", timeout=60_000)
            first = int(page.evaluate("document.body.dataset.queryId"))
            page.wait_for_function(
                "['left', 'right'].every(id => document.getElementById(id).readyState >= 3)",
                timeout=60_000,
            )
            for video in ("left", "right"):
                state = page.eval_on_selector(
                    f"#{video}", "v => ({error: v.error && v.error.code, w: v.videoWidth,"
                    " muted: v.muted, loop: v.loop, autoplay: v.autoplay})",
                )  # fmt: skip
                assert state == {"error": None, "w": 360, "muted": True, "loop": True,
                                 "autoplay": True}  # fmt: skip
                assert _playing(page, video), f"the {video} clip does not play"
            assert "queries waiting" in page.inner_text("#progress")
            assert "can't tell" in page.inner_text(".help")
            page.wait_for_timeout(300)  # watch a little: the label records how long
            page.keyboard.press("ArrowLeft")
            page.wait_for_function(f"document.body.dataset.queryId !== '{first}'", timeout=60_000)
            second = int(page.evaluate("document.body.dataset.queryId"))
            page.wait_for_function(
                "document.getElementById('left').currentTime > 0", timeout=60_000
            )
            assert "1 label" in page.inner_text("#progress")
            page.keyboard.press("x")
            page.wait_for_function(f"document.body.dataset.queryId !== '{second}'", timeout=60_000)
            page.keyboard.press(" ")
            deadline = time.time() + 30
            while Store(tmp_path).count_labels() < 3 and time.time() < deadline:
                time.sleep(0.2)
            browser.close()
    finally:
        srv.stop()
    rows = Store(tmp_path).labels_after(0)
    assert [(r.query_id, r.choice) for r in rows[:2]] == [(first, "left"), (second, "skip")]
    assert rows[2].choice == "equal"
    assert {r.labeler for r in rows} == {"Ann Example"} and {r.source for r in rows} == {"human"}
    watched = (
        Store(tmp_path).conn.execute("SELECT watch_seconds FROM labels ORDER BY id").fetchone()
    )
    assert watched[0] >= 0.3


@pytest.mark.slow
def test_name_typed_while_the_page_checks_auth_is_kept(tmp_path):
    """A slow /api/auth must not wipe a name typed meanwhile (it once left the form empty,
    the browser refused to submit it, and the page never asked for a query)."""
    from playwright.sync_api import sync_playwright

    make_run(tmp_path, mujoco_segments("HalfCheetah-v5", 4, 10), n_queries=2)
    srv = Server(tmp_path, "--gold-every", "0")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page()

            def slow_auth(route) -> None:
                time.sleep(0.8)
                route.continue_()

            page.route("**/api/auth", slow_auth)
            page.goto(srv.base + "/")
            page.fill("#name", "Ann Example")
            page.click("button[type=submit]")
            page.wait_for_function("document.body.dataset.queryId", timeout=30_000)
            assert page.inner_text("#who") == "labeling as Ann Example"
            browser.close()
    finally:
        srv.stop()
