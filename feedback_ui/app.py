"""The labeling web app (FastAPI): the page, its JSON API and the clips.

Routes:

- ``GET /``: the labeling page; ``GET /status``: the status page (static shells).
- ``GET /api/auth``: whether this server wants a token and whether the request carries it.
- ``POST /api/queries/next``: lease the labeler's next query; its two clip URLs.
- ``POST /api/labels``: store a label (idempotent on its key).
- ``GET /api/clips/{segment_id}``: a segment's clip, rendered first if needed.
- ``GET /api/status``: the status page's numbers.
- ``GET /openapi.json``: the API's OpenAPI spec. No ``/docs`` or ``/redoc`` pages: they load
  their scripts from a CDN, which an offline machine lacks and which would learn the
  labelers' addresses.

Every GET route answers HEAD too (see :mod:`feedback_ui.head`).

Request handlers are plain functions run in the server's thread pool; each thread has
its own store connection, and write transactions take one process-wide lock (see
:class:`feedback_ui.queue.LabelQueue`). The clip route alone is a coroutine: it waits for a
render on the event loop, holding none of the pool's threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from feedback_ui.auth import TokenGuard
from feedback_ui.clips import MEDIA_TYPE, ClipError, ClipOptions
from feedback_ui.head import HeadAsGet
from feedback_ui.limits import BodyLimit
from feedback_ui.queue import LabelQueue, Lease, QueueError, open_queries
from feedback_ui.render_worker import RenderWorker
from feedback_ui.status import ModelAgreementWorker, status
from rlkit.store import Store

STATIC = Path(__file__).parent / "static"
MAX_ID = 2**53  # ids beyond what JSON numbers hold exactly are not ids of ours
BUSY_TIMEOUT_MS = 5000  # see Service.queue
CLIP_WAIT_SECONDS = 30.0  # a clip not rendered by then: 503, try again


def _one_way_to_write(name: str) -> str:
    """A labeler's name in NFKC form, without invisible format characters (zero-width
    joiners and the like), so that names which look the same are the same labeler."""
    if any(unicodedata.category(c) == "Cf" for c in name):
        raise ValueError("the name holds an invisible character")
    return unicodedata.normalize("NFKC", name)


LabelerName = Annotated[
    str,
    AfterValidator(_one_way_to_write),
    Field(min_length=1, max_length=64, pattern=r"^[\w.@-]+( [\w.@-]+)*$",
          description="The labeler's name: letters, digits, . @ - _ and single spaces."),
]  # fmt: skip


class Strict(BaseModel):
    """A request body that rejects fields it does not know."""

    model_config = ConfigDict(extra="forbid")


class NextIn(Strict):
    """Ask for the labeler's next query."""

    labeler: LabelerName


class LabelIn(Strict):
    """A labeler's answer to a query."""

    query_id: int = Field(ge=1, le=MAX_ID, strict=True)  # not "1", 1.0 or true
    choice: Literal["left", "right", "equal", "skip"] = Field(
        description="left/right: that clip is better; equal: equally good; skip: can't tell."
    )
    labeler: LabelerName
    idempotency_key: str = Field(
        min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_-]+$",
        description="Unique per intended label; a repeated POST with it stores nothing new.",
    )  # fmt: skip
    watch_seconds: float | None = Field(
        default=None, ge=0, le=86400, allow_inf_nan=False,
        description="How long the clips were watched before answering.",
    )  # fmt: skip


class Clip(BaseModel):
    """One side of a query: a segment, its clip's URL, and whether the clip is rendered yet."""

    segment_id: int
    url: str
    ready: bool


class Query(BaseModel):
    """A query leased to the labeler: its two clips, reserved until lease_until (Unix seconds)."""

    id: int
    left: Clip
    right: Clip
    lease_until: float


class Progress(BaseModel):
    """The labeler's progress and the queue's length."""

    labels_done: int = Field(description="Labels this labeler has given.")
    queue_depth: int = Field(description="Queries still waiting for a person's label.")


class NextOut(BaseModel):
    """The next query (null when none is open) and the labeler's progress."""

    query: Query | None
    progress: Progress


class LabelOut(BaseModel):
    """The stored label and the labeler's progress."""

    label_id: int
    created: bool = Field(description="False when the idempotency key had stored it already.")
    progress: Progress


