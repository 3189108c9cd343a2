import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from fake_data import UTM, block_labels, image_for, write_raster, write_untrained_checkpoint
from pointseg.checkpoint import load_trained_model
from pointseg.datasets import deepglobe
from pointseg.errors import PointsegError
from pointseg.inference import InferenceModel, torch_inference_model
from pointseg.normalization import BandStats
from pointseg.prediction import expand_inputs, predict_files
from pointseg.schema import IGNORE_INDEX

SCHEMA = deepglobe.SCHEMA
TRANSFORM = from_origin(300000, 5000000, 0.5, 0.5)


def pointwise_model(tile: int = 64, overlap: float = 0.25) -> tuple[InferenceModel, torch.nn.Module]:
    """A 1x1-conv model: its output at a pixel depends on that pixel only (constant under translation)."""
    torch.manual_seed(0)
    network = torch.nn.Conv2d(3, SCHEMA.num_classes, 1).eval()

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return network(batch)

    return InferenceModel(forward, SCHEMA, BandStats((120.0,) * 3, (50.0,) * 3), tile, overlap, {}), network


def georeferenced_scene(path: Path, height: int = 150, width: int = 230, nodata_corner: bool = False) -> Path:
    labels = block_labels(height, width, SCHEMA.num_classes, seed=5)
    image = image_for(labels, np.array(SCHEMA.colors), seed=5)
    write_raster(path, image, UTM, TRANSFORM)
    if nodata_corner:
        with rasterio.open(path, "r+") as dataset:
            dataset.nodata = 0
            pixels = dataset.read()
            pixels[:, :10, :15] = 0
            dataset.write(pixels)
    return path


def test_geotiff_output_keeps_crs_transform_size_and_has_a_colour_table(tmp_path: Path) -> None:
    scene = georeferenced_scene(tmp_path / "in" / "scene.tif", nodata_corner=True)
    model, _ = pointwise_model()
    [result] = predict_files(model, [scene], tmp_path / "out", output_format="both", confidence=True)
    assert [p.name for p in result.outputs] == [
        "scene_classes.tif",
        "scene_classes.png",
        "scene_confidence.tif",
    ]
    with rasterio.open(tmp_path / "out" / "scene_classes.tif") as out:
        assert out.crs == UTM and out.transform == TRANSFORM and (out.width, out.height) == (230, 150)
        assert out.dtypes == ("uint8",) and out.nodata == IGNORE_INDEX
        assert out.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        colormap = out.colormap(1)
        assert all(colormap[i][:3] == color for i, color in enumerate(SCHEMA.colors))
        labels = out.read(1)
    assert (labels[:10, :15] == IGNORE_INDEX).all(), "the input's nodata area stays nodata"
    assert (labels[10:, 15:] < SCHEMA.num_classes).all()
    with rasterio.open(tmp_path / "out" / "scene_classes.png") as png:
        assert png.driver == "PNG" and png.colormap(1)[IGNORE_INDEX][3] == 0  # nodata transparent
        assert np.array_equal(png.read(1), labels)
    with rasterio.open(tmp_path / "out" / "scene_confidence.tif") as confidence:
        values = confidence.read(1)
        assert confidence.crs == UTM and np.isnan(values[:10, :15]).all()
        assert (values[10:, 15:] >= 1 / SCHEMA.num_classes).all() and (values[10:, 15:] <= 1).all()
    assert not list((tmp_path / "out").glob(".*")), "no temporary files left behind"


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_overlapping_tiles_leave_no_seams(tmp_path: Path, overlap: float) -> None:
    """With a model constant under translation, tiled prediction equals one whole-image forward."""
    scene = georeferenced_scene(tmp_path / "scene.tif", height=203, width=317)
    model, network = pointwise_model(tile=64, overlap=overlap)
    predict_files(model, [scene], tmp_path / "out", batch_size=3)
    with rasterio.open(tmp_path / "out" / "scene_classes.tif") as out:
        tiled = out.read(1)
    with rasterio.open(scene) as dataset:
        image = model.band_stats.normalize(dataset.read())
    with torch.inference_mode():
        whole = network(torch.from_numpy(image)[None])[0].argmax(0).numpy()
    assert np.array_equal(tiled, whole)


