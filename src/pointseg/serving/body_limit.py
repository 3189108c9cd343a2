"""Refuse request bodies over a size cap while they arrive, not after buffering them (pure ASGI)."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    """Raised inside ``receive()`` once a request body passes the cap."""


class BodySizeLimit:
    """ASGI middleware that answers 413 to any request body larger than ``max_bytes``.

    A ``Content-Length`` over the cap is refused before a byte of the body is read. Bodies without
    one (chunked uploads) are counted as they are received, and refused as soon as the count
    passes the cap, so at most one more network chunk is read. The 413 response says
    ``Connection: close``: the server then drops the connection instead of reading and discarding
    the rest of the upload.

    Args:
        app: The application to protect.
        max_bytes: Largest body accepted, in bytes.
        message: The ``detail`` of the 413 JSON body.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, message: str) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body = json.dumps({"detail": message}).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, with its body counted; answer 413 instead once it passes the cap."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self.refuse(send)
            return
        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                await self.refuse(send)

    async def refuse(self, send: Send) -> None:
        """Send the 413 response."""
        headers: list[Any] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})
