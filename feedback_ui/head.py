"""HEAD answered wherever GET is: the GET response's status and headers, without its body.

FastAPI's routes answer HEAD with 405 (only Starlette's plain routes and StaticFiles add it
for GET), yet uptime monitors and ``curl -I`` ask with HEAD. Rather than list HEAD on
every route (which also doubles each operation in the OpenAPI spec), the app sees a GET
and this middleware drops the body on the way out; ``Content-Length`` stays the GET's, as
RFC 9110 section 9.3.2 allows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    """ASGI middleware: serve an HTTP HEAD request as the GET it mirrors, sending no body.

    Args:
        app: the wrapped ASGI app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass a HEAD request on as GET and send its response's start with an empty body;
        anything else passes through untouched."""
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] != "http.response.body":
                await send(message)
            elif not message.get("more_body", False):  # the body's chunks are dropped
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app({**scope, "method": "GET"}, receive, headers_only)
