"""Clips rendered ahead of the labeler, in one background thread, cached in ``run_dir/clips``.

The worker keeps the clips of the next few open queries ready, so the next pair appears
at once; a request for a clip that is not ready yet jumps the line and waits for it.
Rendering happens in this one thread only, because a MuJoCo EGL context belongs to the
thread that created it. Clip paths are built from integer segment ids inside
``run_dir/clips``, so no request can name a file outside the run directory.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path

from feedback_ui.clips import ClipError, ClipOptions, ClipRenderer
from rlkit.store import Store


class RenderWorker:
    """Renders clips for segment ids: urgent requests first, then the upcoming queries.

    Args:
        run_dir: the run directory (clips go to ``run_dir/clips``).
        options: how clips look.
        upcoming: returns the segment ids to have ready, best first (called from the
            worker thread with its own store).
        ahead: how many upcoming segment ids to keep rendered; 0 renders on request only.
        poll_seconds: how often the upcoming queries are looked up when idle.
    """

    def __init__(
        self,
        run_dir: Path,
        options: ClipOptions,
        upcoming: Callable[[Store, int], list[int]],
        ahead: int = 8,
        poll_seconds: float = 0.5,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.clip_dir = (self.run_dir / "clips").resolve()
        self.clip_dir.mkdir(parents=True, exist_ok=True)
        self.options = options
        self.upcoming = upcoming
        self.ahead = ahead
        self.poll_seconds = poll_seconds
        self._heap: list[tuple[int, int, int]] = []  # (priority, order, segment id)
        self._order = itertools.count()
        self._cv = threading.Condition()
        self._failed: dict[int, str] = {}
        self._stop = False
        self.rendered = 0
        self.render_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="clip-render", daemon=True)

    def start(self) -> RenderWorker:
        """Start the render thread; returns self."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Tell the render thread to stop and wait up to ``timeout`` seconds for it."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- paths ------------------------------------------------------------------------
    def path(self, segment_id: int) -> Path:
        """Where a segment's clip lives; always inside ``run_dir/clips``."""
        path = (self.clip_dir / f"seg_{int(segment_id):09d}{self.options.suffix}").resolve()
        if not path.is_relative_to(self.clip_dir):  # unreachable with an int id; defence in depth
            raise ValueError("clip path outside the run directory")
        return path

    def ready(self, segment_id: int) -> bool:
        """Whether the segment's clip file exists."""
        return self.path(segment_id).is_file()

    # -- requests -----------------------------------------------------------------------
    def wake(self) -> None:
        """Look at the upcoming queries now (after a lease, say) instead of at the next poll."""
        with self._cv:
            self._cv.notify_all()

    def request(self, segment_id: int) -> None:
        """Render this segment's clip next, ahead of everything else (a no-op if it exists)."""
        if self.ready(segment_id):
            return
        with self._cv:
            self._failed.pop(segment_id, None)
            heapq.heappush(self._heap, (0, next(self._order), segment_id))
            self._cv.notify_all()

    def outcome(self, segment_id: int) -> Path | None:
        """A requested clip's path once it is rendered, None while it is not (yet).

        Raises ClipError if the segment cannot be rendered, TimeoutError if the render
        thread is gone (it never will be)."""
        path = self.path(segment_id)
        if path.is_file():
            return path
        with self._cv:
            if segment_id in self._failed:
                raise ClipError(self._failed[segment_id])
        if not self._thread.is_alive():
            raise TimeoutError(f"the clip of segment {segment_id} is not ready yet")
        return None

    def clip(self, segment_id: int, timeout: float = 30.0) -> Path:
        """The clip's path, rendering it first (ahead of everything else) if needed; the
        server waits with :meth:`request` and :meth:`outcome` instead, holding no thread.

        Raises ClipError if the segment cannot be rendered, TimeoutError if it takes longer.
        """
        deadline = time.monotonic() + timeout
        self.request(segment_id)
        while (path := self.outcome(segment_id)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the clip of segment {segment_id} is not ready yet")
            with self._cv:
                self._cv.wait(min(left, 0.25))
        return path

    # -- the thread -----------------------------------------------------------------------
    def _run(self) -> None:
        store = Store(self.run_dir)
        renderer = ClipRenderer(self.options)
        last_poll = 0.0
        try:
            while True:
                with self._cv:
                    if self._stop:
                        return
                    if not self._heap and time.monotonic() - last_poll < self.poll_seconds:
                        self._cv.wait(self.poll_seconds)
                    if self._stop:
                        return
                    item = heapq.heappop(self._heap) if self._heap else None
                if item is None:
                    last_poll = time.monotonic()
                    if self.ahead > 0:
                        for sid in self.upcoming(store, self.ahead):
                            if not self.ready(sid) and sid not in self._failed:
                                with self._cv:
                                    heapq.heappush(self._heap, (1, next(self._order), sid))
                    continue
                self._render(store, renderer, item[2])
        finally:
            renderer.close()
            store.close()

    def _render(self, store: Store, renderer: ClipRenderer, segment_id: int) -> None:
        path = self.path(segment_id)
        if path.is_file():
            return
        t0 = time.perf_counter()
        try:
            renderer.render(store.load_segment(segment_id), path)
        except (ClipError, KeyError, OSError, ValueError) as exc:
            message = str(exc) if isinstance(exc, ClipError) else f"segment {segment_id}: {exc}"
            with self._cv:
                self._failed[segment_id] = message
                self._cv.notify_all()
            return
        with self._cv:
            self.rendered += 1
            self.render_seconds += time.perf_counter() - t0
            self._cv.notify_all()
