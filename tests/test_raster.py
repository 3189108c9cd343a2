import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from fake_data import UTM, write_raster
from pointseg.errors import PointsegError
from pointseg.raster import (
    STALE_WORK_NAME,
    atomic_output,
    raster_info,
    read_mask,
    read_window,
    staged_directory,
    write_label_raster,
)
from pointseg.schema import IGNORE_INDEX, ClassSchema

SCHEMA = ClassSchema(
    name="toy", classes=("water", "forest", "urban"), colors=((0, 0, 255), (0, 255, 0), (255, 0, 0))
)
TRANSFORM = from_origin(500_000, 4_000_000, 10, 10)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def noise(bands: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (bands, height, width), dtype=np.uint8)


def test_raster_info_and_windowed_read(tmp_path) -> None:
    pixels = noise(3, 20, 30)
    path = write_raster(tmp_path / "a.tif", pixels, UTM, TRANSFORM)
    info = raster_info(path)
    assert (info.width, info.height, info.count, info.dtype) == (30, 20, 3, "uint8")
    assert info.crs == UTM
    assert info.transform == TRANSFORM
    assert info.is_georeferenced
    np.testing.assert_array_equal(read_window(path), pixels)
    np.testing.assert_array_equal(read_window(path, Window(5, 2, 10, 4)), pixels[:, 2:6, 5:15])
    assert read_window(path, out_shape=(10, 15)).shape == (3, 10, 15)


def test_png_without_georeferencing(tmp_path) -> None:
    info = raster_info(write_raster(tmp_path / "a.png", noise(3, 8, 9)))
    assert info.crs is None
    assert info.transform is None
    assert not info.is_georeferenced


def test_missing_file_is_named(tmp_path) -> None:
    missing = tmp_path / "nowhere" / "x.tif"
    with pytest.raises(PointsegError, match=rf"^{missing}: no such file"):
        raster_info(missing)
    with pytest.raises(PointsegError, match=rf"^{missing}: no such file"):
        read_mask(missing, SCHEMA)


def test_non_raster_file_is_named(tmp_path) -> None:
    path = tmp_path / "notes.tif"
    path.write_text("this is not an image\n")
    with pytest.raises(
        PointsegError, match=rf"^{path}: not a readable raster .*expected a GeoTIFF, PNG or JPEG"
    ):
        read_window(path)


