"""Who may talk to the server: a shared token, and a Host check on loopback.

- With a token (required when binding anything but loopback, optional otherwise), every
  request except the static page shell needs it, as ``Authorization: Bearer TOKEN`` or
  the ``rlkit_token`` cookie the page sets from the ``?token=`` in the printed URL.
  Wrong or missing: 401.
- Without a token the server only listens on loopback; it then also refuses requests
  whose Host header is not a loopback name, so a web page elsewhere cannot reach it
  through DNS rebinding.

Cross-site form posts cannot forge a label either way: the API only accepts JSON bodies
(which a foreign page cannot send without a CORS preflight this server never grants),
and the cookie is ``SameSite=Strict``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "rlkit_token"
PUBLIC_PATHS = ("/", "/status", "/favicon.ico", "/api/auth")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address to bind) only accepts local connections."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A random URL-safe token (256 bits)."""
    return secrets.token_urlsafe(32)


def _hostname(host_header: str) -> str:
    if host_header.startswith("["):  # [::1]:8000
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _token_from(headers: dict[bytes, bytes]) -> str | None:
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    raw = headers.get(b"cookie", b"").decode("latin-1")
    if raw:
        try:
            jar = SimpleCookie(raw)
        except Exception:  # noqa: BLE001  (a malformed cookie header is just no token)
            return None
        if COOKIE in jar:
            return jar[COOKIE].value
    return None


class TokenGuard:
    """ASGI middleware enforcing the rules in the module docstring.

    Args:
        app: the wrapped ASGI app.
        token: the shared token, or None for a loopback-only server without one.
    """

    def __init__(self, app: ASGIApp | None, token: str | None) -> None:
        self.app = app
        self.token = token

    def authorized(self, headers: dict[bytes, bytes]) -> bool:
        """Whether ``headers`` (lower-case names) carry the token, by bearer header or
        cookie; always True without a token."""
        if self.token is None:
            return True
        given = _token_from(headers)
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass an HTTP request on to the app if allowed, else answer 403 (Host not loopback,
        no token set) or 401 (token missing or wrong); other scopes pass unchecked."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        path = scope.get("path", "")
        if self.token is None:
            host = _hostname(headers.get(b"host", b"").decode("latin-1"))
            if host not in LOOPBACK_NAMES:
                await reply(send, 403, "this server only answers requests to localhost")
                return
        elif not (path in PUBLIC_PATHS or path.startswith("/static/")) and not self.authorized(
            headers
        ):
            await reply(
                send, 401,
                "missing or wrong token: open the URL that `rlkit label serve` printed"
                " (it carries ?token=...) or send Authorization: Bearer TOKEN",
                [(b"www-authenticate", b"Bearer")],
            )  # fmt: skip
            return
        await self.app(scope, receive, send)


async def reply(send: Send, status: int, message: str, extra: list | None = None) -> None:
    """Answer with ``status`` and ``{"detail": message}`` as JSON, from ASGI middleware."""
    body = json.dumps({"detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body})
