"""A real uvicorn server on 127.0.0.1 for the API and page tests."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.types import ASGIApp

VAL_MIOU = 0.5  # what the test checkpoint (fake_data.write_untrained_checkpoint) records
EPOCH = 3


@contextmanager
def running_server(
    app: ASGIApp, wait_ready: bool = False, timeout: float = 60, **options: Any
) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free port; yield its base URL.

    Args:
        app: The ASGI app.
        wait_ready: Also wait until ``GET /ready`` answers 200 (the model is loaded).
        timeout: Seconds to wait for the server (and readiness).
        options: More ``uvicorn.Config`` settings (e.g. :func:`pointseg.serving.server.uvicorn_options`).

    Uvicorn's loggers propagate (no log config), so ``caplog`` sees what the server logs.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning", **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started or (wait_ready and not _ready(url)):
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the test server at {url} did not start (or get ready) within {timeout} s")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ready", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError):
        return False