def test_plain_png_and_jpeg_inputs(tmp_path: Path) -> None:
    labels = block_labels(70, 90, SCHEMA.num_classes, seed=1)
    image = image_for(labels, np.array(SCHEMA.colors), seed=1)
    write_raster(tmp_path / "in" / "a.png", image)
    write_raster(tmp_path / "in" / "b.jpg", image)
    results = predict_files(pointwise_model()[0], [tmp_path / "in"], tmp_path / "out", output_format="png")
    assert [(r.input.name, r.width, r.height) for r in results] == [("a.png", 90, 70), ("b.jpg", 90, 70)]
    with rasterio.open(tmp_path / "out" / "a_classes.png") as png:
        assert (png.width, png.height) == (90, 70) and png.crs is None


def test_bad_inputs_are_clear_errors_and_write_nothing(tmp_path: Path) -> None:
    model, _ = pointwise_model()
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("existing output")
    with pytest.raises(PointsegError, match="no such file"):
        predict_files(model, [tmp_path / "missing.tif"], out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PointsegError, match="has no images"):
        predict_files(model, [tmp_path / "empty"], out)
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + b"\x00" * 50)
    with pytest.raises(PointsegError, match=r"corrupt\.tif"):
        predict_files(model, [corrupt], out)
    four_bands = write_raster(tmp_path / "four.tif", np.zeros((4, 40, 40), dtype=np.uint8), UTM, TRANSFORM)
    with pytest.raises(PointsegError, match=r"four.tif: 4 band\(s\), but the model takes 3"):
        predict_files(model, [four_bands], out)
    with pytest.raises(PointsegError, match="multiple of 32"):
        predict_files(model, [four_bands], out, tile=50)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    with pytest.raises(PointsegError, match=r"corrupt\.tif"):
        predict_files(model, [corrupt], tmp_path / "new" / "out")
    assert not (tmp_path / "new").exists()  # no empty output folder left behind


