"""The labelling page at ``/label``, driven in Debian's headless Chromium against a live workspace server.

One server (uvicorn in a background thread, see :mod:`live_server`) serves a workspace folder holding
one small georeferenced GeoTIFF: water on the left, meadow on the right, so a tiny network learns it
in a few steps. Each test opens the page in a fresh browser context and starts its own project.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from affine import Affine

from fake_data import UTM, write_raster
from pointseg.datasets import deepglobe
from pointseg.mapping import MapSettings
from pointseg.points import import_points
from pointseg.schema import RGB, ClassSchema, parse_color
from pointseg.serving.app import build_app
from pointseg.serving.project_training import TrainingDefaults
from pointseg.serving.settings import ServeSettings

pytestmark = pytest.mark.integration  # a browser against a live server that trains

# The Chromium, its switches and Playwright are those of the predict page's test (it skips this module too
# where no Chromium or Playwright is installed).
from live_server import running_server  # noqa: E402
from test_page import CHROMIUM, CHROMIUM_ARGS, expect, sync_api  # noqa: E402

WIDTH, HEIGHT = 96, 64  # not square, so a swapped width and height would show
TRANSFORM = Affine(10, 0, 300000, 0, -10, 5000000)
IMAGE = "scenes/field.tif"
CLASSES = {"water": "#1f5fd0", "meadow": "#3ca03c"}
COLORS: dict[str, RGB] = {name: parse_color(color, name) for name, color in CLASSES.items()}
WATER_POINTS = [(8, 6), (40, 20), (56, 10)]  # (row, col): the left half
MEADOW_POINTS = [(10, 80), (30, 60), (50, 90)]  # the right half
WIDE_IMAGE, WIDE = "scenes/wide.png", (2600, 40)  # wider than one view.png may be (2048 px)
TRAIN_TIMEOUT_MS = 240_000  # a tiny model on two shared cores: far more than it needs


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with one 3-band UTM GeoTIFF: water (blue) left of column 48, meadow (green) right."""
    root = tmp_path_factory.mktemp("workspace")
    rng = np.random.default_rng(3)
    pixels = np.empty((3, HEIGHT, WIDTH))
    pixels[:, :, : WIDTH // 2] = np.array([30, 70, 180])[:, None, None]
    pixels[:, :, WIDTH // 2 :] = np.array([70, 160, 60])[:, None, None]
    pixels = np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8)
    write_raster(root / IMAGE, pixels, UTM, TRANSFORM)
    wide = np.broadcast_to(np.arange(WIDE[0], dtype=np.uint8)[None, None, :], (3, WIDE[1], WIDE[0]))
    write_raster(root / WIDE_IMAGE, np.ascontiguousarray(wide))
    return root


@pytest.fixture(scope="module")
def server(workspace: Path) -> Iterator[str]:
    """Base URL of the real app serving ``workspace``; it trains a tiny network, in seconds."""
    tiny = MapSettings(
        epochs=2,
        encoder="resnet18",
        weights=None,
        norm="group",
        crop_size=32,
        crops_per_image=2,
        batch_size=2,
        tile=64,
        block_size=8,
    )
    app = build_app(
        ServeSettings.checked(workspace=workspace), TrainingDefaults(settings=tiny, warm_epochs=1)
    )
    with running_server(app, wait_ready=True) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: sync_api.Browser, server: str) -> Iterator[sync_api.Page]:
    """The labelling page with a new project on the workspace's image, opened in a fresh context."""
    context = browser.new_context(
        base_url=server, accept_downloads=True, viewport={"width": 1400, "height": 900}
    )
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.goto("/label")
    expect(page.locator("#image-select option")).to_have_text(
        [f"{IMAGE} ({WIDTH} × {HEIGHT}, 3 bands)", f"{WIDE_IMAGE} ({WIDE[0]} × {WIDE[1]}, 3 bands)"]
    )
    page.locator("#image-select").select_option(IMAGE)
    page.locator("#open-image").click()
    expect(page.locator("#status")).to_contain_text("Opened field")
    expect(page.locator("#project-info")).to_contain_text(f"{WIDTH} × {HEIGHT} px · EPSG:32633")
    yield page
    context.close()


