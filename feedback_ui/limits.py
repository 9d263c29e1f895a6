"""What a request may weigh: a cap on body size, enforced before the app reads a byte.

The API's bodies are a few hundred bytes of JSON; a client sending megabytes (by mistake or
to tie the server up) gets 413 at once instead of the server buffering the body and echoing
it back in a validation error. A body without a length (chunked) gets 411: browsers' fetch()
always sends the length of a JSON body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from feedback_ui.auth import reply

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

#: Largest request body accepted, in bytes.
MAX_BODY_BYTES = 64 * 1024


class BodyLimit:
    """ASGI middleware: 413 for a declared body over ``max_bytes``, 411 for a body of
    undeclared length.

    Args:
        app: the wrapped ASGI app.
        max_bytes: the largest body accepted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer an HTTP request 411 or 413 by its headers (see the class docstring), or pass
        it on to the app unread."""
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            length = headers.get(b"content-length")
            if length is None and b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                await reply(send, 411, "send the body with a Content-Length")
                return
            if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
                await reply(send, 413, f"request bodies are at most {self.max_bytes} bytes")
                return
        await self.app(scope, receive, send)