def test_inputs_with_one_name_would_collide(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        georeferenced_scene(tmp_path / folder / "scene.tif", 40, 40)
    with pytest.raises(PointsegError, match="share the name 'scene'"):
        expand_inputs([tmp_path / "a" / "scene.tif", tmp_path / "b" / "scene.tif"])


def test_checkpoint_model_predicts_a_raster(tmp_path: Path) -> None:
    checkpoint = write_untrained_checkpoint(tmp_path / "model.ckpt")
    scene = georeferenced_scene(tmp_path / "scene.tif", 100, 120)
    model = torch_inference_model(load_trained_model(checkpoint))
    [result] = predict_files(model, [scene], tmp_path / "out")
    # tile 64, overlap 0.25: stride 48, grid from 8 px before the image: ceil((100+16-64)/48)+1 = 3 rows,
    # ceil((120+16-64)/48)+1 = 3 columns.
    assert (result.width, result.height, result.tiles) == (120, 100, 9)
    with rasterio.open(result.outputs[0]) as out:
        assert out.crs == UTM and out.read(1).max() < SCHEMA.num_classes


def test_tta_flips_averages_the_mirrors_of_a_checkpoint_model(tmp_path: Path) -> None:
    from pointseg.cli import load_inference_model
    from pointseg.inference import flip_averaged

    checkpoint = write_untrained_checkpoint(tmp_path / "model.ckpt")
    trained = load_trained_model(checkpoint)
    assert trained.config.eval.tta == "none" and trained.with_tta(None) is trained
    flipped = trained.with_tta("flips")
    assert flipped.config.eval.tta == "flips" and trained.config.eval.tta == "none"
    assert flipped.metadata()["tta"] == "flips"
    plain = load_inference_model(checkpoint, None, "cpu", "fp32")
    averaged = load_inference_model(checkpoint, None, "cpu", "fp32", "flips")
    batch = torch.randn(2, 3, 64, 64)
    expected = flip_averaged(plain.forward)(batch)
    torch.testing.assert_close(averaged.forward(batch), expected)
    assert not torch.allclose(plain.forward(batch), expected)


@pytest.mark.parametrize("nodata", [None, np.nan])
def test_a_nan_pixel_is_nodata_in_the_outputs(tmp_path: Path, nodata: float | None) -> None:
    image = np.full((3, 60, 70), 120.0, dtype=np.float32)
    image += np.random.default_rng(0).normal(0, 40, image.shape).astype(np.float32)
    image[2, 30, 40] = np.nan
    scene = write_raster(tmp_path / "scene.tif", image, UTM, TRANSFORM)
    if nodata is not None:
        with rasterio.open(scene, "r+") as dataset:
            dataset.nodata = nodata
    model, network = pointwise_model()
    predict_files(model, [scene], tmp_path / "out", output_format="both")
    with rasterio.open(tmp_path / "out" / "scene_classes.tif") as out:
        labels = out.read(1)
    image[2, 30, 40] = 120.0  # the band mean
    with torch.inference_mode():
        expected = network(torch.from_numpy(model.band_stats.normalize(image))[None])[0].argmax(0).numpy()
    expected[30, 40] = IGNORE_INDEX
    assert np.array_equal(labels, expected)
    with rasterio.open(tmp_path / "out" / "scene_classes.png") as png:
        assert np.array_equal(png.read(1), labels) and png.colormap(1)[IGNORE_INDEX][3] == 0


def test_out_naming_a_file_is_one_error_line(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    checkpoint = write_untrained_checkpoint(tmp_path / "model.ckpt")
    scene = georeferenced_scene(tmp_path / "scene.tif", 40, 40)
    (tmp_path / "taken.txt").write_text("not a folder")
    code, _, err = cli("predict", scene, "--checkpoint", checkpoint, "--out", tmp_path / "taken.txt")
    assert code == 1 and "Traceback" not in err
    assert "taken.txt: is a file; expected a folder" in err
    assert (tmp_path / "taken.txt").read_text() == "not a folder"


def dead_process_id() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_work_files_of_killed_runs_are_removed_by_the_next_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    dead, alive = dead_process_id(), os.getpid()
    stale = [out / f".pointseg-{dead}-abc123", out / f".scene_classes.{dead}-0123456789ab.partial.tif"]
    running = [out / f".pointseg-{alive}-def456", out / f".scene_classes.{alive}-0123456789ab.partial.tif"]
    for path in (stale[0], running[0]):
        path.mkdir(parents=True)
        (path / "classes.tif").write_bytes(b"II*\x00")
    for path in (stale[1], running[1]):
        path.write_bytes(b"")
    (out / ".hidden_user_file").write_text("kept")
    scene = georeferenced_scene(tmp_path / "scene.tif", 40, 40)
    predict_files(pointwise_model()[0], [scene], out)
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in running)
    assert (out / ".hidden_user_file").exists() and (out / "scene_classes.tif").is_file()


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--format", "jpeg"], "error: --format 'jpeg': expected one of geotiff, png, both"),
        (["--precision", "fp8"], "error: --precision 'fp8': expected one of fp32, bf16"),
        (["--overlap", "0.6"], "error: --overlap 0.6: expected a fraction between 0 and 0.5"),
        (["--tile", "100"], "error: --tile 100: expected a multiple of 32 pixels"),
        (["--tta", "mirror"], "error: --tta 'mirror': expected one of none, flips, d4"),
    ],
)
def test_predict_options_are_checked_before_the_model_loads(tmp_path, cli, option, expected) -> None:
    code, _, err = cli(
        "predict", tmp_path, "--out", tmp_path / "o", "--checkpoint", tmp_path / "x.ckpt", *option
    )
    assert code == 1 and " ".join(err.split()).startswith(expected)
