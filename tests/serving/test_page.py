"""The browser page at ``/``, driven in Debian's headless Chromium against the real app.

One server (uvicorn in a background thread, on a free port of 127.0.0.1) serves the serving tests'
checkpoint (``conftest.checkpoint``: the small config's network, DeepGlobe classes); each test opens
the page in a fresh browser context.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from PIL import Image

from fake_data import UTM, block_labels, image_for, write_raster
from pointseg.datasets import deepglobe

pytestmark = pytest.mark.integration  # a browser against a live server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDTH, HEIGHT = 96, 72  # not square, so a swapped width and height would show

if not CHROMIUM.is_file():
    pytest.skip(
        "headless Chromium not found at /usr/bin/chromium (Debian package 'chromium'); .ci/run installs it",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
expect = sync_api.expect

from live_server import running_server  # noqa: E402


@pytest.fixture(scope="module")
def server(checkpoint: Path) -> Iterator[str]:
    """Base URL of the real app, served by uvicorn on a free port, once ``GET /ready`` answers."""
    from pointseg.serving.app import create_app

    with running_server(create_app(checkpoint), wait_ready=True) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: sync_api.Browser, server: str) -> Iterator[sync_api.Page]:
    """The page, opened in a fresh context, once it has listed the model's classes."""
    context = browser.new_context(
        base_url=server, accept_downloads=True, viewport={"width": 1200, "height": 900}
    )
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.goto("/")
    expect(page.locator("#legend li")).to_have_count(len(deepglobe.SCHEMA.classes))
    yield page
    context.close()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A PNG and a georeferenced GeoTIFF of WIDTH x HEIGHT fake land cover, and a text file named .png."""
    root = tmp_path_factory.mktemp("uploads")
    labels = block_labels(HEIGHT, WIDTH, deepglobe.SCHEMA.num_classes, seed=7)
    pixels = image_for(labels, np.array(deepglobe.SCHEMA.colors), seed=7)
    notes = root / "notes.png"
    notes.write_text("these are field notes, not an image\n")
    return {
        "png": write_raster(root / "scene.png", pixels),
        "tif": write_raster(root / "field.tif", pixels, UTM, Affine(10, 0, 300000, 0, -10, 5000000)),
        "text": notes,
    }


def test_prediction_shows_overlay_legend_and_opacity(page: sync_api.Page, images: dict[str, Path]) -> None:
    expect(page.locator("#model-info")).to_contain_text("resnet18")
    expect(page.locator("#download-png")).to_be_disabled()

    page.locator("#file-input").set_input_files(images["png"])

    overlay = page.locator("#overlay")
    expect(overlay).to_be_visible()
    loaded = overlay.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
    assert loaded == [True, WIDTH, HEIGHT]
    assert page.locator("#input-image").evaluate("img => img.naturalWidth") == WIDTH
    box, base = overlay.bounding_box(), page.locator("#input-image").bounding_box()
    assert box is not None and base is not None
    assert (box["x"], box["y"], box["width"], box["height"]) == pytest.approx(
        (base["x"], base["y"], base["width"], base["height"]), abs=1
    )  # stacked exactly on the input

    legend = page.locator("#legend li")
    shares = []
    for name, item in zip(deepglobe.SCHEMA.classes, legend.all(), strict=True):
        assert item.get_attribute("data-class") == name
        expect(item).to_contain_text(name.replace("_", " "))
        share = item.locator(".share").inner_text()
        assert share.endswith(" %"), share
        shares.append(float(share.removesuffix(" %").lstrip("<")))
    assert sum(shares) == pytest.approx(100, abs=0.5)
    expect(page.locator("#error")).to_be_empty()

    before = float(overlay.evaluate("img => getComputedStyle(img).opacity"))
    page.locator("#opacity").fill("25")
    assert float(overlay.evaluate("img => getComputedStyle(img).opacity")) == pytest.approx(0.25)
    assert before != pytest.approx(0.25)
    expect(page.locator("#opacity-value")).to_have_text("25 %")


def test_downloads_the_png_and_the_geotiff(
    page: sync_api.Page, images: dict[str, Path], tmp_path: Path
) -> None:
    # The keyboard path: Enter on the drop zone opens the file chooser. (A bare keyboard.press at once
    # can beat Playwright's file-chooser interception; locator.press checks the element first.)
    with page.expect_file_chooser() as chooser:
        page.locator("#drop-zone").press("Enter")
    chooser.value.set_files(images["tif"])  # TIFF: the page shows the server's /preview rendering
    expect(page.locator("#download-png")).to_be_enabled()
    assert page.locator("#input-image").evaluate("img => img.naturalWidth") == WIDTH

    with page.expect_download() as png:
        page.locator("#download-png").click()
    assert png.value.suggested_filename == "field_classes.png"
    png.value.save_as(tmp_path / "mask.png")
    with Image.open(tmp_path / "mask.png") as mask:
        assert (mask.format, mask.mode, mask.size) == ("PNG", "RGBA", (WIDTH, HEIGHT))

    with page.expect_download() as geotiff:
        page.locator("#download-geotiff").click()
    assert geotiff.value.suggested_filename == "field_classes.tif"  # from Content-Disposition
    geotiff.value.save_as(tmp_path / "classes.tif")
    assert (tmp_path / "classes.tif").read_bytes()[:4] in (b"II*\x00", b"MM\x00*")
    expect(page.locator("#error")).to_be_empty()


def test_a_text_file_named_png_shows_the_415_message(page: sync_api.Page, images: dict[str, Path]) -> None:
    page.locator("#file-input").set_input_files(images["text"])
    error = page.locator("#error")
    expect(error).to_contain_text("This file is not an image (415)")
    assert error.get_attribute("role") == "alert"
    expect(error).to_be_visible()
    expect(page.locator("#result")).to_be_hidden()
    expect(page.locator("#drop-zone")).to_be_enabled()  # no longer busy

    # The same file dropped onto the drop zone gets the same answer.
    page.evaluate("() => { document.getElementById('error').textContent = ''; }")
    content = base64.b64encode(images["text"].read_bytes()).decode()
    transfer = page.evaluate_handle(
        """content => {
            const transfer = new DataTransfer();
            const bytes = Uint8Array.from(atob(content), (c) => c.charCodeAt(0));
            transfer.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
            return transfer;
        }""",
        content,
    )
    page.locator("#drop-zone").dispatch_event("drop", {"dataTransfer": transfer})
    expect(error).to_contain_text("This file is not an image (415)")


def test_refuses_an_oversize_file_before_uploading(page: sync_api.Page, images: dict[str, Path]) -> None:
    def small_limit(route: sync_api.Route) -> None:
        model = route.fetch().json()
        model["limits"]["max_upload_bytes"] = 1000
        route.fulfill(json=model)

    uploads: list[str] = []
    page.on("request", lambda request: uploads.append(request.url) if request.method == "POST" else None)
    page.route("**/model", small_limit)
    page.reload()
    expect(page.locator("#drop-hint")).to_contain_text("up to 1 kB")

    page.locator("#file-input").set_input_files(images["png"])
    expect(page.locator("#error")).to_contain_text("This file is too large")
    expect(page.locator("#error")).to_contain_text("at most")
    assert uploads == []