def truncate(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize("keep", [0.5, 0.05])
def test_truncated_jpeg_fails_at_pixel_read_naming_the_file(tmp_path, keep: float) -> None:
    path = truncate(write_raster(tmp_path / "cut_sat.jpg", noise(3, 128, 128)), keep)
    assert raster_info(path).width == 128  # the header survives ...
    with pytest.raises(PointsegError) as caught:  # ... the pixels do not
        read_window(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: cannot decode pixels")
    assert "truncated" in message
    assert "Premature end of JPEG file" in message  # GDAL's own reason, not only "see previous exception"


def write_tiled_geotiff(path: Path) -> Path:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        count=3,
        height=256,
        width=256,
        dtype="uint8",
        crs=UTM,
        transform=TRANSFORM,
        tiled=True,
        compress="deflate",
    ) as dataset:
        dataset.write(noise(3, 256, 256))
    return path


def test_truncated_geotiff_fails_at_pixel_read_naming_the_file(tmp_path) -> None:
    path = truncate(write_tiled_geotiff(tmp_path / "cut.tif"), 0.5)
    with pytest.raises(PointsegError, match=rf"^{path}: cannot decode pixels .*truncated"):
        read_window(path)


def test_truncated_geotiff_fails_at_header_read_naming_the_file(tmp_path) -> None:
    path = truncate(write_tiled_geotiff(tmp_path / "cut.tif"), 0.001)
    with pytest.raises(PointsegError, match=rf"^{path}: not a readable raster"):
        raster_info(path)


def test_palette_png_mask_expands_through_its_colour_table(tmp_path) -> None:
    indices = np.array([[0, 1, 2, 9], [9, 2, 1, 0]], dtype=np.uint8)
    colormap = {0: (0, 0, 255, 255), 1: (0, 255, 0, 255), 2: (255, 0, 0, 255), 9: (0, 0, 0, 255)}
    path = write_raster(tmp_path / "palette.png", indices, colormap=colormap)
    schema = ClassSchema(name="toy", classes=SCHEMA.classes, colors=SCHEMA.colors, ignore_colors=((0, 0, 0),))
    # The palette indices are not the class labels: 9 must go through black to IGNORE_INDEX.
    np.testing.assert_array_equal(read_mask(path, schema), [[0, 1, 2, IGNORE_INDEX], [IGNORE_INDEX, 2, 1, 0]])
    np.testing.assert_array_equal(read_mask(path, schema, Window(1, 0, 2, 2)), [[1, 2], [2, 1]])


def test_rgba_mask_drops_alpha(tmp_path) -> None:
    rgba = np.zeros((4, 2, 2), dtype=np.uint8)
    rgba[2] = 255
    rgba[3] = 255
    rgba[:3, 1, 1] = (255, 0, 0)
    np.testing.assert_array_equal(read_mask(write_raster(tmp_path / "m.png", rgba), SCHEMA), [[0, 0], [0, 2]])


def test_single_band_mask_without_colour_table_for_rgb_schema(tmp_path) -> None:
    path = write_raster(tmp_path / "gray.png", np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(PointsegError, match=rf"^{path}: single-band mask without a colour table"):
        read_mask(path, SCHEMA)


def test_read_mask_unknown_colour_names_the_file(tmp_path) -> None:
    rgb = np.zeros((3, 4, 4), dtype=np.uint8)  # black is not in SCHEMA
    path = write_raster(tmp_path / "m.png", rgb)
    with pytest.raises(PointsegError, match=rf"^{path}: 1 mask colour\(s\) .*#000000 \(0, 0, 0\): 16 px"):
        read_mask(path, SCHEMA)


def test_atomic_output_renames_on_success(tmp_path) -> None:
    target = tmp_path / "out" / "result.txt"
    with atomic_output(target) as temporary:
        assert temporary.parent == target.parent
        assert temporary.suffix == ".txt"
        assert not target.exists()
        temporary.write_text("done")
    assert target.read_text() == "done"
    assert snapshot(tmp_path / "out") == {"result.txt": b"done"}


def test_atomic_output_gives_the_usual_permissions(tmp_path) -> None:
    umask = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "shared.geojson") as temporary:
            temporary.write_text("{}")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "shared.geojson").stat().st_mode) == 0o644  # not mkstemp's 0o600


def test_atomic_output_failure_leaves_no_file(tmp_path) -> None:
    target = tmp_path / "result.tif"
    with pytest.raises(RuntimeError), atomic_output(target) as temporary:
        temporary.write_text("half")
        Path(f"{temporary}.aux.xml").write_text("<sidecar/>")
        raise RuntimeError("boom")
    assert snapshot(tmp_path) == {}


def test_atomic_output_refuses_a_folder_or_a_path_under_a_file_before_writing(tmp_path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("kept")
    folder_error = pytest.raises(PointsegError, match=r"folder: is a folder; expected the path of a file")
    with folder_error, atomic_output(tmp_path / "folder"):
        pytest.fail("the block ran")
    under_a_file = pytest.raises(PointsegError, match=r"sub/out\.json: .*file is a file, not a folder")
    with under_a_file, atomic_output(tmp_path / "file" / "sub" / "out.json"):
        pytest.fail("the block ran")
    assert snapshot(tmp_path) == {"file": b"kept"} and list((tmp_path / "folder").iterdir()) == []


def test_atomic_output_failure_keeps_existing_destination(tmp_path) -> None:
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as temporary:
        temporary.write_text("new")
        raise RuntimeError("boom")
    assert snapshot(tmp_path) == {"result.txt": b"old"}


def test_staged_directory_failure_leaves_out_dir_exactly_as_it_was(tmp_path) -> None:
    out = tmp_path / "points"
    (out / "sub").mkdir(parents=True)
    (out / "a.png").write_bytes(b"old a")
    (out / "sub" / "b.json").write_bytes(b"old b")
    before = snapshot(tmp_path)
    with pytest.raises(RuntimeError), staged_directory(out) as staging:
        assert list(staging.iterdir()) == []
        (staging / "a.png").write_bytes(b"new a")  # would overwrite
        (staging / "c.png").write_bytes(b"new c")  # would be added
        (staging / "sub").mkdir()
        (staging / "sub" / "d.json").write_bytes(b"new d")
        raise RuntimeError("image 3 failed")
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points"]  # the staging folder is gone


def test_staged_directory_failure_does_not_create_out_dir(tmp_path) -> None:
    with pytest.raises(RuntimeError), staged_directory(tmp_path / "new") as staging:
        (staging / "x").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_staged_directory_success_moves_files_and_keeps_others(tmp_path) -> None:
    out = tmp_path / "points"
    out.mkdir()
    (out / "keep.txt").write_bytes(b"keep")
    (out / "a.png").write_bytes(b"old a")
    with staged_directory(out) as staging:
        (staging / "a.png").write_bytes(b"new a")
        (staging / "sub").mkdir()
        (staging / "sub" / "b.json").write_bytes(b"b")
    assert snapshot(out) == {"a.png": b"new a", "keep.txt": b"keep", "sub/b.json": b"b"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points"]


def test_staged_directory_removes_staging_folders_of_killed_runs_and_keeps_those_of_running_ones(
    tmp_path,
) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead, alive = child.pid, os.getpid()
    stale = [tmp_path / f".points.{dead}-0123456789ab.staging", tmp_path / f".points.{dead}-0123456789ab.old"]
    running = tmp_path / f".other.{alive}-0123456789ab.staging"
    for folder in [*stale, running]:
        folder.mkdir()
        (folder / "a.png").write_bytes(b"half written")
    (tmp_path / ".hidden_user_folder").mkdir()
    with staged_directory(tmp_path / "points") as staging:
        assert not any(folder.exists() for folder in stale)
        match = STALE_WORK_NAME.match(staging.name)  # a killed run's staging folder is found again
        assert staging.parent == tmp_path and match is not None and int(match["file_pid"]) == alive
        (staging / "b.png").write_bytes(b"b")
    assert running.is_dir() and (tmp_path / ".hidden_user_folder").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".hidden_user_folder", running.name, "points"]
    )


