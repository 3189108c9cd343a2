import csv
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

from fake_data import block_labels, image_for, write_raster
from pointseg.checkpoint import read_checkpoint
from pointseg.errors import PointsegError
from pointseg.gis_outputs import read_class_names_tag
from pointseg.mapping import MapSettings, classes_from_points, map_images
from pointseg.training import Callback, L

CRS_UTM = CRS.from_epsg(32633)
TRANSFORM = Affine(10, 0, 500000, 0, -10, 5000000)
SPELLINGS = {0: ["Water", " water "], 1: ["FOREST", "forest"], 2: ["Urban ", "urban"]}
TINY = MapSettings(
    class_field="landcover",
    epochs=1,
    crop_size=64,
    crops_per_image=2,
    batch_size=2,
    tile=64,
    block_size=8,
    polygons=True,
    min_area=2,
    encoder="resnet18",
    weights=None,
    norm="group",
)

Cli = Callable[..., tuple[int, str, str]]  # the `cli` fixture of tests/conftest.py


def scene(tmp_path: Path, step: int = 6) -> tuple[Path, Path]:
    """A georeferenced 64x64 GeoTIFF without a mask, and a GeoJSON of points on it in EPSG:4326."""
    labels = block_labels(64, 64, 3, seed=2)
    colors = np.array([(30, 60, 200), (30, 150, 40), (180, 50, 50)])
    image = write_raster(
        tmp_path / "images" / "scene.tif", image_for(labels, colors, seed=2), CRS_UTM, TRANSFORM
    )
    rows, cols = (
        a.ravel() for a in np.meshgrid(np.arange(3, 64, step), np.arange(3, 64, step), indexing="ij")
    )
    x, y = 500000 + 10 * (cols + 0.5), 5000000 - 10 * (rows + 0.5)
    lon, lat = warp_transform(CRS_UTM, CRS.from_epsg(4326), x, y)
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [lo, la]},
            "properties": {"landcover": SPELLINGS[int(labels[r, c])][i % 2], "id": i},
        }
        for i, (lo, la, r, c) in enumerate(zip(lon, lat, rows, cols, strict=True))
    ]
    points = tmp_path / "clicks.geojson"
    points.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return image, points


@pytest.mark.integration
def test_map_trains_on_points_alone_and_writes_gis_ready_maps(tmp_path: Path) -> None:
    image, points = scene(tmp_path)
    out = tmp_path / "map"
    report = map_images([image], points, out, TINY, progress=False)
    # one class per spelling group, first spelling kept and trimmed, in a stable (alphabetical) order
    assert [name.casefold() for name in report.classes] == ["forest", "urban", "water"]
    assert all(name in {s.strip() for group in SPELLINGS.values() for s in group} for name in report.classes)
    class_map = out / "scene_classes.tif"
    with rasterio.open(image) as source, rasterio.open(class_map) as result:
        assert (result.crs, result.transform, result.width, result.height) == (
            source.crs,
            source.transform,
            source.width,
            source.height,
        )
        assert result.count == 1 and result.dtypes[0] == "uint8"
    assert read_class_names_tag(class_map) == report.classes
    side_file = ET.parse(f"{class_map}.aux.xml").getroot()
    assert [c.text for c in side_file.iter("Category")] == report.classes
    style = ET.parse(out / "scene_classes.qml").getroot()
    entries = {e.get("label"): e.get("color") for e in style.iter("paletteEntry")}
    assert list(entries) == report.classes and all(c and c.startswith("#") for c in entries.values())
    assert (out / "scene_classes.gpkg").is_file()
    assert (out / report.checkpoint).is_file()
    assert not (out / "run" / "checkpoints" / "best.ckpt").exists()  # chosen on held-out points: not kept
    saved = json.loads((out / "report.json").read_text())
    assert set(saved["held_out"]) >= {"val_point_accuracy", "val_point_miou", "block_size_px"}
    assert sum(c["held_out"] for c in saved["points_per_class"].values()) == saved["held_out"]["points"] > 0
    with (out / "run" / "metrics.csv").open() as file:
        columns = set(next(csv.reader(file)))
    assert "val_point_miou" in columns and "val_point_accuracy" in columns
    assert not any(name.startswith("val_miou") for name in columns)
    assert not list(tmp_path.glob(".map.*"))  # no staging folder left


