import io
import json
import os
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import uvicorn
from affine import Affine
from fastapi import FastAPI
from fastapi.testclient import TestClient
from live_server import EPOCH, VAL_MIOU, running_server
from PIL import Image
from rasterio.io import MemoryFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from torch import nn

from fake_data import UTM, write_raster
from pointseg.checkpoint import load_trained_model
from pointseg.datasets import deepglobe
from pointseg.inference import Forward, Precision, torch_forward
from pointseg.serving import DEFAULT_MAX_PIXELS, DEFAULT_REQUEST_TIMEOUT_S, service
from pointseg.serving import app as app_module
from pointseg.serving.app import app_from_environment, create_app
from pointseg.serving.body_limit import BodyLimits
from pointseg.serving.server import uvicorn_options
from pointseg.serving.settings import SETTINGS_VARIABLE

pytestmark = pytest.mark.integration  # the app is served by uvicorn on a free port

MAX_UPLOAD = 1024 * 1024  # a small cap, so the 413 tests send little
BODY_LIMIT = MAX_UPLOAD + app_module.FORM_OVERHEAD_BYTES
CLASS_COLORS = {tuple(color) for color in deepglobe.SCHEMA.colors}
TRANSFORM = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 5_600_000.0)  # 0.5 m pixels
Cli = Callable[..., tuple[int, str, str]]


def encode(driver: str, pixels: np.ndarray, **profile: Any) -> bytes:
    """``(C, H, W)`` pixels as a file in memory, written by GDAL."""
    with MemoryFile() as memory:
        with memory.open(
            driver=driver,
            count=pixels.shape[0],
            height=pixels.shape[1],
            width=pixels.shape[2],
            dtype=pixels.dtype.name,
            **profile,
        ) as dataset:
            dataset.write(pixels)
        return memory.read()


def scene(height: int = 80, width: int = 96, bands: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (bands, height, width), dtype=np.uint8)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("images")
    write_raster(folder / "scene.tif", scene(), crs=UTM, transform=TRANSFORM)
    write_raster(folder / "scene.jpg", scene(50, 70))
    write_raster(folder / "scene.png", scene(40, 60))
    return {name: (folder / name).read_bytes() for name in ("scene.tif", "scene.jpg", "scene.png")}


@pytest.fixture(scope="module")
def server(checkpoint: Path) -> Iterator[str]:
    with running_server(create_app(checkpoint, max_upload_bytes=MAX_UPLOAD)) as url:
        yield url


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as http:
        yield http


def post(
    client: httpx.Client, name: str, data: bytes, route: str = "/predict", **params: str
) -> httpx.Response:
    return client.post(route, params=params, files={"file": (name, data)})