# ---- helpers -------------------------------------------------------------------------------------


def view(page: sync_api.Page) -> dict[str, float]:
    """The page's view: ``scale`` (CSS px per image pixel) and the image corner's ``offsetX``/``offsetY``."""
    return page.evaluate("() => window.pointsegLabel.view()")


def screen_of(page: sync_api.Page, row: int, col: int) -> tuple[float, float]:
    """The screen position (CSS px in the canvas) of a pixel's centre, in the page's current view."""
    current = view(page)
    return (
        current["offsetX"] + (col + 0.5) * current["scale"],
        current["offsetY"] + (row + 0.5) * current["scale"],
    )


def click_pixel(page: sync_api.Page, row: int, col: int) -> None:
    x, y = screen_of(page, row, col)
    page.locator("#canvas").click(position={"x": x, "y": y})


def add_class(page: sync_api.Page, name: str, color: str) -> None:
    count = page.locator("#classes li").count()
    page.locator("#class-name").fill(name)
    page.locator("#class-color").fill(color)
    page.locator("#add-class").click()
    expect(page.locator("#classes li")).to_have_count(count + 1)


def expect_counts(page: sync_api.Page, counts: dict[str, int]) -> None:
    for name, count in counts.items():
        expect(page.locator(f'#classes li[data-class="{name}"] .count')).to_have_text(str(count))


def canvas_rgb(
    page: sync_api.Page, x: float, y: float, expected: set[tuple[int, int, int]]
) -> tuple[int, ...]:
    """The colour the canvas shows at CSS position (x, y), once it is one of ``expected`` (or after 10 s)."""
    script = """([x, y]) => {
        const canvas = document.getElementById("canvas");
        const ratio = canvas.width / canvas.clientWidth;
        const [column, row] = [Math.floor(x * ratio), Math.floor(y * ratio)];
        return Array.from(canvas.getContext("2d").getImageData(column, row, 1, 1).data.slice(0, 3));
    }"""
    for _ in range(100):  # the page draws at the next animation frame
        rgb = tuple(page.evaluate(script, [x, y]))
        if rgb in expected:
            break
        page.wait_for_timeout(100)
    return rgb


def api(server: str, path: str) -> Any:
    with urllib.request.urlopen(f"{server}/{path}", timeout=30) as response:
        return json.load(response)


def project_id(page: sync_api.Page) -> str:
    return page.evaluate("() => decodeURIComponent(location.hash.replace('#project=', ''))")


def wait_for_run(page: sync_api.Page, run: int) -> None:
    """Wait until the training finished and run ``run``'s map is shown over the image."""
    expect(page.locator("#canvas")).to_have_attribute("data-map-run", str(run), timeout=TRAIN_TIMEOUT_MS)


# ---- tests ---------------------------------------------------------------------------------------


