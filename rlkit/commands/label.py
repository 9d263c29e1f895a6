"""``rlkit label serve`` (the clip-labeling web UI) and ``rlkit label export``."""

from __future__ import annotations

import dataclasses
import errno
import re
import socket
import sys
from pathlib import Path
from typing import Literal

import tyro

from feedback_ui.clips import ClipOptions
from rlkit.cli import run_tyro
from rlkit.core.errors import UserError, check_settings, check_types
from rlkit.core.rundir import atomic_output, check_output_file, check_run_folders


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """Serve the clip-labeling web UI on a run's store while `rlkit prefs train` runs (or not)."""

    run_dir: tyro.conf.Positional[Path]
    """The run directory (the one given to `rlkit prefs train --run-dir`)."""
    host: str = "127.0.0.1"
    """Address to bind. Anything but loopback requires a token."""
    port: int = 8000
    """Port to listen on (0: any free port; the URL printed says which)."""
    token: str | None = None
    """Shared secret labelers need; generated and printed when binding a non-loopback address."""
    lease_seconds: float = 300.0
    """How long a query shown to a labeler stays reserved for them before it returns to the queue."""
    labels_per_query: int = 1
    """People's labels wanted per query (each from a different labeler)."""
    gold_every: int = 10
    """Mix one gold query (known answer from the true reward) in after this many; 0: none."""
    render_ahead: int = 8
    """Upcoming queries whose clips are rendered before anyone asks for them."""
    seed: int = 0
    """Seeds the choice of gold pairs."""
    clip: ClipOptions = dataclasses.field(default_factory=ClipOptions)
    """How clips are rendered and encoded."""


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Export a run's labels with each clip's provenance (env, seed, step, segment range)."""

    run_dir: tyro.conf.Positional[Path]
    """The run directory."""
    format: Literal["jsonl", "csv"] = "jsonl"
    """jsonl (one nested object per label) or csv (flat columns, left_* and right_*)."""
    output: Path | None = None
    """File to write; default: standard output."""
    force: bool = False
    """Replace ``--output`` if it exists (it is replaced only once the export is complete)."""


def _check_run_dir(run_dir: Path) -> None:
    if not (run_dir / "store.sqlite").is_file() and not (run_dir / "config.json").is_file():
        raise UserError(
            f"{run_dir} holds no run (no store.sqlite or config.json); pass the --run-dir of"
            " `rlkit prefs train`"
        )
    if not (run_dir / "store.sqlite").is_file():  # a run that has stored no label yet
        from rlkit.core.rundir import load_config

        if "teacher" not in load_config(run_dir):
            raise UserError(
                f"{run_dir} holds a run that is not a preference run (its config.json has no"
                " teacher); pass the --run-dir of `rlkit prefs train`"
            )
    from rlkit.store import check_store

    check_store(run_dir, required=False)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(
                f"port {port} on {host} is in use; choose another with --port"
            ) from None
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    # Accepted connections inherit this on Linux: without it a keep-alive response whose
    # headers and body leave in two writes waits ~40 ms for the client's delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(argv: list[str]) -> int:
    """``rlkit label serve DIR``: check the settings, bind the port and serve the labeling UI
    until stopped; returns 0. Off loopback without ``--token`` a token is made up and printed
    in the URL."""
    cfg = run_tyro(ServeConfig, argv, prog="rlkit label serve")
    check_types(cfg.clip, "--clip.")
    check_types(cfg)
    check_settings(cfg.clip, {}, "--clip.")  # every float setting finite
    check_settings(cfg, {"host": bool(cfg.host.strip()), "seed": 0 <= cfg.seed < 2**32})
    if cfg.host.startswith("[") and cfg.host.endswith("]"):  # [::1], as in a URL
        cfg = dataclasses.replace(cfg, host=cfg.host[1:-1])
    try:
        cfg.clip.validate()
    except ValueError as exc:
        raise UserError(f"--clip: {exc}") from None
    _check_run_dir(cfg.run_dir)
    check_run_folders(cfg.run_dir, ("segments", "clips"))  # the server writes there
    if not 0 <= cfg.port <= 65535:
        raise UserError(f"--port must be 0..65535, got {cfg.port}")
    if cfg.lease_seconds <= 0 or cfg.labels_per_query < 1 or cfg.gold_every < 0:
        raise UserError("need --lease-seconds > 0, --labels-per-query >= 1, --gold-every >= 0")
    if cfg.render_ahead < 0:
        raise UserError(f"--render-ahead must be >= 0, got {cfg.render_ahead}")
    from feedback_ui.auth import is_loopback, new_token

    token = cfg.token
    if token is not None and len(token) < 8:
        raise UserError("--token must be at least 8 characters")
    if token is not None and not re.fullmatch(r"[A-Za-z0-9._~-]+", token):
        # it travels in the printed URL and in a cookie: characters those encode (+ / = ...)
        # would reach the server changed
        raise UserError("--token may hold only letters, digits and . _ ~ -")
    if token is None and not is_loopback(cfg.host):
        token = new_token()
    sock = _bind(cfg.host, cfg.port)
    port = sock.getsockname()[1]

    import uvicorn

    from feedback_ui.app import create_app
    from feedback_ui.serving import uvicorn_config

    app = create_app(
        cfg.run_dir, token=token, lease_seconds=cfg.lease_seconds,
        labels_per_query=cfg.labels_per_query, gold_every=cfg.gold_every,
        clip_options=cfg.clip, render_ahead=cfg.render_ahead, seed=cfg.seed,
    )  # fmt: skip
    shown = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    print(f"rlkit label: serving {cfg.run_dir} at {url}", flush=True)
    print(f"rlkit label: status page at http://{shown}:{port}/status", flush=True)
    server = uvicorn.Server(uvicorn_config(app))  # with deadlines for slow clients
    server.run(sockets=[sock])
    return 0


def export(argv: list[str]) -> int:
    """``rlkit label export DIR``: write the run's labels (jsonl or csv) to ``--output`` or
    stdout, reading the store only; returns 0."""
    from rlkit.core.streams import CLOSED_STREAMS

    cfg = run_tyro(ExportConfig, argv, prog="rlkit label export")
    _check_run_dir(cfg.run_dir)
    if cfg.output is None and "stdout" in CLOSED_STREAMS:
        raise UserError("standard output is closed: give --output FILE for the labels")
    if cfg.output is not None:
        check_output_file(cfg.output, cfg.run_dir, force=cfg.force)
    if not (cfg.run_dir / "store.sqlite").is_file():
        raise UserError(f"{cfg.run_dir} has no store.sqlite yet: no labels to export")
    from feedback_ui.export import write_export
    from rlkit.store import Store

    store = Store(cfg.run_dir, read_only=True)  # a read-only run directory exports too
    try:
        if cfg.output is None:
            n = write_export(store, cfg.format, sys.stdout)
        else:
            with atomic_output(cfg.output) as out:
                n = write_export(store, cfg.format, out)
    finally:
        store.close()
    print(f"exported {n} labels", file=sys.stderr)
    return 0