def test_classes_from_points_ignore_case_and_spaces(tmp_path: Path) -> None:
    _, points = scene(tmp_path)
    classes = classes_from_points([points], "LandCover").classes
    assert [name.casefold() for name in classes] == ["forest", "urban", "water"]
    with pytest.raises(PointsegError, match="no point has a 'class' value"):
        classes_from_points([points], "class")


def rewrite(points: Path, change) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(points.read_text())
    data["features"] = change(data["features"])
    points.write_text(json.dumps(data))


def test_a_class_with_one_point_is_an_error_with_counts_and_nothing_is_written(tmp_path: Path) -> None:
    image, points = scene(tmp_path)
    lon, lat = json.loads(points.read_text())["features"][0]["geometry"]["coordinates"]
    bare = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon + 2e-4, lat]}}
    rewrite(points, lambda f: [*f, {**bare, "properties": {"landcover": "bare"}}])
    with pytest.raises(PointsegError, match=r"bare have fewer than 2 points.*bare 1"):
        map_images([image], points, tmp_path / "map", TINY, progress=False)
    assert not (tmp_path / "map").exists()
    assert {p.name for p in tmp_path.iterdir()} == {"images", "clicks.geojson"}


def test_one_class_is_an_error(tmp_path: Path) -> None:
    image, points = scene(tmp_path)
    rewrite(points, lambda f: [{**x, "properties": {"landcover": "water"}} for x in f])
    with pytest.raises(PointsegError, match="fewer than 2 classes"):
        map_images([image], points, tmp_path / "map", TINY, progress=False)


def test_an_image_without_points_is_named(tmp_path: Path) -> None:
    image, points = scene(tmp_path)
    other = write_raster(
        tmp_path / "images" / "empty.tif",
        np.zeros((3, 64, 64), np.uint8),
        CRS_UTM,
        Affine(10, 0, 0, 0, -10, 0),
    )
    with pytest.raises(PointsegError, match=r"no points on 1 image\(s\): .*empty.tif"):
        map_images([image, other], points, tmp_path / "map", TINY, progress=False)


def test_a_points_folder_must_hold_a_file_per_image(tmp_path: Path) -> None:
    image, _ = scene(tmp_path)
    (tmp_path / "points").mkdir()
    with pytest.raises(PointsegError, match=r"no points for 1 image\(s\): .*scene.tif"):
        map_images([image], tmp_path / "points", tmp_path / "map", TINY, progress=False)


def test_points_outside_the_image_are_reported_as_points_import_does(tmp_path: Path) -> None:
    image, points = scene(tmp_path)
    rewrite(points, lambda f: [*f, {**f[0], "geometry": {"type": "Point", "coordinates": [0.0, 0.0]}}])
    with pytest.raises(PointsegError, match="outside the image"):
        map_images([image], points, tmp_path / "map", TINY, progress=False)


def test_nothing_to_hold_out_is_an_error(tmp_path: Path) -> None:
    image, points = scene(tmp_path, step=30)
    with pytest.raises(PointsegError, match="nothing left for the held-out check"):
        map_images([image], points, tmp_path / "map", MapSettings(**{**TINY.__dict__, "holdout": 0.01}))


def test_no_point_left_to_train_on_is_an_error(tmp_path: Path) -> None:
    image, points = scene(tmp_path)
    one_block = MapSettings(**{**TINY.__dict__, "block_size": 128})  # the whole 64 px image is one block
    with pytest.raises(
        PointsegError, match=r"no point left to train on: 1 image\(s\) with \d+ points .*--holdout"
    ):
        map_images([image], points, tmp_path / "map", one_block, progress=False)
    assert not (tmp_path / "map").exists()