def test_label_train_look_correct_retrain_export(
    page: sync_api.Page, server: str, workspace: Path, tmp_path: Path
) -> None:
    for name, color in CLASSES.items():
        add_class(page, name, color)
    for row, col in WATER_POINTS:  # the first class is active
        click_pixel(page, row, col)
    expect_counts(page, {"water": 3, "meadow": 0})

    # Too few points of the second class: the server's reason is shown, in words.
    page.locator("#train").click()
    expect(page.locator("#error")).to_have_text(re.compile(r"^Not accepted \(422\): \w.*points"))

    page.locator("#canvas").press("2")  # key 2: the second class
    expect(page.locator('#classes li[data-class="meadow"]')).to_have_class("active")
    for row, col in MEADOW_POINTS:
        click_pixel(page, row, col)
    expect_counts(page, {"water": 3, "meadow": 3})
    x, y = screen_of(page, *MEADOW_POINTS[0])
    meadow = COLORS["meadow"]
    assert canvas_rgb(page, x, y, {meadow}) == meadow  # the dot, in its class colour

    # Undo removes the point added last; undo of a right-click deletion brings the point back.
    click_pixel(page, 20, 70)
    expect_counts(page, {"meadow": 4})
    page.locator("#canvas").press("Control+z")
    expect_counts(page, {"meadow": 3})
    x, y = screen_of(page, *MEADOW_POINTS[1])
    page.locator("#canvas").click(position={"x": x, "y": y}, button="right")
    expect_counts(page, {"meadow": 2})
    page.locator("#canvas").press("Control+z")
    expect_counts(page, {"meadow": 3})
    expect(page.locator("#error")).to_be_empty()

    page.locator("#epochs").fill("2")
    page.locator("#train").click()
    expect(page.locator("#job")).not_to_be_empty()
    wait_for_run(page, 1)
    expect(page.locator("#error")).to_be_empty()
    expect(page.locator("#status")).to_contain_text("Run 1 finished")
    expect(page.locator("#train")).to_have_text("Retrain")

    # The overlay: at full opacity, away from the dots, the canvas shows one of the two class colours.
    legend = page.locator("#legend li")
    expect(legend).to_have_count(2)
    shares = [
        float(text.removesuffix(" %").lstrip("<")) for text in legend.locator(".share").all_inner_texts()
    ]
    assert sum(shares) == pytest.approx(100, abs=0.5)
    page.locator("#opacity").fill("100")
    x, y = screen_of(page, 32, 30)
    class_colors = set(COLORS.values())
    assert canvas_rgb(page, x, y, class_colors) in class_colors
    page.locator("#show-confidence").check()
    expect(page.locator("#canvas")).to_have_attribute("data-confidence-run", "1")

    # Correct and retrain: clicks still work over the map; the retrain starts from the last model.
    page.locator("#canvas").press("1")
    click_pixel(page, 24, 40)
    expect_counts(page, {"water": 4, "meadow": 3})
    page.locator("#train").click()
    wait_for_run(page, 2)
    expect(page.locator("#runs li")).to_have_count(2)
    expect(page.locator("#runs li").nth(1)).to_contain_text("warm start")

    # Export: the points file reads back onto the same pixels, with their classes.
    with page.expect_download() as points_download:
        page.locator("#export-points").click()
    saved = tmp_path / "points.geojson"
    points_download.value.save_as(saved)
    schema = ClassSchema(
        name="clicked",
        classes=tuple(CLASSES),
        colors=tuple(COLORS.values()),
    )
    labels, report = import_points(saved, workspace / IMAGE, schema)
    assert report.kept == report.total == 7
    clicked = {(row, col, 0) for row, col in [*WATER_POINTS, (24, 40)]} | {
        (row, col, 1) for row, col in MEADOW_POINTS
    }
    assert (
        set(zip(labels.rows.tolist(), labels.cols.tolist(), labels.classes.tolist(), strict=True)) == clicked
    )

    page.locator("#export-polygons").check()
    with page.expect_download() as map_download:
        page.locator("#export-map").click()
    map_download.value.save_as(tmp_path / "map.zip")
    with zipfile.ZipFile(tmp_path / "map.zip") as archive:
        suffixes = {Path(name).suffix for name in archive.namelist()}
    assert suffixes >= {".tif", ".qml", ".gpkg"}, suffixes
    with page.expect_download() as checkpoint_download:
        page.locator("#export-checkpoint").click()
    assert checkpoint_download.value.suggested_filename.endswith(".ckpt")
    expect(page.locator("#error")).to_be_empty()

    # The project, its points and runs are on the server, as the page showed them.
    project = api(server, f"api/projects/{project_id(page)}")
    assert project["points_per_class"] == {"water": 4, "meadow": 3}
    assert [run["n"] for run in project["runs"]] == [1, 2]


