"""``pointseg serve``: uvicorn with connection timeouts, and a checkpoint checked before it starts.

uvicorn's own limits cover what happens before the app sees a request: headers larger than
:data:`MAX_HEADER_BYTES` (h11's incomplete-event limit), an idle keep-alive connection after
:data:`KEEP_ALIVE_SECONDS`, and, with :class:`HeaderTimeoutH11Protocol`, headers that do not
arrive in full within :data:`HEADER_TIMEOUT_SECONDS`. uvicorn answers malformed HTTP itself, in
plain text (see ``CONTRACT.md``). On SIGTERM it stops accepting connections, lets running
requests finish for :data:`GRACEFUL_SHUTDOWN_SECONDS`, then cancels them; a cancelled
prediction stops at its next batch of tiles (:mod:`pointseg.serving.jobs`).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from pointseg.checkpoint import load_trained_model
from pointseg.errors import PointsegError
from pointseg.serving.settings import ServeSettings

KEEP_ALIVE_SECONDS = 5
"""An idle connection is closed this long after its last response."""
HEADER_TIMEOUT_SECONDS = 10.0
"""A connection whose request headers are not complete this long after it opened (or after its
last response) is closed."""
MAX_HEADER_BYTES = 16 * 1024
"""Largest request line plus headers accepted (uvicorn answers 400 in plain text above it)."""
GRACEFUL_SHUTDOWN_SECONDS = 3
"""On SIGTERM, running requests get this long before they are cancelled."""


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request headers stall.

    uvicorn itself waits for headers indefinitely (its keep-alive timeout starts only after a
    response), so a client that sends half a request line holds a connection for ever.
    """

    header_timeout = HEADER_TIMEOUT_SECONDS

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the connection and its first header timer."""
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        """After each response, the next request's headers get a timer too."""
        super().on_response_complete()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the timer with the connection."""
        self._header_timer.cancel()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout, self.cycle)

    def _header_timeout(self, cycle_when_armed: object) -> None:
        if self.cycle is cycle_when_armed and not self.transport.is_closing():
            self.transport.close()  # no new request began: its headers stalled


def uvicorn_options() -> dict[str, Any]:
    """The uvicorn settings that bound what a connection can hold (see the module docstring)."""
    return {
        "http": HeaderTimeoutH11Protocol,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
    }


def serve(settings: ServeSettings, *, host: str = "127.0.0.1", port: int = 5000, workers: int = 1) -> None:
    """Run the API under uvicorn until interrupted.

    The checkpoint is loaded once before the server starts, so a bad checkpoint is one clear error
    rather than a failure in every worker. Workers are separate processes that each build the app
    with :func:`pointseg.serving.app.app_from_environment` from the settings in one JSON
    environment variable; on the CPU they share the cores (``torch_threads`` = cores // workers).

    Raises:
        PointsegError: for a bad checkpoint or worker count (a workspace needs one worker).
    """
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    if workers < 1:
        raise PointsegError(f"--workers {workers}: expected at least 1")
    if workers > 1 and settings.workspace is not None:
        raise PointsegError(
            f"--workers {workers} with --workspace: a workspace is served by one worker (it runs one "
            "training at a time); use --workers 1"
        )
    if workers > 1 and settings.device == "cpu":
        settings = settings.model_copy(update={"torch_threads": max(1, (os.cpu_count() or 1) // workers)})
    if settings.checkpoint is not None:
        load_trained_model(Path(settings.checkpoint))
    os.environ.update(settings.to_environment())
    pointseg_logger = {"handlers": ["default"], "level": "INFO", "propagate": False}
    log_config = {**LOGGING_CONFIG, "loggers": {**LOGGING_CONFIG["loggers"], "pointseg": pointseg_logger}}
    uvicorn.run(
        "pointseg.serving.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=log_config,
        **uvicorn_options(),
    )
