import json
import struct

import numpy as np
import pyogrio.raw
import pytest
import rasterio
from rasterio.warp import transform as warp_transform

from fake_points import ORIGIN, PIXEL_SIZE, SCHEMA, UTM, grid, random_mask, write_csv, write_image
from pointseg.errors import PointsegError
from pointseg.points import (
    PointLabels,
    PointProtocol,
    import_points,
    read_point_classes,
    simulate_points,
    write_points_geojson,
)
from pointseg.points import io as io_module

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


@pytest.mark.parametrize(
    ("collection", "expected"),
    [
        (
            {"crs": {"type": "name", "properties": "EPSG:32633"}},
            r"points\.geojson: crs\.properties is 'EPSG:32633'; expected an object",
        ),
        (
            {"features": [{"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": 5}}]},
            r"points\.geojson: feature 1 has coordinates 5; expected a list of \[x, y\]",
        ),
    ],
)
def test_malformed_geojson_members_are_errors_that_name_them(tmp_path, collection, expected):
    image = write_image(tmp_path / "tile.png", 10, 10, crs=None)
    path = tmp_path / "points.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [], **collection}))
    with pytest.raises(PointsegError, match=expected):
        import_points(path, image, SCHEMA)


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

    monkeypatch.setattr(io_module.json, "dump", dump_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_points_geojson(path, points, SCHEMA)
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["points.geojson"]


def test_geopackage_multipoint_features_give_one_point_per_position(tmp_path) -> None:
    image = write_image(tmp_path / "tile.tif", 20, 30)
    path = tmp_path / "points.gpkg"
    positions = [(15.0, 5.0), (295.0, 195.0)]
    multipoint = struct.pack("<BII", 1, 4, 2) + b"".join(
        struct.pack("<BIdd", 1, 1, ORIGIN[0] + x, ORIGIN[1] - y) for x, y in positions
    )
    pyogrio.raw.write(
        path,
        geometry=np.array([multipoint], dtype=object),
        field_data=[np.array([1], dtype=np.int64)],
        fields=["class_index"],
        geometry_type="MultiPoint",
        crs="EPSG:32633",
        driver="GPKG",
    )
    imported, report = import_points(path, image, SCHEMA)
    assert (imported.rows.tolist(), imported.cols.tolist(), imported.classes.tolist()) == (
        [0, 19],
        [1, 29],
        [1, 1],
    )
    assert (report.total, report.unit) == (2, "feature")


def test_a_geopackage_without_a_point_layer_is_an_error(tmp_path) -> None:
    image = write_image(tmp_path / "tile.tif", 20, 30)
    path = tmp_path / "lines.gpkg"
    line = struct.pack("<BII", 1, 2, 2) + struct.pack("<dddd", ORIGIN[0], ORIGIN[1], ORIGIN[0] + 5, ORIGIN[1])
    pyogrio.raw.write(
        path,
        geometry=np.array([line], dtype=object),
        field_data=[np.array(["water"], dtype=object)],
        fields=["class"],
        geometry_type="LineString",
        crs="EPSG:32633",
        driver="GPKG",
    )
    with pytest.raises(
        PointsegError, match=r"lines\.gpkg: 0 point layers \(none\); expected exactly one layer"
    ):
        import_points(path, image, SCHEMA)


def test_class_field_and_names_match_ignoring_case_and_spaces(tmp_path):
    image = write_image(tmp_path / "tile.tif", 20, 30)
    col_row = write_csv(tmp_path / "pixels.csv", "col,row,LandCover\n2.5,7.5, Forest \n4.5,1.5,WATER\n")
    imported, _ = import_points(col_row, image, SCHEMA, class_field="landcover")
    assert imported.classes.tolist() == [0, 1]  # row 1 water, row 7 forest
    assert read_point_classes(col_row, "LANDCOVER") == [("Forest", None), ("WATER", None)]
    with pytest.raises(PointsegError, match=r"expected columns .* class \(name\) or class_index"):
        import_points(col_row, image, SCHEMA)
