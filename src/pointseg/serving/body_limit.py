"""Limits on request bodies while they arrive: a size cap and a minimum pace (pure ASGI middleware)."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyRefused(Exception):
    """Raised inside ``receive()`` once a request body passes the cap or falls behind the pace."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class BodyLimits:
    """ASGI middleware that answers 413 to a body over ``max_bytes`` and 408 to one that arrives too slowly.

    A ``Content-Length`` over the cap is refused before a byte of the body is read. Bodies without
    one (chunked uploads) are counted as they are received, and refused as soon as the count
    passes the cap, so at most one more network chunk is read.

    The pace: after ``grace_seconds``, the body must keep up an average of ``min_bytes_per_second``
    from the start of the request, and the wait for each next chunk is cut off when it falls
    behind. A client that sends headers and then a trickle (or nothing) is dropped instead of
    holding a connection and memory for as long as it likes.

    Both refusals say ``Connection: close``: the server then drops the connection instead of
    reading and discarding the rest of the upload.

    Args:
        app: The application to protect.
        max_bytes: Largest body accepted, in bytes.
        message: The ``detail`` of the 413 JSON body.
    """

    grace_seconds = 10.0
    """Seconds any body may take, however small."""
    min_bytes_per_second = 64 * 1024
    """Slowest average upload rate accepted after the grace period."""

    def __init__(self, app: ASGIApp, max_bytes: int, message: str) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.message = message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, with its body counted and timed; answer 413 or 408 instead when it fails."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self.refuse(send, BodyRefused(413, self.message))
            return
        started = time.monotonic()
        received = 0
        complete = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # only a disconnect can follow: no deadline
                return await receive()
            allowed = self.grace_seconds + received / self.min_bytes_per_second
            try:
                with anyio.fail_after(max(started + allowed - time.monotonic(), 0)):
                    message = await receive()
            except TimeoutError:
                raise BodyRefused(408, self.too_slow(received, time.monotonic() - started)) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise BodyRefused(413, self.message)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyRefused as refusal:
            if not response_started:
                await self.refuse(send, refusal)

    def too_slow(self, received: int, seconds: float) -> str:
        """The 408 message."""
        return (
            f"the upload arrived too slowly ({received:,} bytes in {seconds:.0f} s); this server needs "
            f"at least {self.min_bytes_per_second // 1024} KiB/s after the first {self.grace_seconds:g} s, "
            "and closed the connection"
        )

    async def refuse(self, send: Send, refusal: BodyRefused) -> None:
        """Send the 413 or 408 response, with ``Connection: close``."""
        body = json.dumps({"detail": refusal.detail}).encode()
        headers: list[Any] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