def test_a_click_after_zoom_and_pan_lands_on_the_pixel_under_it(page: sync_api.Page, server: str) -> None:
    add_class(page, "water", CLASSES["water"])
    size = page.locator("#canvas").evaluate("canvas => [canvas.clientWidth, canvas.clientHeight]")
    width, height = size

    # The whole image fits the canvas, centred.
    scale = min(width / WIDTH, height / HEIGHT)
    offset_x, offset_y = (width - WIDTH * scale) / 2, (height - HEIGHT * scale) / 2
    assert view(page) == pytest.approx({"scale": scale, "offsetX": offset_x, "offsetY": offset_y})

    # Zoom in twice (each x2 around the canvas centre), then drag the image 37 px left and 23 px down.
    page.locator("#zoom-in").click()
    page.locator("#zoom-in").click()
    offset_x = width / 2 - (width / 2 - offset_x) * 4
    offset_y = height / 2 - (height / 2 - offset_y) * 4
    scale *= 4
    box = page.locator("#canvas").bounding_box()
    assert box is not None
    start = (box["x"] + 200, box["y"] + 150)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(start[0] - 20, start[1] + 10, steps=3)
    page.mouse.move(start[0] - 37, start[1] + 23, steps=3)
    page.mouse.up()
    offset_x, offset_y = offset_x - 37, offset_y + 23
    assert view(page) == pytest.approx({"scale": scale, "offsetX": offset_x, "offsetY": offset_y})
    expect(page.locator("#classes li .count")).to_have_text("0")  # a drag adds no point

    # A click at a whole screen position in pixel (row 37, col 51), 0.7 of the way to its far corner (a
    # rounding of image coordinates would give the next pixel; a rounding of the mouse position would not):
    # the pixel under it, worked out here, is the one the server gets.
    sx, sy = round(offset_x + 51.7 * scale), round(offset_y + 37.7 * scale)
    row, col = int((sy - offset_y) // scale), int((sx - offset_x) // scale)
    assert (row, col) == (37, 51) and 0 < sx < width and 0 < sy < height
    page.locator("#canvas").click(position={"x": sx, "y": sy})
    expect(page.locator("#classes li .count")).to_have_text("1")
    (feature,) = api(server, f"api/projects/{project_id(page)}/points")["features"]
    assert (feature["properties"]["row"], feature["properties"]["col"]) == (row, col)
    assert feature["geometry"]["coordinates"] == pytest.approx(list(TRANSFORM @ (col + 0.5, row + 0.5)))

    # The cursor shows that pixel, and the map coordinates under it.
    page.locator("#canvas").hover(position={"x": sx, "y": sy})
    expect(page.locator("#cursor")).to_contain_text(f"row {row}, col {col} · x ")
    shown = re.fullmatch(
        r"row \d+, col \d+ · x ([\d.]+), y ([\d.]+) \(EPSG:32633\)", page.locator("#cursor").inner_text()
    )
    assert shown is not None
    map_x, map_y = TRANSFORM @ ((sx - offset_x) / scale, (sy - offset_y) / scale)
    assert (float(shown[1]), float(shown[2])) == pytest.approx((map_x, map_y), abs=10 / scale)  # 1 CSS px

    # The wheel zooms around the cursor: the image point under it stays there.
    under = ((sx - offset_x) / scale, (sy - offset_y) / scale)
    page.mouse.move(box["x"] + sx, box["y"] + sy)
    page.mouse.wheel(0, -200)
    page.wait_for_function(f"() => window.pointsegLabel.view().scale > {scale}")
    after = view(page)
    assert (
        (sx - after["offsetX"]) / after["scale"],
        (sy - after["offsetY"]) / after["scale"],
    ) == pytest.approx(under, abs=1 / scale)  # within a CSS px of where it was

    # Screen -> pixel -> screen round trip of the page's own mapping, at the current view.
    round_trip = page.evaluate(
        """([x, y]) => {
            const api = window.pointsegLabel, view = api.view();
            const pixel = api.screenToPixel(view, x, y);
            const back = api.pixelToScreen(view, pixel.x, pixel.y);
            return [pixel.row, pixel.col, back.sx, back.sy];
        }""",
        [sx, sy],
    )
    assert round_trip == pytest.approx([row, col, sx, sy])


def test_api_errors_are_shown_in_words(page: sync_api.Page, workspace: Path) -> None:
    add_class(page, "water", CLASSES["water"])
    page.locator("#canvas").press("1")
    click_pixel(page, 5, 5)
    expect_counts(page, {"water": 1})

    # Removing a class that has points: the server refuses (409) and the page says why.
    page.locator('#classes li[data-class="water"] .class-remove').click()
    expect(page.locator("#error")).to_contain_text("(409)")
    expect(page.locator("#classes li")).to_have_count(1)

    # A class name the server refuses (a duplicate, case-insensitive): its detail is shown.
    page.locator("#class-name").fill("Water")
    page.locator("#add-class").click()
    expect(page.locator("#error")).to_have_text(re.compile(r"^Not accepted \(422\): \w"))
    expect(page.locator("#classes li")).to_have_count(1)

    # The project folder deleted underneath: the next click says the project is not found.
    shutil.rmtree(workspace / ".pointseg" / "projects" / project_id(page))
    click_pixel(page, 9, 9)
    expect(page.locator("#error")).to_have_text(
        re.compile(r"^(Not found \(404\)|This project is gone \(410\)): \w")
    )
    expect_counts(page, {"water": 1})


def test_zoomed_in_the_page_asks_for_a_sharper_window(page: sync_api.Page) -> None:
    page.locator("#image-select").select_option(WIDE_IMAGE)
    with page.expect_response(lambda response: "/view.png" in response.url) as whole:
        page.locator("#open-image").click()
    expect(page.locator("#status")).to_contain_text("Opened wide")
    assert whole.value.ok
    assert parse_qs(urlsplit(whole.value.url).query) == {
        "x0": ["0"],
        "y0": ["0"],
        "x1": [str(WIDE[0])],
        "y1": [str(WIDE[1])],
        "width": ["2048"],
    }

    # Zoomed in x8, the whole image's 2048 px are too coarse: the visible window comes at screen resolution.
    with page.expect_response(lambda response: "/view.png" in response.url) as sharper:
        for _ in range(3):
            page.locator("#zoom-in").click()
    assert sharper.value.ok
    current = view(page)
    width, height = page.locator("#canvas").evaluate("canvas => [canvas.clientWidth, canvas.clientHeight]")
    x0 = max(0, math.floor(-current["offsetX"] / current["scale"]))
    x1 = min(WIDE[0], math.ceil((width - current["offsetX"]) / current["scale"]))
    y0 = max(0, math.floor(-current["offsetY"] / current["scale"]))
    y1 = min(WIDE[1], math.ceil((height - current["offsetY"]) / current["scale"]))
    assert 0 < x0 < x1 < WIDE[0] and (y0, y1) == (0, WIDE[1])
    assert parse_qs(urlsplit(sharper.value.url).query) == {
        "x0": [str(x0)],
        "y0": [str(y0)],
        "x1": [str(x1)],
        "y1": [str(y1)],
        "width": [str(x1 - x0)],
    }  # every pixel of the window: the view shows more than one screen pixel per image pixel
    expect(page.locator("#error")).to_be_empty()


def test_an_uploaded_image_starts_a_project(page: sync_api.Page, tmp_path: Path) -> None:
    pixels = np.full((3, 30, 50), 120, dtype=np.uint8)
    page.locator("#upload-input").set_input_files(write_raster(tmp_path / "orchard.png", pixels))
    expect(page.locator("#status")).to_contain_text("Opened orchard")
    expect(page.locator("#project-info")).to_contain_text("orchard · ")
    expect(page.locator("#project-info")).to_contain_text("50 × 30 px")
    expect(page.locator("#projects button", has_text="orchard")).to_have_class("current")

    # A text file named .png, dropped on the viewer: the server's 415, in words; the open project stays.
    transfer = page.evaluate_handle(
        """() => {
            const transfer = new DataTransfer();
            const text = "these are field notes, not an image";
            transfer.items.add(new File([text], "notes.png", { type: "image/png" }));
            return transfer;
        }"""
    )
    page.locator("#viewport").dispatch_event("drop", {"dataTransfer": transfer})
    expect(page.locator("#error")).to_contain_text("This file is not an image (415)")
    expect(page.locator("#project-info")).to_contain_text("orchard · ")


def test_a_class_set_then_move_delete_and_undo_a_point(page: sync_api.Page, server: str) -> None:
    page.locator("#class-set").select_option(label=f"deepglobe ({deepglobe.SCHEMA.num_classes} classes)")
    page.locator("#load-class-set").click()
    expect(page.locator("#classes li")).to_have_count(deepglobe.SCHEMA.num_classes)
    second = deepglobe.SCHEMA.classes[1]
    page.locator("#canvas").press("2")
    expect(page.locator("#classes li.active")).to_have_attribute("data-class", second)
    click_pixel(page, 20, 30)
    expect_counts(page, {second: 1})

    def where() -> tuple[int, int]:
        (feature,) = api(server, f"api/projects/{project_id(page)}/points")["features"]
        return feature["properties"]["row"], feature["properties"]["col"]

    # Drag the point to another pixel: it moves there (and no point is added).
    box = page.locator("#canvas").bounding_box()
    assert box is not None
    start, end = screen_of(page, 20, 30), screen_of(page, 25, 40)
    page.mouse.move(box["x"] + start[0], box["y"] + start[1])
    page.mouse.down()
    page.mouse.move(box["x"] + end[0], box["y"] + end[1], steps=5)
    page.mouse.up()
    expect(page.locator("#status")).to_contain_text("Moved the point to row 25, col 40")
    assert where() == (25, 40)
    expect_counts(page, {second: 1})
    page.locator("#canvas").press("Control+z")
    expect(page.locator("#status")).to_contain_text("the point is back where it was")
    assert where() == (20, 30)

    # Select it with a click, remove it with Delete; undo brings it back.
    click_pixel(page, 20, 30)
    page.locator("#canvas").press("Delete")
    expect_counts(page, {second: 0})
    page.locator("#canvas").press("Control+z")
    expect_counts(page, {second: 1})
    assert where() == (20, 30)
    expect(page.locator("#error")).to_be_empty()


def test_progress_shows_the_queue_the_epochs_and_a_cancel(page: sync_api.Page) -> None:
    """The training progress as the server reports it (answers made up here, so no training runs)."""
    job: dict[str, Any] = {
        "id": "0123456789ab",
        "project": project_id(page),
        "state": "queued",
        "position": 2,
        "epoch": 0,
        "epochs": 10,
        "loss": None,
        "val_point_accuracy": None,
        "elapsed_s": 0,
        "eta_s": None,
        "message": "",
        "run": None,
    }

    def train(route: sync_api.Route) -> None:
        route.fulfill(status=202, json=job)

    def jobs(route: sync_api.Route) -> None:
        if route.request.method == "DELETE":
            job.update(state="cancelled", position=0)
            route.fulfill(status=202, json=job)
        else:
            route.fulfill(json=job)

    page.route("**/api/projects/*/train", train)
    page.route("**/api/jobs/*", jobs)
    page.locator("#train").click()
    expect(page.locator("#job")).to_have_text("Waiting: 2nd in queue.")
    expect(page.locator("#train")).to_be_disabled()
    expect(page.locator("#progress")).to_be_visible()

    job.update(state="running", position=0, epoch=3, loss=0.4321, val_point_accuracy=0.875, eta_s=42)
    expect(page.locator("#job")).to_have_text(
        "Epoch 3 of 10 · loss 0.432 · held-out point accuracy 87.5 % · about 42 s left."
    )
    assert page.locator("#progress").evaluate("bar => [bar.value, bar.max]") == [3, 10]

    page.locator("#cancel").click()
    expect(page.locator("#job")).to_have_text("Cancelled.")
    expect(page.locator("#status")).to_contain_text("Training cancelled")
    expect(page.locator("#train")).to_be_enabled()
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#error")).to_be_empty()
