"""An ASGI middleware that rejects HTTP requests whose body is larger than a limit.

Gradio caps each uploaded file (``max_file_size``) but reads the JSON body of
an event whole, so a client could send an image as a data URL of any size.
This middleware returns HTTP 413 before the body is read when the
``Content-Length`` header is over the limit. A body sent without that header
is read only until it passes the limit.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)


class _BodyTooLarge(Exception):
    """Raised inside ``receive`` when a streamed body passes the limit."""


class RequestBodyLimit:
    """Reject HTTP requests with a body of more than ``max_bytes`` bytes with status 413."""

    def __init__(self, app: ASGIApp, max_bytes: int, advice: str = "send a smaller request") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.advice = advice

    def _log(self, scope: Scope, size: str) -> None:
        client = scope.get("client") or ("unknown", 0)
        logger.warning(
            "rejected %s %s from %s: request body of %s is above the limit of %d bytes",
            scope.get("method"), scope.get("path"), client[0], size, self.max_bytes,
        )

    def _reject(self, scope: Scope, size: str) -> PlainTextResponse:
        self._log(scope, size)
        return PlainTextResponse(f"The request body of {size} is above the limit of {self.max_bytes} bytes; {self.advice}.", status_code=413)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._reject(scope, f"{declared.decode('latin-1')[:20]} bytes")(scope, receive, send)
            return

        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI turns an exception while it parses a JSON body
                    # into its own HTTP 400, so the rejection is logged here.
                    self._log(scope, f"more than {received} bytes")
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if response_started:
                raise
            response = PlainTextResponse(f"The request body is above the limit of {self.max_bytes} bytes; {self.advice}.", status_code=413)
            await response(scope, receive, send)


def middleware_arguments(max_bytes: int, advice: str) -> dict[str, Any]:
    """Return the ``app_kwargs`` for ``gr.Blocks.launch`` that install :class:`RequestBodyLimit`."""
    return {"middleware": [Middleware(RequestBodyLimit, max_bytes=max_bytes, advice=advice)]}