def test_cli_map_reports_bad_input_as_one_error_line(tmp_path: Path, cli: Cli) -> None:
    image, points = scene(tmp_path)
    code, _, err = cli("map", image, "--points", points, "--out", tmp_path / "map")  # class field 'class'
    assert code == 1 and err.startswith("error:") and "--class-field" in err
    assert not (tmp_path / "map").exists()


@pytest.mark.slow
@pytest.mark.integration
def test_readme_command_on_the_bundled_sample(tmp_path: Path, cli: Cli) -> None:
    sample = Path(__file__).resolve().parents[1] / "examples" / "dubai"
    code, out, err = cli(
        "map",
        sample / "images",
        "--points",
        sample / "points",
        "--out",
        tmp_path / "map",
        "--epochs",
        "1",
        "--no-progress",
    )
    assert code == 0, err
    assert "val_point_accuracy" in out
    assert len(list((tmp_path / "map").glob("*_classes.tif"))) == len(list((sample / "images").iterdir()))


@pytest.mark.integration
def test_cli_map_prints_points_per_class_the_held_out_score_and_next_commands(
    tmp_path: Path, cli: Cli
) -> None:
    image, points = scene(tmp_path)
    out = tmp_path / "map"
    code, printed, err = cli(
        "map",
        image,
        "--points",
        points,
        "--out",
        out,
        "--class-field",
        "LANDCOVER",
        "--epochs",
        "1",
        "--block-size",
        "8",
        "--encoder",
        "resnet18",
        "--weights",
        "none",
        "--norm",
        "group",
        "--crop-sampling",
        "points",
        "--no-progress",
    )
    assert code == 0, err
    assert yaml.safe_load((out / "run" / "config.yaml").read_text())["data"]["crop_sampling"] == "points"
    assert "held out" in printed and "val_point_accuracy" in printed and "val_point_miou" in printed
    assert f"map: {out / 'scene_classes.tif'}" in printed
    assert f"pointseg serve --checkpoint {out / 'run' / 'checkpoints' / 'last.ckpt'}" in printed
    assert "val_miou" not in printed.replace("val_point_miou", "")


class FirstWeights(Callback):
    """Keeps the network's weights as training starts, and counts the epochs."""

    def __init__(self) -> None:
        self.weights: dict[str, torch.Tensor] = {}
        self.epochs = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs += 1


@pytest.mark.integration
def test_map_takes_callbacks_writes_the_confidence_and_warm_starts_from_a_last_checkpoint(
    tmp_path: Path,
) -> None:
    image, points = scene(tmp_path)
    first = FirstWeights()
    report = map_images([image], points, tmp_path / "first", TINY, progress=False, callbacks=[first])
    assert first.epochs == TINY.epochs
    assert "scene_confidence.tif" in report.maps
    with rasterio.open(tmp_path / "first" / "scene_confidence.tif") as confidence:
        values = confidence.read(1)
        assert confidence.dtypes[0] == "float32" and values.shape == (64, 64)
    assert np.nanmin(values) >= 1 / 3 - 1e-6 and np.nanmax(values) <= 1 + 1e-6  # top of 3 classes
    last = tmp_path / "first" / report.checkpoint
    warm = FirstWeights()
    settings = MapSettings(**{**TINY.__dict__, "weights": str(last), "seed": 1})
    map_images([image], points, tmp_path / "second", settings, progress=False, callbacks=[warm])
    trained = read_checkpoint(last)["state_dict"]
    assert warm.weights.keys() == trained.keys()
    assert all(torch.equal(warm.weights[key], trained[key]) for key in trained)
    assert not all(torch.equal(first.weights[key], trained[key]) for key in trained)