def test_write_label_raster_geotiff_keeps_georeferencing_and_colours(tmp_path) -> None:
    labels = np.full((20, 30), IGNORE_INDEX, dtype=np.uint8)
    labels[3, 4], labels[10, 29] = 1, 2
    path = tmp_path / "labels.tif"
    write_label_raster(path, labels, SCHEMA, UTM, TRANSFORM)
    with rasterio.open(path) as dataset:
        assert dataset.driver == "GTiff"
        assert dataset.crs == UTM
        assert dataset.transform == TRANSFORM
        assert dataset.nodata == IGNORE_INDEX
        assert dataset.dtypes == ("uint8",)
        np.testing.assert_array_equal(dataset.read(1), labels)
        colormap = dataset.colormap(1)
    assert colormap[0] == (0, 0, 255, 255)
    assert colormap[1] == (0, 255, 0, 255)
    assert colormap[2] == (255, 0, 0, 255)
    assert colormap[IGNORE_INDEX] == (0, 0, 0, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]


def test_write_label_raster_png(tmp_path) -> None:
    labels = np.array([[0, 1], [2, IGNORE_INDEX]], dtype=np.uint8)
    path = tmp_path / "labels.png"
    write_label_raster(path, labels, SCHEMA)
    with rasterio.open(path) as dataset:
        assert dataset.driver == "PNG"
        assert dataset.count == 1
        assert dataset.crs is None
        np.testing.assert_array_equal(dataset.read(1), labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.png"]


def test_truncated_png_is_an_error_not_garbage_rows(tmp_path: Path) -> None:
    """GDAL decodes a PNG cut short without complaint; open_raster checks its chunks first."""
    png = write_raster(
        tmp_path / "mask.png", np.arange(64 * 64, dtype=np.uint32).reshape(1, 64, 64).astype(np.uint8)
    )
    data = png.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(PointsegError, match=r"cut\.png: the PNG is truncated"):
        read_window(cut)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(data[:40] + bytes([data[40] ^ 0xFF]) + data[41:])
    with pytest.raises(PointsegError, match=r"corrupt\.png: the PNG is corrupt: .* fails its CRC check"):
        read_window(corrupt)
    assert read_window(png).shape == (1, 64, 64)


@pytest.mark.parametrize(
    ("content", "found"), [(b"", "an empty file"), (b"class,x,y\n", "10 bytes beginning b'class,x,'")]
)
def test_a_png_without_the_png_signature_is_not_called_truncated(
    tmp_path: Path, content: bytes, found: str
) -> None:
    path = tmp_path / "mask.png"
    path.write_bytes(content)
    with pytest.raises(
        PointsegError, match=rf"mask\.png: not a PNG: {re.escape(found)}, without the PNG signature"
    ):
        read_window(path)
