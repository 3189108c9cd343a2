import json

import numpy as np
import pytest
import rasterio

from fake_data import (
    PL1992,
    UTM,
    rgb_mask,
    write_deepglobe,
    write_folder_dataset,
    write_landcoverai,
    write_raster,
)
from pointseg.datasets import deepglobe, discover_dataset
from pointseg.errors import PointsegError
from pointseg.point_maps import PointSummary, georeferencing, import_point_file, simulate_dataset_points
from pointseg.points import PointLabels, PointProtocol
from pointseg.raster import read_mask
from pointseg.schema import IGNORE_INDEX

PROTOCOL = PointProtocol("density", density=0.05, seed=3)


def read_label_map(path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read(1)


def test_simulate_writes_georeferenced_maps_geojson_and_summary(tmp_path) -> None:
    root, schema_path = write_folder_dataset(tmp_path / "data", bands=4, dtype="uint16")
    discovery = discover_dataset("folder", root, schema_path)
    out = tmp_path / "points"
    out.mkdir()
    summary = simulate_dataset_points(discovery, PROTOCOL, out)
    assert sorted(p.name for p in out.iterdir()) == [
        "scene_0.geojson",
        "scene_0.tif",
        "scene_1.geojson",
        "scene_1.tif",
        "summary.json",
    ]
    totals = np.zeros(3, dtype=np.int64)
    for i, ref in enumerate(discovery.refs):
        with rasterio.open(out / f"{ref.id}.tif") as labels, rasterio.open(ref.image_path) as image:
            assert labels.crs == image.crs == UTM
            assert labels.transform == image.transform
            assert (labels.width, labels.height) == (40, 40)
            label_map = labels.read(1)
        mask = read_mask(ref.mask_path, discovery.schema)
        labelled = label_map != IGNORE_INDEX
        assert labelled.sum() == round(0.05 * (40 * 40 - 4)) == 80
        np.testing.assert_array_equal(label_map[labelled], mask[labelled])  # each point on its class
        totals += np.bincount(label_map[labelled], minlength=3)
        features = json.loads((out / f"{ref.id}.geojson").read_text())["features"]
        assert len(features) == 80
        rows, cols = np.nonzero(labelled)
        x, y = features[0]["geometry"]["coordinates"]  # the first point in row-major order, pixel centre
        assert (x, y) == (300_000 + 10 * (cols[0] + 0.5), 5_000_000 + 1000 * i - 10 * (rows[0] + 0.5))
        assert features[0]["properties"] == {
            "class": discovery.schema.classes[label_map[rows[0], cols[0]]],
            "class_index": int(label_map[rows[0], cols[0]]),
        }
    written = json.loads((out / "summary.json").read_text())
    assert written == summary.to_dict()
    assert written["points"] == 160
    assert written["images"] == 2
    assert written["points_per_image"] == {"scene_0": 80, "scene_1": 80}
    assert list(written["points_per_class"].values()) == totals.tolist()
    assert written["labelled_fraction_of_valid_pixels"] == 160 / (2 * 1596)
    assert (written["strategy"], written["density"], written["seed"]) == ("density", 0.05, 3)


def test_simulate_on_non_georeferenced_images_writes_png_and_pixel_geojson(tmp_path) -> None:
    discovery = discover_dataset("deepglobe", write_deepglobe(tmp_path / "data", count=1, size=32))
    out = tmp_path / "points"
    out.mkdir()
    simulate_dataset_points(discovery, PROTOCOL, out)
    assert sorted(p.name for p in out.iterdir()) == ["100_sat.geojson", "100_sat.png", "summary.json"]
    assert read_label_map(out / "100_sat.png").shape == (32, 32)
    collection = json.loads((out / "100_sat.geojson").read_text())
    assert collection["crs"] is None
    assert collection["pointseg"] == {"coordinates": "pixel"}


def test_landcoverai_tiles_get_their_window_georeferencing(tmp_path) -> None:
    root = write_landcoverai(tmp_path / "data", sizes=((600, 1030),))
    discovery = discover_dataset("landcoverai", root)
    assert georeferencing(discovery.refs[1]) == (
        PL1992,
        rasterio.Affine(0.25, 0, 500128.0, 0, -0.25, 600000.0),
    )
    assert georeferencing(discovery.refs[1].image_path)[1] == rasterio.Affine(
        0.25, 0, 500000.0, 0, -0.25, 600000.0
    )
    out = tmp_path / "points"
    out.mkdir()
    simulate_dataset_points(discovery, PointProtocol("density", density=0.001), out)
    with rasterio.open(out / "M-33-0_1.tif") as labels:
        assert (labels.width, labels.height) == (512, 512)
        assert labels.crs == PL1992
        assert labels.transform == rasterio.Affine(0.25, 0, 500128.0, 0, -0.25, 600000.0)
        assert (labels.read(1) != IGNORE_INDEX).sum() == round(0.001 * 512 * 512)


def test_simulate_refuses_bad_masks(tmp_path) -> None:
    root = write_deepglobe(tmp_path / "data", count=2, size=32)
    out = tmp_path / "points"
    out.mkdir()
    write_raster(root / "101_mask.png", rgb_mask(np.zeros((32, 40), dtype=np.uint8), deepglobe.SCHEMA))
    with pytest.raises(
        PointsegError, match=r"101_mask.png: mask is 40x32 px, but image .*101_sat.jpg is 32x32 px"
    ):
        simulate_dataset_points(discover_dataset("deepglobe", root), PROTOCOL, out)
    (root / "101_sat.jpg").unlink()
    with pytest.raises(
        PointsegError, match=r"(?s)1 problem\(s\) in the DeepGlobe dataset.*101_mask.png has no image"
    ):
        simulate_dataset_points(discover_dataset("deepglobe", root), PROTOCOL, out)


def test_import_reproduces_the_simulated_label_map(tmp_path) -> None:
    root, schema_path = write_folder_dataset(tmp_path / "data", bands=3, dtype="uint8")
    discovery = discover_dataset("folder", root, schema_path)
    simulated = tmp_path / "simulated"
    simulated.mkdir()
    simulate_dataset_points(discovery, PROTOCOL, simulated)
    imported = tmp_path / "imported"
    imported.mkdir()
    summary, report = import_point_file(
        simulated / "scene_1.geojson", discovery.refs[1].image_path, discovery.schema, imported
    )
    assert (report.total, report.kept) == (80, 80)
    assert (imported / "scene_1.tif").read_bytes() == (simulated / "scene_1.tif").read_bytes()
    assert summary.to_dict()["points"] == 80
    assert summary.to_dict()["import"] == "kept 80 of 80 points"


def test_point_summary_totals() -> None:
    summary = PointSummary(("a", "b"), {"dataset": "toy"}, np.zeros(2, dtype=np.int64))
    summary.add("x", PointLabels([0, 1], [0, 0], [1, 1], 2, 2), valid_pixels=4)
    summary.add("y", PointLabels([0], [1], [0], 2, 2), valid_pixels=2)
    assert summary.to_dict() == {
        "dataset": "toy",
        "images": 2,
        "points": 3,
        "points_per_class": {"a": 1, "b": 2},
        "labelled_fraction_of_valid_pixels": 0.5,
        "points_per_image": {"x": 2, "y": 1},
    }
