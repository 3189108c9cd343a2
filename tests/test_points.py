import json
import struct
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform
from scipy import ndimage

from pointseg import points as points_module
from pointseg.errors import PointsegError
from pointseg.points import (
    PointLabels,
    PointProtocol,
    import_points,
    read_point_classes,
    sample_density,
    sample_per_class,
    sample_per_region,
    simulate_points,
    write_points_geojson,
)
from pointseg.schema import IGNORE_INDEX, ClassSchema

SCHEMA = ClassSchema(
    name="toy", classes=("water", "forest", "urban"), colors=((0, 0, 255), (0, 255, 0), (255, 0, 0))
)
UTM = CRS.from_epsg(32633)
ORIGIN = (500_000.0, 4_000_000.0)  # top-left corner of the test images, in UTM 33N metres
PIXEL_SIZE = 10.0


def random_mask(height: int = 40, width: int = 50, seed: int = 0) -> np.ndarray:
    """Blobs of classes 0..2 with about a fifth of the pixels ignored."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random((height, width)), 2)
    mask = np.digitize(noise, np.quantile(noise, [1 / 3, 2 / 3])).astype(np.uint8)
    mask[rng.random((height, width)) < 0.2] = IGNORE_INDEX
    return mask


def grid(origin: tuple[float, float]) -> Affine:
    """North-up transform with PIXEL_SIZE pixels and ``origin`` as the top-left corner."""
    return Affine(PIXEL_SIZE, 0.0, origin[0], 0.0, -PIXEL_SIZE, origin[1])


def write_image(path: Path, height: int, width: int, crs: CRS | None = UTM) -> Path:
    """A one-band uint8 image: a GeoTIFF in ``crs`` at ORIGIN, or a PNG without a CRS."""
    profile = {"count": 1, "dtype": "uint8", "height": height, "width": width}
    if crs is None:
        profile["driver"] = "PNG"
    else:
        profile.update(driver="GTiff", crs=crs, transform=grid(ORIGIN))
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(np.zeros((1, height, width), dtype=np.uint8))
    return path


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# PointLabels


def test_point_labels_are_sorted_row_major_and_round_trip_through_a_label_map():
    points = PointLabels(np.array([3, 0, 3, 1]), np.array([1, 4, 0, 2]), np.array([2, 0, 1, 1]), 5, 6)
    assert points.rows.tolist() == [0, 1, 3, 3]
    assert points.cols.tolist() == [4, 2, 0, 1]
    assert points.classes.tolist() == [0, 1, 1, 2]
    label_map = points.to_label_map()
    assert label_map.shape == (5, 6) and label_map.dtype == np.uint8
    assert (label_map != IGNORE_INDEX).sum() == 4
    assert label_map[3, 1] == 2 and label_map[0, 4] == 0 and label_map[0, 0] == IGNORE_INDEX
    assert PointLabels.from_label_map(label_map) == points
    assert len(points) == 4


@pytest.mark.parametrize(
    ("rows", "cols"),
    [([0, 0], [1, 1]), ([5], [0]), ([0], [-1])],
    ids=["same pixel twice", "row past the image", "negative column"],
)
def test_point_labels_reject_impossible_points(rows, cols):
    with pytest.raises(ValueError):
        PointLabels(np.array(rows), np.array(cols), np.zeros(len(rows), dtype=np.int64), 5, 5)


def test_crop_keeps_points_inside_the_window_shifted_even_past_the_edge():
    points = PointLabels(np.array([0, 2, 4]), np.array([0, 3, 4]), np.array([0, 1, 2]), 5, 5)
    window = points.crop(2, 2, 5, 5)  # reaches 2 px past the bottom and right edges
    assert (window.height, window.width) == (5, 5)
    assert window.rows.tolist() == [0, 2] and window.cols.tolist() == [1, 2]
    assert window.classes.tolist() == [1, 2]
    before_start = points.crop(-1, -1, 3, 3)
    assert before_start.rows.tolist() == [1] and before_start.cols.tolist() == [1]


def test_counts_per_class():
    points = PointLabels(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), np.array([2, 0, 2, 2]), 3, 3)
    counts = points.counts_per_class(4)
    assert counts.dtype == np.int64
    assert counts.tolist() == [1, 0, 3, 0]


# Simulation


def test_sample_per_class_takes_n_of_each_class_or_all_of_a_small_class():
    mask = np.full((20, 20), IGNORE_INDEX, dtype=np.uint8)
    mask[:10] = 0  # 200 px
    mask[10:13, :10] = 1  # 30 px
    mask[15, 3:6] = 2  # 3 px
    points = sample_per_class(mask, 10, np.random.default_rng(0))
    assert points.counts_per_class(3).tolist() == [10, 10, 3]
    small = points.classes == 2
    assert points.rows[small].tolist() == [15, 15, 15] and points.cols[small].tolist() == [3, 4, 5]


def test_sample_density_labels_the_asked_fraction_of_valid_pixels():
    mask = np.zeros((200, 300), dtype=np.uint8)
    mask[:, :75] = IGNORE_INDEX
    mask[100:, 150:] = 1
    n_valid = 200 * 225
    points = sample_density(mask, 0.013, np.random.default_rng(0))
    assert len(points) == round(0.013 * n_valid) == 585
    assert abs(len(points) / n_valid - 0.013) <= 0.0005
    assert points.cols.min() >= 75


@pytest.mark.parametrize(
    "protocol",
    [
        PointProtocol("density", density=0.05),
        PointProtocol("per-class", per_class=7),
        PointProtocol("per-region", min_area=5),
    ],
    ids=lambda p: p.strategy,
)
def test_simulated_points_lie_on_pixels_of_their_class_never_on_ignored(protocol):
    mask = random_mask()
    points = simulate_points(mask, protocol, "tile_1")
    assert len(points) > 0
    assert np.array_equal(mask[points.rows, points.cols], points.classes)
    assert not np.any(points.classes == IGNORE_INDEX)
    assert (points.height, points.width) == mask.shape


@pytest.mark.parametrize("strategy", ["density", "per-class"])
def test_simulation_is_reproducible_per_seed_and_image(strategy):
    mask = random_mask()
    protocol = PointProtocol(strategy, density=0.05, per_class=5)
    first = simulate_points(mask, protocol, "tile_1")
    assert simulate_points(mask, PointProtocol(strategy, density=0.05, per_class=5), "tile_1") == first
    other_seed = PointProtocol(strategy, density=0.05, per_class=5, seed=1)
    assert simulate_points(mask, other_seed, "tile_1") != first
    assert simulate_points(mask, protocol, "tile_2") != first


def test_sample_per_region_puts_one_point_at_the_centre_of_each_large_region():
    mask = np.full((30, 40), IGNORE_INDEX, dtype=np.uint8)
    mask[2:9, 2:9] = 0  # 7x7 square, centre (5, 5)
    mask[10:15, 20:25] = 1  # 5x5 square, centre (12, 22)
    mask[0:5, 35:40] = 1  # 5x5 square in the top-right corner: the image edge is border, centre (2, 37)
    mask[20:22, 30:32] = 2  # 2x2 blob, below min_area
    mask[20:23, 0:3] = 0  # two 3x3 squares touching only at a corner: two 4-connected regions
    mask[23:26, 3:6] = 0
    points = sample_per_region(mask, min_area=9)
    assert list(zip(points.rows.tolist(), points.cols.tolist(), points.classes.tolist(), strict=True)) == [
        (2, 37, 1),
        (5, 5, 0),
        (12, 22, 1),
        (21, 1, 0),
        (24, 4, 0),
    ]
    assert len(sample_per_region(mask, min_area=4)) == 6  # now the blob counts too
    assert len(sample_per_region(mask, min_area=26)) == 1  # only the 7x7 square


def test_sample_per_region_breaks_ties_by_row_major_order():
    mask = np.full((6, 8), IGNORE_INDEX, dtype=np.uint8)
    mask[1:3, 1:7] = 0  # a 2x6 bar: every pixel is 1 px from the border
    points = sample_per_region(mask, min_area=1)
    assert (points.rows.tolist(), points.cols.tolist()) == ([1], [1])


def test_sample_per_region_whole_image_transform_gives_the_same_points(monkeypatch):
    mask = random_mask(60, 70, seed=3)
    monkeypatch.setattr(points_module, "_REGION_COST_PX", 0)  # box by box
    by_box = sample_per_region(mask, min_area=3)
    monkeypatch.setattr(points_module, "_REGION_COST_PX", 10**9)  # one transform per class
    by_image = sample_per_region(mask, min_area=3)
    assert len(by_box) > 20
    assert by_image == by_box


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"density": 0}, "density"),
        ({"density": 1.5}, "density"),
        ({"per_class": 0}, "per_class"),
        ({"min_area": 0}, "min_area"),
        ({"seed": -1}, "seed"),
        ({"strategy": "grid"}, "strategy"),
    ],
)
def test_point_protocol_rejects_bad_settings_naming_the_field(settings, field):
    with pytest.raises(PointsegError, match=rf"{field} '?{settings[field]}"):
        PointProtocol(**settings)


def test_point_protocol_describe():
    assert PointProtocol(density=0.01).describe() == "density 1%"
    assert PointProtocol(density=0.005).describe() == "density 0.5%"
    assert PointProtocol("per-class", per_class=10).describe() == "10 per class"
    assert PointProtocol("per-region", min_area=100).describe() == "per region (min area 100 px)"


# GeoJSON, CSV and GeoPackage


def test_geojson_round_trip_in_pixel_coordinates(tmp_path):
    mask = random_mask()
    image = write_image(tmp_path / "tile.png", *mask.shape, crs=None)
    points = simulate_points(mask, PointProtocol(density=0.1), "tile")
    path = tmp_path / "tile.geojson"
    write_points_geojson(path, points, SCHEMA)
    data = json.loads(path.read_text())
    assert data["pointseg"] == {"coordinates": "pixel"} and data["crs"] is None
    first = data["features"][0]
    assert first["geometry"]["coordinates"] == [points.cols[0] + 0.5, points.rows[0] + 0.5]
    assert first["properties"] == {
        "class": SCHEMA.classes[points.classes[0]],
        "class_index": int(points.classes[0]),
    }
    imported, report = import_points(path, image, SCHEMA)
    assert imported == points
    assert report.total == report.kept == len(points)
    assert report.summary() == f"kept {len(points)} of {len(points)} points"


def test_geojson_round_trip_in_the_image_crs(tmp_path):
    mask = random_mask()
    image = write_image(tmp_path / "tile.tif", *mask.shape)
    points = simulate_points(mask, PointProtocol("per-class", per_class=20), "tile")
    path = tmp_path / "tile.geojson"
    write_points_geojson(path, points, SCHEMA, crs=UTM, transform=grid(ORIGIN))
    data = json.loads(path.read_text())
    assert data["crs"] == {"type": "name", "properties": {"name": "EPSG:32633"}}
    x, y = data["features"][0]["geometry"]["coordinates"]
    assert x == ORIGIN[0] + (points.cols[0] + 0.5) * PIXEL_SIZE
    assert y == ORIGIN[1] - (points.rows[0] + 0.5) * PIXEL_SIZE
    imported, report = import_points(path, image, SCHEMA)
    assert imported == points
    assert report.kept == len(points) == 60


def test_geojson_multipoint_and_class_index(tmp_path):
    image = write_image(tmp_path / "tile.png", 10, 10, crs=None)
    path = tmp_path / "points.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "pointseg": {"coordinates": "pixel"},
                "features": [
                    {
                        "type": "Feature",
                        "geometry": {"type": "MultiPoint", "coordinates": [[1.2, 3.9], [7.0, 0.5]]},
                        "properties": {"class_index": 2},
                    }
                ],
            }
        )
    )
    imported, _ = import_points(path, image, SCHEMA)
    assert (imported.rows.tolist(), imported.cols.tolist(), imported.classes.tolist()) == (
        [0, 3],
        [7, 1],
        [2, 2],
    )


def test_csv_lon_lat_is_reprojected_into_a_utm_image(tmp_path):
    image = write_image(tmp_path / "tile.tif", 20, 30)
    (easting,), (northing,) = warp_transform("EPSG:4326", UTM, [15.0], [36.0])
    assert easting == pytest.approx(500_000.0)  # 15°E is the central meridian of UTM zone 33
    # Put the image so that (15°E, 36°N) is the centre of pixel row 4, column 6.
    origin = (easting - 6.5 * PIXEL_SIZE, northing + 4.5 * PIXEL_SIZE)
    with rasterio.open(image, "r+") as dataset:
        dataset.transform = grid(origin)
    # 0.001° of longitude at 36°N is about 90 m east: 9 columns further.
    csv_path = write_csv(tmp_path / "points.csv", "lon,lat,class\n15.0,36.0,urban\n15.001,36.0,water\n")
    imported, report = import_points(csv_path, image, SCHEMA)
    assert imported.rows.tolist() == [4, 4]
    assert imported.cols.tolist() == [6, 15]
    assert imported.classes.tolist() == [2, 0]
    assert report.kept == 2


def test_csv_x_y_in_the_image_crs_and_col_row_in_pixels(tmp_path):
    image = write_image(tmp_path / "tile.tif", 20, 30)
    x, y = ORIGIN[0] + 25.0, ORIGIN[1] - 71.0  # column 2, row 7
    xy = write_csv(tmp_path / "xy.csv", f"x,y,class_index\n{x},{y},1\n")
    imported, _ = import_points(xy, image, SCHEMA)
    assert (imported.rows.tolist(), imported.cols.tolist(), imported.classes.tolist()) == ([7], [2], [1])
    col_row = write_csv(tmp_path / "pixels.csv", "col,row,class\n2.9,7.1,forest\n")
    assert import_points(col_row, image, SCHEMA)[0] == imported


def test_geopackage_points_in_the_image_crs(tmp_path):
    image = write_image(tmp_path / "tile.tif", 20, 30)
    path = tmp_path / "points.gpkg"
    wkb = [struct.pack("<BIdd", 1, 1, ORIGIN[0] + x, ORIGIN[1] - y) for x, y in [(15.0, 5.0), (295.0, 195.0)]]
    pyogrio.raw.write(
        path,
        geometry=np.array(wkb, dtype=object),
        field_data=[np.array(["water", "urban"], dtype=object)],
        fields=["class"],
        geometry_type="Point",
        crs="EPSG:32633",
        driver="GPKG",
    )
    imported, _ = import_points(path, image, SCHEMA)
    assert (imported.rows.tolist(), imported.cols.tolist(), imported.classes.tolist()) == (
        [0, 19],
        [1, 29],
        [0, 2],
    )


def test_a_point_outside_the_image_is_an_error_naming_the_file_line_and_bounds(tmp_path):
    image = write_image(tmp_path / "tile.tif", 20, 30)
    path = write_csv(tmp_path / "points.csv", "col,row,class\n1,1,water\n30.5,2,water\n")
    with pytest.raises(PointsegError, match=r"points\.csv.*outside the image \(line 3\).*columns 0\.\.29"):
        import_points(path, image, SCHEMA)


def test_an_unknown_class_is_an_error_listing_the_known_classes(tmp_path):
    image = write_image(tmp_path / "tile.tif", 20, 30)
    path = write_csv(tmp_path / "points.csv", "col,row,class\n1,1,water\n2,2,tree\n")
    with pytest.raises(
        PointsegError, match=r"points\.csv.*unknown class \(line 3\).*'tree'.*water, 1=forest"
    ):
        import_points(path, image, SCHEMA)
    out_of_range = write_csv(tmp_path / "indices.csv", "col,row,class_index\n1,1,3\n")
    with pytest.raises(PointsegError, match=r"unknown class \(line 2\).*class_index '3'"):
        import_points(out_of_range, image, SCHEMA)


def test_points_of_two_classes_on_one_pixel_are_an_error(tmp_path):
    image = write_image(tmp_path / "tile.tif", 20, 30)
    path = write_csv(tmp_path / "points.csv", "col,row,class\n1.2,1.7,water\n3,3,urban\n1.9,1.1,forest\n")
    with pytest.raises(PointsegError, match=r"points\.csv.*2 point\(s\) conflicting .*lines 2, 4"):
        import_points(path, image, SCHEMA)


def test_points_in_a_crs_on_an_image_without_one_are_an_error(tmp_path):
    image = write_image(tmp_path / "tile.png", 20, 30, crs=None)
    path = write_csv(tmp_path / "points.csv", "lon,lat,class\n15.0,36.0,water\n")
    with pytest.raises(
        PointsegError, match=r"points\.csv: points are in EPSG:4326, but .*tile\.png has no CRS"
    ):
        import_points(path, image, SCHEMA)


def test_skip_invalid_keeps_the_valid_points_and_reports_the_rest(tmp_path):
    image = write_image(tmp_path / "tile.tif", 20, 30)
    rows = [
        "col,row,class",
        "1,1,water",  # line 2: kept
        "-1,5,water",  # line 3: outside
        "2,2,tree",  # line 4: unknown class
        "5,5,forest",  # line 5: kept
        "5.5,5.5,forest",  # line 6: duplicate of line 5
        "7,7,water",  # line 7: conflict
        "7.3,7.3,urban",  # line 8: conflict
        "9,9,urban",  # line 9: kept
    ]
    path = write_csv(tmp_path / "points.csv", "\n".join(rows) + "\n")
    imported, report = import_points(path, image, SCHEMA, skip_invalid=True)
    assert (imported.rows.tolist(), imported.cols.tolist(), imported.classes.tolist()) == (
        [1, 5, 9],
        [1, 5, 9],
        [0, 1, 2],
    )
    assert (report.total, report.kept) == (8, 3)
    assert report.lines_outside == [3]
    assert report.lines_unknown_class == [4]
    assert report.lines_duplicate == [6]
    assert report.lines_conflict == [7, 8]
    summary = report.summary()
    assert summary.startswith("kept 3 of 8 points; dropped 1 outside the image (line 3)")
    assert "2 conflicting (different classes on one pixel) (lines 7, 8)" in summary


def test_a_declared_crs_that_disagrees_with_points_crs_is_an_error(tmp_path):
    image = write_image(tmp_path / "tile.tif", 20, 30)
    path = tmp_path / "points.geojson"
    write_points_geojson(path, PointLabels(np.array([1]), np.array([1]), np.array([0]), 20, 30), SCHEMA)
    with pytest.raises(PointsegError, match=r"points\.geojson: .*pixel coordinates.*EPSG:32633"):
        import_points(path, image, SCHEMA, points_crs="EPSG:32633")


def test_unsupported_points_file_is_an_error(tmp_path):
    image = write_image(tmp_path / "tile.tif", 20, 30)
    path = tmp_path / "points.shp"
    path.write_text("")
    with pytest.raises(PointsegError, match=r"points\.shp: unknown points file type '\.shp'.*\.geojson"):
        import_points(path, image, SCHEMA)


def test_failed_write_leaves_the_previous_file_and_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "points.geojson"
    path.write_text("previous")
    points = PointLabels(np.array([0, 1]), np.array([0, 1]), np.array([0, 1]), 2, 2)

    def dump_then_fail(data, handle):
        handle.write('{"type": "FeatureCollection", "features": [')
        raise OSError("disk full")

    monkeypatch.setattr(points_module.json, "dump", dump_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_points_geojson(path, points, SCHEMA)
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["points.geojson"]


def test_class_field_and_names_match_ignoring_case_and_spaces(tmp_path):
    image = write_image(tmp_path / "tile.tif", 20, 30)
    col_row = write_csv(tmp_path / "pixels.csv", "col,row,LandCover\n2.5,7.5, Forest \n4.5,1.5,WATER\n")
    imported, _ = import_points(col_row, image, SCHEMA, class_field="landcover")
    assert imported.classes.tolist() == [0, 1]  # row 1 water, row 7 forest
    assert read_point_classes(col_row, "LANDCOVER") == [("Forest", None), ("WATER", None)]
    with pytest.raises(PointsegError, match=r"expected columns .* class \(name\) or class_index"):
        import_points(col_row, image, SCHEMA)