class AuthOut(BaseModel):
    """Whether this server wants a token, and whether the request carried the right one."""

    token_required: bool
    authorized: bool


class Error(BaseModel):
    """An error response."""

    detail: str | list[dict[str, Any]] = Field(
        description="What was wrong: a message, or FastAPI's list of validation errors."
    )


class Service:
    """Per-thread stores and queues over one run, and the background workers."""

    def __init__(
        self,
        run_dir: Path,
        lease_seconds: float,
        labels_per_query: int,
        gold_every: int,
        clip_options: ClipOptions,
        render_ahead: int,
        seed: int,
        model_every_seconds: float,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.kwargs = {"lease_seconds": lease_seconds, "labels_per_query": labels_per_query,
                       "gold_every": gold_every}  # fmt: skip
        self.rng = np.random.default_rng(seed)
        self.lock = threading.Lock()
        self.local = threading.local()
        self.clip_options = clip_options
        self.queue()  # create the index once, up front
        self.render = RenderWorker(self.run_dir, clip_options, self._upcoming, render_ahead)
        self.model = ModelAgreementWorker(self.run_dir, model_every_seconds)
        self.stop = threading.Event()
        self.checkpointer = threading.Thread(target=self._checkpoint, name="wal", daemon=True)

    def queue(self) -> LabelQueue:
        """This thread's label queue, over its own store connection (opened on first use)."""
        if not hasattr(self.local, "queue"):
            store = Store(self.run_dir)
            # WAL checkpoints happen in the background thread below, not in a request.
            store.conn.execute("PRAGMA wal_autocheckpoint=0")
            # A write that waits this long for another process's write answers 503 (try
            # again) rather than holding a labeler, and a server thread, for 30 s.
            store.conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self.local.queue = LabelQueue(store, rng=self.rng, write_lock=self.lock, **self.kwargs)
        return self.local.queue

    def _checkpoint(self, every_seconds: float = 1.0) -> None:
        """Copy the WAL into the database now and then (a passive checkpoint never blocks
        writers), so that no label submission pays for a checkpoint."""
        store = Store(self.run_dir)
        try:
            while not self.stop.wait(every_seconds):
                store.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            store.close()

    def _upcoming(self, store: Store, n: int) -> list[int]:
        pairs = open_queries(store, self.kwargs["labels_per_query"], n)
        return [s for _, a, b in pairs for s in (a, b)]

    def progress(self, labeler: str) -> Progress:
        """``labeler``'s label count and the number of queries still waiting for a label."""
        q = self.queue()
        return Progress(labels_done=q.labels_by(labeler), queue_depth=q.queue_depth())

    def clip_ref(self, segment_id: int) -> Clip:
        """Segment ``segment_id``'s clip URL and whether it is rendered already."""
        return Clip(segment_id=segment_id, url=f"/api/clips/{segment_id}",
                    ready=self.render.ready(segment_id))  # fmt: skip

    def query_out(self, lease: Lease) -> Query:
        """``lease`` as the API shows it: its query id, two clips and lease end."""
        return Query(id=lease.query_id, left=self.clip_ref(lease.segment_a),
                     right=self.clip_ref(lease.segment_b), lease_until=lease.lease_until)  # fmt: skip


def create_app(
    run_dir: str | Path,
    token: str | None = None,
    lease_seconds: float = 300.0,
    labels_per_query: int = 1,
    gold_every: int = 10,
    clip_options: ClipOptions | None = None,
    render_ahead: int = 8,
    seed: int = 0,
    model_every_seconds: float = 15.0,
) -> Any:
    """The ASGI app for ``run_dir``'s store (FastAPI wrapped in the token guard, the body
    limit and HEAD support).

    Args:
        run_dir: the run directory the trainer writes queries to.
        token: required on every API request when given (see :mod:`feedback_ui.auth`).
        lease_seconds: how long a shown query stays reserved for its labeler.
        labels_per_query: people's labels wanted per query.
        gold_every: one gold query after every this many ordinary ones (0: no gold).
        clip_options: how clips look.
        render_ahead: upcoming queries whose clips are kept rendered.
        seed: seeds the choice of gold pairs.
        model_every_seconds: how often agreement with the reward model is recomputed.
    """
    service = Service(
        Path(run_dir), lease_seconds, labels_per_query, gold_every,
        clip_options or ClipOptions(), render_ahead, seed, model_every_seconds,
    )  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.render.start()
        service.model.start()
        service.checkpointer.start()
        yield
        service.stop.set()
        service.render.stop()
        service.model.stop()

    app = FastAPI(
        title="rlkit labeling", version="1", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.service = service
    errors: dict[int | str, dict[str, Any]] = {
        404: {"model": Error},
        409: {"model": Error},
        422: {"model": Error},
    }

    @app.exception_handler(QueueError)
    async def queue_error(_request: Request, exc: QueueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # What was wrong, where; not the input itself, which may not even be JSON (NaN, a
        # lone surrogate) and may be large: FastAPI's own handler echoes it, and fails there.
        return JSONResponse({"detail": [_plain(e) for e in exc.errors()]}, status_code=422)

    @app.exception_handler(sqlite3.OperationalError)
    async def busy(_request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise exc
        return JSONResponse(
            {"detail": "the run's store is busy (another process is writing): try again"},
            status_code=503, headers={"Retry-After": "2"},
        )  # fmt: skip

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/status", include_in_schema=False)
    def status_page() -> FileResponse:
        return FileResponse(STATIC / "status.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/auth", response_model=AuthOut)
    def auth(request: Request) -> AuthOut:
        headers = {k.lower().encode(): v.encode() for k, v in request.headers.items()}
        return AuthOut(token_required=token is not None,
                       authorized=TokenGuard(None, token).authorized(headers))  # fmt: skip

    @app.post("/api/queries/next", response_model=NextOut, responses={422: {"model": Error}})
    def next_query(body: NextIn) -> NextOut:
        lease = service.queue().next(body.labeler)
        if lease is not None:
            service.render.wake()
        return NextOut(
            query=None if lease is None else service.query_out(lease),
            progress=service.progress(body.labeler),
        )

    @app.post("/api/labels", response_model=LabelOut, responses=errors)
    def submit(body: LabelIn) -> LabelOut:
        done = service.queue().submit(
            body.query_id, body.choice, body.labeler, body.idempotency_key, body.watch_seconds
        )
        return LabelOut(label_id=done.label_id, created=done.created,
                        progress=service.progress(body.labeler))  # fmt: skip

    @app.get(
        "/api/clips/{segment_id}",
        response_class=FileResponse,
        responses={200: {"content": {MEDIA_TYPE[service.clip_options.codec]: {}}},
                   404: {"model": Error}, 422: {"model": Error}, 503: {"model": Error}},
    )  # fmt: skip
    async def clip(segment_id: Annotated[int, PathParam(ge=0, le=MAX_ID)]) -> FileResponse:
        # Waits for the render on the event loop, not in the thread pool: many labelers
        # waiting on clips must not leave no thread for the API's other requests.
        if not await run_in_threadpool(lambda: service.queue().store.has_segment(segment_id)):
            raise HTTPException(404, f"there is no segment {segment_id}")
        service.render.request(segment_id)
        deadline = time.monotonic() + CLIP_WAIT_SECONDS
        try:
            while (path := service.render.outcome(segment_id)) is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the clip of segment {segment_id} is not ready yet")
                await asyncio.sleep(0.05)
        except ClipError as exc:
            raise HTTPException(422, str(exc)) from None
        except TimeoutError as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "2"}) from None
        return FileResponse(path, media_type=MEDIA_TYPE[service.clip_options.codec],
                            headers={"Cache-Control": "private, max-age=86400"})  # fmt: skip

    @app.get("/api/status")
    def get_status() -> dict[str, Any]:
        q = service.queue()
        out = status(q.store, q, service.model)
        out["clips_rendered"] = service.render.rendered
        n = service.render.rendered
        out["mean_clip_seconds"] = round(service.render.render_seconds / n, 3) if n else None
        return out

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return HeadAsGet(TokenGuard(BodyLimit(app), token))


def _plain(error: dict[str, Any]) -> dict[str, Any]:
    """A validation error as JSON can always carry it: its location, message and type."""

    def text(value: Any) -> str:
        return str(value)[:200].encode("utf-8", "replace").decode("utf-8")

    return {
        "loc": [v if isinstance(v, int) else text(v) for v in error.get("loc", ())],
        "msg": text(error.get("msg", "")),
        "type": text(error.get("type", "")),
    }
