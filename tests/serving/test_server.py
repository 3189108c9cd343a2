"""uvicorn's connection limits and shutdown (pointseg.serving.server), on real servers."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from live_server import running_server
from rasterio.io import MemoryFile

from pointseg.serving.app import create_app
from pointseg.serving.server import HeaderTimeoutH11Protocol, uvicorn_options

pytestmark = pytest.mark.integration  # real uvicorn servers, in threads and subprocesses


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=20)


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` (reading gives b"" or a reset) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_stalled_headers_are_dropped_and_complete_requests_are_not(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(HeaderTimeoutH11Protocol, "header_timeout", 1.0)
    app = create_app(checkpoint, warmup=False)
    with running_server(app, **uvicorn_options()) as url:
        with connect(url) as first:
            first.sendall(b"GET /health HTTP/1.1\r\nHost: te")  # and then nothing
            assert closed_within(first, 15), "a connection with stalled headers stays open"
        with connect(url) as second:
            second.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
            second.settimeout(10)
            assert second.recv(4096).startswith(b"HTTP/1.1 200")
            second.sendall(b"GET /health HTTP/1.1\r\n")  # a second request on it that stalls
            assert closed_within(second, 15)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def large_tiff(side: int) -> bytes:
    """A ``side`` x ``side`` RGB GeoTIFF of a few kB (constant, compressed): many tiles to predict."""
    with MemoryFile() as memory:
        profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8"}
        with memory.open(**profile, tiled=True, compress="deflate") as dataset:
            dataset.write(np.full((3, side, side), 90, dtype=np.uint8))
        return memory.read()


def test_sigterm_stops_the_server_during_a_long_prediction(checkpoint: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = ["serve", "--checkpoint", str(checkpoint), "--port", str(port), "--max-pixels", "40000000"]
    server = subprocess.Popen(
        [sys.executable, "-m", "pointseg", *command, "--request-timeout", "3600"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            time.sleep(0.5)
        answers: list[object] = []

        def predict() -> None:  # 6000 x 6000 px in tiles of 64: many minutes on a CPU
            try:
                answers.append(
                    httpx.post(f"{url}/predict", files={"file": ("big.tif", large_tiff(6000))}, timeout=600)
                )
            except httpx.TransportError as error:
                answers.append(error)

        client = threading.Thread(target=predict, daemon=True)
        client.start()
        time.sleep(5)  # the upload is in and the prediction runs
        assert server.poll() is None and not answers
        stopping = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        waited = time.monotonic() - stopping
        output = server.stdout.read().decode() if server.stdout else ""
        print(f"\nSIGTERM during a prediction: the server exited after {waited:.1f} s")
        assert waited < 30, output
        assert "Cancel 1 running task(s)" in output, output
        client.join(30)
        assert answers and not (isinstance(answers[0], httpx.Response) and answers[0].status_code == 200)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
