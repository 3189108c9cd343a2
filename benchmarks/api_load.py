"""Benchmark (d): the HTTP API under 8 concurrent clients for 60 s.

Starts ``pointseg serve`` (one worker) on 127.0.0.1 with the small CPU config's network and a
512² tile, so a 512² upload is one forward pass. Eight client threads POST that image to
``/predict`` for 60 s. The figure is the API's throughput (images/s) divided by the bare model's
single-process throughput (the same network's forward on the same, already-decoded image), measured
before and after the load and taken at its faster, so that noise cannot flatter the ratio. The
requests must all succeed, and p50/p99 latencies are reported. Target >= 0.8 with zero errors.

    python -m benchmarks.api_load [--seconds 60] [--clients 8]
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from benchmarks.common import Result, median_seconds, report, write_untrained_checkpoint
from pointseg.checkpoint import load_trained_model
from pointseg.inference import torch_forward

ROOT = Path(__file__).resolve().parents[1]
SIZE = 512


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sample_png() -> bytes:
    """A 512² RGB PNG: a crop of a real DeepGlobe image when ../shared/data is there, else noise."""
    source = ROOT.parent / "shared" / "data" / "deepglobe" / "train" / "855_sat.jpg"
    if source.is_file():
        image = Image.open(source).convert("RGB").crop((0, 0, SIZE, SIZE))
    else:
        image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def bare_images_per_second(checkpoint: Path, png: bytes) -> float:
    """The network's forward on the decoded, normalised image, in this process."""
    trained = load_trained_model(checkpoint)
    pixels = np.moveaxis(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), -1, 0)
    batch = torch.from_numpy(trained.band_stats.normalize(pixels))[None]
    forward = torch_forward(trained.model)
    return 1 / median_seconds(lambda: forward(batch), repeats=15, warmup=3)


def load(url: str, png: bytes, clients: int, seconds: float) -> tuple[list[float], list[str]]:
    """POST ``png`` from ``clients`` threads until ``seconds`` pass; return latencies and errors."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as session:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                try:
                    response = session.post("/predict", files={"file": ("tile.png", png, "image/png")})
                    ok = response.status_code == 200 and response.headers["content-type"] == "image/png"
                    problem = None if ok else f"{response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as error:
                    problem = repr(error)
                with lock:
                    if problem is None:
                        latencies.append(time.perf_counter() - start)
                    else:
                        errors.append(problem)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors


def main() -> Result:
    """Measure the bare model, then the server under load, and print the ratio."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    png = sample_png()
    with tempfile.TemporaryDirectory() as work:
        checkpoint = write_untrained_checkpoint(Path(work) / "model.ckpt", tile=SIZE, overlap=0.0)
        bare_before = bare_images_per_second(checkpoint, png)
        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pointseg",
                "serve",
                "--checkpoint",
                str(checkpoint),
                "--port",
                str(port),
                "--max-queue",
                str(args.clients * 2),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"server did not get ready: {server.stderr.read() if server.stderr else ''}"
                    )
                time.sleep(0.2)
            started = time.monotonic()
            latencies, errors = load(url, png, args.clients, args.seconds)
            elapsed = time.monotonic() - started
        finally:
            server.terminate()
            server.wait(30)
        bare = max(bare_before, bare_images_per_second(checkpoint, png))
    throughput = len(latencies) / elapsed
    ratio = throughput / bare
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return report(
        Result(
            f"(d) API throughput / bare model, {args.clients} clients x {args.seconds:.0f} s",
            ratio,
            ">= 0.8, 0 errors",
            ratio >= 0.8 and not errors,
            f"{throughput:.2f} vs {bare:.2f} images/s ({SIZE}² PNG); "
            f"{len(latencies)} ok, {len(errors)} errors; "
            f"latency p50 {quantiles[49]:.2f} s, p99 {quantiles[98]:.2f} s"
            + (f"; first error: {errors[0]}" if errors else ""),
        )
    )


if __name__ == "__main__":
    main()