def png_pixels(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


def assert_error(response: Any, status: int, *phrases: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    for phrase in phrases:
        assert phrase in detail, detail


# Status routes


def test_health_ready_and_model_metadata(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}
    model = client.get("/model").json()
    assert model["classes"] == list(deepglobe.SCHEMA.classes)
    assert model["colors"] == ["#00FFFF", "#FFFF00", "#FF00FF", "#00FF00", "#0000FF", "#FFFFFF"]
    assert model["input_bands"] == 3
    assert (model["arch"], model["encoder"], model["norm"]) == ("deeplabv3plus", "resnet18", "group")
    assert (model["val_miou"], model["epoch"], model["tile"], model["overlap"]) == (VAL_MIOU, EPOCH, 64, 0.25)
    assert model["checkpoint"] == "model.ckpt"
    assert model["limits"] == {
        "max_upload_bytes": MAX_UPLOAD,
        "max_pixels": DEFAULT_MAX_PIXELS,
        "request_timeout_s": DEFAULT_REQUEST_TIMEOUT_S,
    }


def test_ready_is_503_until_the_model_is_loaded(checkpoint: Path) -> None:
    client = TestClient(create_app(checkpoint))  # not entered: the lifespan (model loading) has not run
    assert client.get("/health").json() == {"status": "ok"}
    response = client.get("/ready")
    assert_error(response, 503, "still loading")
    assert int(response.headers["retry-after"]) >= 1
    assert_error(client.post("/predict", files={"file": ("a.png", b"x")}), 503, "still loading")


def test_page_docs_and_openapi(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert client.get("/docs").status_code == 200
    predict = client.get("/openapi.json").json()["paths"]["/predict"]["post"]
    assert "multipart/form-data" in predict["requestBody"]["content"]
    assert {"400", "413", "415", "422", "503"} <= predict["responses"].keys()


# Happy paths


def test_predict_png_is_an_rgba_class_colour_mask_of_the_input_size(
    client: httpx.Client, images: dict[str, bytes]
) -> None:
    response = post(client, "scene.tif", images["scene.tif"])
    mask = png_pixels(response)
    assert mask.mode == "RGBA" and mask.size == (96, 80)
    rgba = np.asarray(mask)
    assert (rgba[..., 3] == 255).all()
    colors, counts = np.unique(rgba[..., :3].reshape(-1, 3), axis=0, return_counts=True)
    assert {tuple(c) for c in colors.tolist()} <= CLASS_COLORS
    shares = json.loads(response.headers["x-pointseg-shares"])
    assert list(shares) == list(deepglobe.SCHEMA.classes)
    assert sum(shares.values()) == pytest.approx(1, abs=1e-5)
    by_color = {tuple(c): n / rgba[..., 0].size for c, n in zip(colors.tolist(), counts, strict=True)}
    for name, color in zip(deepglobe.SCHEMA.classes, deepglobe.SCHEMA.colors, strict=True):
        assert shares[name] == pytest.approx(by_color.get(tuple(color), 0.0), abs=1e-5)


@pytest.mark.parametrize("name", ["scene.jpg", "scene.png"])
def test_predict_reads_jpeg_and_png(client: httpx.Client, images: dict[str, bytes], name: str) -> None:
    expected = Image.open(io.BytesIO(images[name])).size
    assert png_pixels(post(client, name, images[name])).size == expected


def test_a_png_named_txt_is_judged_by_its_content(client: httpx.Client, images: dict[str, bytes]) -> None:
    assert png_pixels(post(client, "scene.txt", images["scene.png"])).size == (60, 40)


def test_predict_geotiff_keeps_crs_transform_and_size_with_a_colour_table(
    client: httpx.Client, images: dict[str, bytes]
) -> None:
    response = post(client, "scene.tif", images["scene.tif"], format="geotiff")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/tiff"
    assert response.headers["content-disposition"] == 'attachment; filename="scene_classes.tif"'
    with MemoryFile(response.content) as memory, memory.open() as result:
        assert (result.width, result.height, result.count, result.dtypes[0]) == (96, 80, 1, "uint8")
        assert result.crs == UTM and result.crs.to_epsg() == 32633
        assert result.transform == TRANSFORM
        assert result.nodata == 255
        colormap = result.colormap(1)
        labels = result.read(1)
    for index, color in enumerate(deepglobe.SCHEMA.colors):
        assert colormap[index] == (*color, 255)
    # The same prediction as the PNG, pixel for pixel.
    rgb = np.asarray(png_pixels(post(client, "scene.tif", images["scene.tif"])))[..., :3]
    assert (np.array(deepglobe.SCHEMA.colors, dtype=np.uint8)[labels] == rgb).all()


def test_predict_json_counts_pixels_per_class(client: httpx.Client, images: dict[str, bytes]) -> None:
    response = post(client, "scene.jpg", images["scene.jpg"], format="json")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (70, 50)
    assert [c["name"] for c in body["classes"]] == list(deepglobe.SCHEMA.classes)
    assert [c["color"] for c in body["classes"]] == client.get("/model").json()["colors"]
    assert sum(c["pixels"] for c in body["classes"]) == 70 * 50
    assert sum(c["share"] for c in body["classes"]) == pytest.approx(1)
    assert body["model"] == client.get("/model").json()


def test_nodata_pixels_are_transparent_and_left_out_of_the_shares(client: httpx.Client) -> None:
    pixels = scene()
    pixels[:, :40, :] = 0  # nodata: half the rows
    data = encode("GTiff", pixels, nodata=0, crs=UTM, transform=TRANSFORM)
    response = post(client, "holes.tif", data)
    alpha = np.asarray(png_pixels(response))[..., 3]
    assert (alpha[:40] == 0).all() and (alpha[40:] == 255).all()
    assert sum(json.loads(response.headers["x-pointseg-shares"]).values()) == pytest.approx(1, abs=1e-5)


def test_preview_is_an_rgb_rendering_of_the_input(client: httpx.Client, images: dict[str, bytes]) -> None:
    preview = png_pixels(post(client, "scene.tif", images["scene.tif"], route="/preview"))
    assert preview.mode == "RGB" and preview.size == (96, 80)
    assert_error(
        post(client, "notes.png", b"hello", route="/preview"), 415, "notes.png", "not a GeoTIFF, PNG or JPEG"
    )


# Bad input: one test per case, status code and message


def test_no_file_field_is_400(client: httpx.Client) -> None:
    assert_error(client.post("/predict", data={"image": "x"}), 400, "no 'file' field", "multipart/form-data")
    assert_error(client.post("/predict", content=b"\x89PNG"), 400, "no 'file' field")
    assert_error(client.post("/predict", data={"file": "hello"}), 400, "holds text, not a file")


def test_empty_file_is_400(client: httpx.Client) -> None:
    assert_error(post(client, "empty.tif", b""), 400, "empty.tif", "the file is empty")


def test_text_named_png_is_415(client: httpx.Client) -> None:
    assert_error(
        post(client, "notes.png", b"just some text\n"),
        415,
        "notes.png",
        "not a GeoTIFF, PNG or JPEG",
        "content, not its name",
    )


def test_truncated_png_is_422(client: httpx.Client, images: dict[str, bytes]) -> None:
    half = images["scene.png"][: len(images["scene.png"]) // 2]
    assert_error(post(client, "half.png", half), 422, "half.png", "PNG is truncated")


def test_corrupt_png_is_422(client: httpx.Client, images: dict[str, bytes]) -> None:
    damaged = bytearray(images["scene.png"])
    damaged[len(damaged) // 2] ^= 0xFF  # inside the image data
    assert_error(post(client, "damaged.png", bytes(damaged)), 422, "damaged.png", "fails its CRC check")


def test_jpeg_with_garbage_after_its_header_is_422(client: httpx.Client, images: dict[str, bytes]) -> None:
    garbage = images["scene.jpg"][:200] + np.random.default_rng(1).bytes(4000)
    assert_error(post(client, "noise.jpg", garbage), 422, "noise.jpg", "cannot be read as a JPEG image")


def test_truncated_jpeg_and_geotiff_are_422(client: httpx.Client, images: dict[str, bytes]) -> None:
    jpeg = images["scene.jpg"][: len(images["scene.jpg"]) // 2]
    assert_error(post(client, "cut.jpg", jpeg), 422, "cut.jpg", "cannot decode pixels")
    tiled = encode("GTiff", scene(), tiled=True, blockxsize=16, blockysize=16, compress="deflate")
    assert_error(post(client, "cut.tif", tiled[: len(tiled) // 2]), 422, "cut.tif", "cannot decode pixels")


def test_band_count_the_model_cannot_take_is_422(client: httpx.Client) -> None:
    data = encode("GTiff", scene(bands=4))
    assert_error(post(client, "four.tif", data), 422, "four.tif", "4 band(s), but the model takes 3")


def png_bomb(side: int) -> bytes:
    """A valid ``side`` x ``side`` all-black greyscale PNG: a few hundred KB that decode to side² bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    rows = bytes((side + 1) * 1000)  # filter byte + pixels, 1000 rows at a time
    idat = (
        b"".join(
            compressor.compress(rows[: (side + 1) * min(1000, side - start)])
            for start in range(0, side, 1000)
        )
        + compressor.flush()
    )
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bombs_are_413_from_the_header(client: httpx.Client) -> None:
    with MemoryFile() as memory:  # 30000 x 30000 x 3, all zero: no tile is even stored
        with memory.open(
            driver="GTiff",
            width=30_000,
            height=30_000,
            count=3,
            dtype="uint8",
            tiled=True,
            compress="deflate",
            sparse_ok=True,
            crs=UTM,
            transform=TRANSFORM,
        ):
            pass
        tiff = memory.read()
    assert len(tiff) < 300_000
    assert_error(
        post(client, "bomb.tif", tiff),
        413,
        "bomb.tif",
        "30,000 x 30,000 = 900,000,000 pixels",
        f"limit of {DEFAULT_MAX_PIXELS:,}",
    )
    png = png_bomb(13_000)
    assert len(png) < MAX_UPLOAD
    assert_error(post(client, "bomb.png", png), 413, "13,000 x 13,000", "--max-pixels")


def test_bad_format_parameter_is_400(client: httpx.Client, images: dict[str, bytes]) -> None:
    assert_error(post(client, "scene.tif", images["scene.tif"], format="bmp"), 400, "format 'bmp'", "'png'")


# Upload size: refused while reading


def test_upload_over_the_cap_with_content_length_is_413_before_reading(checkpoint: Path) -> None:
    app, received = counting(create_app(checkpoint, max_upload_bytes=MAX_UPLOAD, warmup=False))
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        response = post(client, "big.tif", b"II*\x00" + bytes(2 * MAX_UPLOAD))
        assert_error(response, 413, "larger than this server's limit of 1 MiB", "--max-upload-mb")
        assert response.headers["connection"] == "close"
        assert received == [0]  # refused from the header alone
        # A file just over the cap fits in the allowance for multipart framing: refused once read.
        assert_error(post(client, "edge.tif", b"II*\x00" + bytes(MAX_UPLOAD)), 413, "limit of 1 MiB")


def test_chunked_upload_over_the_cap_is_refused_while_it_arrives(checkpoint: Path) -> None:
    app, received = counting(create_app(checkpoint, max_upload_bytes=MAX_UPLOAD, warmup=False))
    total = 64 * MAX_UPLOAD
    yielded = 0

    def body() -> Iterator[bytes]:  # no Content-Length: sent chunked
        nonlocal yielded
        head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.tif"\r\n\r\nII*\x00'
        for chunk in [head] + [bytes(64 * 1024)] * (total // (64 * 1024)):
            yielded += len(chunk)
            yield chunk

    with running_server(app) as url:
        response = httpx.post(
            f"{url}/predict",
            content=body(),
            timeout=30,
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
    assert_error(response, 413, "larger than this server's limit of 1 MiB")
    print(
        f"\nchunked upload: cap {BODY_LIMIT:,} B (1 MiB + framing allowance), server read {received[0]:,} B, "
        f"client sent {yielded:,} of {total:,} B"
    )
    assert received[0] <= BODY_LIMIT + 512 * 1024  # at most one network read past the cap
    assert yielded < total // 4  # the rest was never sent: the connection was closed


def counting(app: ASGIApp) -> tuple[ASGIApp, list[int]]:
    """Wrap an ASGI app to count the request body bytes the server hands it."""
    received = [0]

    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                received[0] += len(message.get("body", b""))
            return message

        await app(scope, counted_receive if scope["type"] == "http" else receive, send)

    return wrapper, received


# Work queue, event loop, unexpected errors


class ControlledForward:
    """Wraps the real forward pass: once armed it waits for ``release``, or fails if ``failing``."""

    def __init__(self) -> None:
        self.armed = False
        self.failing = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(
        self, model: nn.Module, device: str, precision: Precision, tta: str, scales: Sequence[float]
    ) -> Forward:
        forward = torch_forward(model, device, precision, "flips" if tta == "flips" else "none", scales)

        def controlled(batch: torch.Tensor) -> torch.Tensor:
            if self.failing:
                raise RuntimeError("simulated failure inside the network")
            if self.armed:
                self.entered.set()
                assert self.release.wait(30)
            return forward(batch)

        return controlled


Controlled = tuple[str, ControlledForward, FastAPI]


@pytest.fixture
def controlled(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Controlled]:
    control = ControlledForward()
    monkeypatch.setattr(service, "torch_forward", control)
    app = create_app(checkpoint, max_queue=2)
    with running_server(app) as url:
        yield url, control, app


def test_prediction_runs_off_the_event_loop_and_a_full_queue_is_503(
    controlled: Controlled, images: dict[str, bytes]
) -> None:
    url, control, app = controlled
    control.armed = True
    with ThreadPoolExecutor(2) as pool, httpx.Client(base_url=url, timeout=30) as client:
        first = pool.submit(post, client, "scene.tif", images["scene.tif"])
        assert control.entered.wait(10)
        assert client.get("/health").status_code == 200
        assert not first.done()  # answered while the prediction is blocked
        second = pool.submit(post, client, "scene.tif", images["scene.tif"])  # waits its turn
        deadline = time.monotonic() + 10
        while app.state.queue.active < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = post(client, "scene.tif", images["scene.tif"])
        assert not first.done() and not second.done()  # refused at once, not after the queue drained
        assert_error(refused, 503, "busy", "--max-queue")
        assert int(refused.headers["retry-after"]) >= 1
        control.release.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
        assert post(client, "scene.tif", images["scene.tif"]).status_code == 200


def test_unexpected_error_is_a_logged_500_and_the_worker_survives(
    controlled: Controlled, images: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    url, control, _ = controlled
    with httpx.Client(base_url=url, timeout=30) as client:
        control.failing = True
        response = post(client, "scene.tif", images["scene.tif"])
        assert_error(response, 500, "internal error")
        assert "simulated" not in response.text
        assert any(
            record.exc_info and "simulated failure" in str(record.exc_info[1]) for record in caplog.records
        )
        control.failing = False
        assert png_pixels(post(client, "scene.tif", images["scene.tif"])).size == (96, 80)


# The serve command


def test_serve_refuses_a_bad_checkpoint_before_starting(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: pytest.fail("the server was started"))
    code, _, err = cli("serve", "--checkpoint", tmp_path / "missing.ckpt")
    assert code == 1 and "missing.ckpt: no such checkpoint file" in err
    (tmp_path / "text.ckpt").write_text("hello")
    code, _, err = cli("serve", "--checkpoint", tmp_path / "text.ckpt")
    assert code == 1 and "not a readable PyTorch checkpoint" in err
    code, _, err = cli("serve", "--checkpoint", tmp_path / "text.ckpt", "--precision", "fp8")
    assert code == 1 and "--precision 'fp8'" in err


def test_serve_starts_uvicorn_workers_with_the_settings_in_the_environment(
    cli: Cli, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: started.update(args=args, kwargs=kwargs))
    monkeypatch.setattr(os, "environ", dict(os.environ))
    threads = torch.get_num_threads()
    code, _, err = cli(
        "serve", "--checkpoint", checkpoint, "--workers", "2", "--max-upload-mb", "8", "--port", "5123"
    )
    assert code == 0, err
    assert started["args"] == ("pointseg.serving.app:app_from_environment",)
    kwargs = started["kwargs"]
    assert isinstance(kwargs, dict)
    assert (kwargs["factory"], kwargs["host"], kwargs["port"], kwargs["workers"]) == (
        True,
        "127.0.0.1",
        5123,
        2,
    )
    assert json.loads(os.environ[SETTINGS_VARIABLE])["checkpoint"] == str(checkpoint)
    try:
        with TestClient(app_from_environment()) as client:  # what each worker process does
            assert client.get("/ready").status_code == 200
            assert client.get("/model").json()["limits"]["max_upload_bytes"] == 8 * 2**20
    finally:
        torch.set_num_threads(threads)


# Probes, nodata


def test_head_health_and_ready_answer_without_a_body(client: httpx.Client) -> None:
    for route in ("/health", "/ready"):
        response = client.head(route)
        assert response.status_code == 200 and response.content == b""
    assert "head" not in client.get("/openapi.json").json()["paths"]["/health"]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("nodata", [None, np.nan])
def test_non_finite_pixels_are_transparent_and_the_rest_is_predicted(
    client: httpx.Client, checkpoint: Path, bad: float, nodata: float | None
) -> None:
    image = scene().astype(np.float32)
    image[1, 10, 20] = bad
    profile = {} if nodata is None else {"nodata": nodata}
    mask = np.asarray(png_pixels(post(client, "nan.tif", encode("GTiff", image, **profile))))
    mean = load_trained_model(checkpoint).band_stats.mean
    image[1, 10, 20] = mean[1]  # what the network sees there instead
    expected = np.asarray(png_pixels(post(client, "filled.tif", encode("GTiff", image))))
    assert mask[10, 20, 3] == 0, "the non-finite pixel is nodata: transparent"
    others = np.ones(mask.shape[:2], dtype=bool)
    others[10, 20] = False
    assert (mask[others, 3] == 255).all()
    assert np.array_equal(mask[others], expected[others]), "one bad pixel changes no other prediction"


# Time budget, disconnects, slow uploads


class SlowForward:
    """The real forward pass, ``delay`` seconds slower per batch, counting its calls once armed."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0
        self.armed = False

    def __call__(
        self, model: nn.Module, device: str, precision: Precision, tta: str, scales: Sequence[float]
    ) -> Forward:
        forward = torch_forward(model, device, precision, "flips" if tta == "flips" else "none", scales)

        def slow(batch: torch.Tensor) -> torch.Tensor:
            if self.armed:
                self.calls += 1
                time.sleep(self.delay)
            return forward(batch)

        return slow


def test_a_prediction_past_the_request_timeout_is_stopped_with_a_504(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, images: dict[str, bytes]
) -> None:
    slow = SlowForward(delay=0.6)
    monkeypatch.setattr(service, "torch_forward", slow)
    app = create_app(checkpoint, request_timeout=1.0, batch_size=1)
    with running_server(app, wait_ready=True) as url, httpx.Client(base_url=url, timeout=60) as client:
        slow.armed = True
        response = post(client, "scene.tif", images["scene.tif"])  # 80 x 96 px: 4 tiles of 64
        assert_error(response, 504, "limit of 1 s per request", "--request-timeout")
        assert 1 <= slow.calls < 4, "stopped between tiles"
        assert app.state.queue.active == 0
        slow.delay = 0.0
        assert png_pixels(post(client, "scene.tif", images["scene.tif"])).size == (96, 80)


def test_a_client_that_disconnects_cancels_its_prediction(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = SlowForward(delay=0.3)
    monkeypatch.setattr(service, "torch_forward", slow)
    app = create_app(checkpoint, batch_size=1)
    big = encode("GTiff", scene(400, 400))  # 81 tiles: about 25 s at 0.3 s each
    with running_server(app, wait_ready=True) as url:
        slow.armed = True
        with (
            pytest.raises(httpx.ReadTimeout),
            httpx.Client(base_url=url, timeout=httpx.Timeout(2.0)) as client,
        ):
            post(client, "big.tif", big)
        deadline = time.monotonic() + 15
        while app.state.queue.active and time.monotonic() < deadline:
            time.sleep(0.1)
        assert app.state.queue.active == 0, "the job ended soon after its client left"
        calls = slow.calls
        time.sleep(1.0)
        assert slow.calls == calls < 40, "no more tiles were predicted"


def stalling_upload(url: str, trickle: bool, results: list[bytes]) -> None:
    """Send headers announcing 100 000 bytes, the part head (and, if ``trickle``, 10 bytes every 0.5 s)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="slow.tif"\r\n\r\nII*\x00'
        )
        answer = b""
        deadline = time.monotonic() + 30
        sock.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                if trickle:
                    try:
                        sock.sendall(bytes(10))
                    except OSError:
                        break
                continue
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
        results.append(answer)


def test_slow_uploads_neither_block_the_queue_nor_stay_connected(
    checkpoint: Path, images: dict[str, bytes]
) -> None:
    app = create_app(checkpoint, max_queue=1)  # before: each slow upload held the only place
    results: list[bytes] = []
    with running_server(app, wait_ready=True, **uvicorn_options()) as url:
        threads = [
            threading.Thread(target=stalling_upload, args=(url, trickle, results)) for trickle in (0, 0, 1, 1)
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        with httpx.Client(base_url=url, timeout=30) as client:
            assert png_pixels(post(client, "scene.tif", images["scene.tif"])).size == (96, 80)
        assert not results, (
            f"answered while the slow uploads still stall ({BodyLimits.grace_seconds} s grace)"
        )
        for thread in threads:
            thread.join(40)
    assert len(results) == 4
    for answer in results:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"arrived too slowly" in answer and b"application/json" in answer
