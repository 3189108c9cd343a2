import math
import sys

import numpy as np
import pytest
import torch
import yaml
from rasterio.transform import from_origin

from fake_data import UTM, block_labels, write_deepglobe, write_dubai, write_folder_dataset, write_raster
from pointseg.cli import main
from pointseg.datasets import (
    BandStats,
    PointsDirectory,
    SampleRef,
    SegmentationDataset,
    SimulatedPoints,
    base,
    collate_samples,
    discover_dataset,
    select_refs,
)
from pointseg.errors import PointsegError
from pointseg.points import PointProtocol
from pointseg.schema import IGNORE_INDEX, ClassSchema

IDENTITY3 = BandStats((0.0,) * 3, (1.0,) * 3)
PROTOCOL = PointProtocol("density", density=0.05, seed=1)


@pytest.fixture
def folder(tmp_path):
    """Two georeferenced 40x40 scenes (3 bands) whose masks have ignored 2x2 corners."""
    root, schema_path = write_folder_dataset(tmp_path / "scenes", bands=3, dtype="uint8")
    return discover_dataset("folder", root, schema_path)


def full_labels(i: int) -> np.ndarray:
    labels = block_labels(40, 40, 3, seed=i)
    labels[:2, :2] = IGNORE_INDEX
    return labels


def crop_origin(sample: dict, scene: int) -> tuple[int, int]:
    """(row, col) of a crop of the folder fake, from its transform (10 m pixels)."""
    _, _, x, _, _, y = sample["transform"]
    return round((5_000_000 + 1000 * scene - y) / 10), round((x - 300_000) / 10)


# ---------------------------------------------------------------- band statistics


def write_bands(path, *bands: np.ndarray):
    return write_raster(path, np.stack(bands).astype(np.float32))


def test_band_stats_estimate_per_band(tmp_path) -> None:
    half = np.zeros((4, 4))
    half[:, 2:] = 4
    a = write_bands(tmp_path / "a.tif", np.full((4, 4), 10.0), np.full((4, 4), 5.0), half)
    b = write_bands(tmp_path / "b.tif", np.full((4, 4), 30.0), np.full((4, 4), 5.0), np.full((4, 4), 2.0))
    stats = BandStats.estimate([a, b])
    # Band 1: 16 px of 10 and 16 of 30. Band 2: constant, so its std stays 1 instead of 0.
    # Band 3: 8 px of 0, 8 of 4 and 16 of 2 -> mean 2, variance (8 * 4 + 8 * 4) / 32 = 2.
    np.testing.assert_allclose(stats.mean, (20.0, 5.0, 2.0))
    np.testing.assert_allclose(stats.std, (10.0, 1.0, math.sqrt(2)))
    assert stats.num_bands == 3
    normalized = stats.normalize(np.array([[[30.0]], [[5.0]], [[2.0 + 2 * math.sqrt(2)]]]))
    assert normalized.dtype == np.float32
    np.testing.assert_allclose(normalized.ravel(), (1.0, 0.0, 2.0), rtol=1e-6)


def test_band_stats_reads_evenly_spaced_images(tmp_path) -> None:
    paths = [write_bands(tmp_path / f"{i}.tif", np.full((2, 2), float(i))) for i in range(10)]
    # ceil(10 / 4) = 3: images 0, 3, 6 and 9.
    assert BandStats.estimate(paths, max_images=4).mean == pytest.approx((4.5,))


def test_band_stats_errors(tmp_path) -> None:
    a = write_bands(tmp_path / "a.tif", np.zeros((2, 2)), np.zeros((2, 2)))
    b = write_bands(tmp_path / "b.tif", np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(PointsegError, match=rf"^{b}: 3 band\(s\), but earlier images have 2"):
        BandStats.estimate([a, b])
    with pytest.raises(PointsegError, match="no training images"):
        BandStats.estimate([])
    with pytest.raises(PointsegError, match=r"^x\.tif: 3 band\(s\), but the model was set up for 2"):
        BandStats((0.0, 0.0), (1.0, 1.0)).normalize(np.zeros((3, 2, 2)), "x.tif")


def test_samples_are_normalized_with_the_band_stats(folder) -> None:
    stats = BandStats((10.0, 20.0, 30.0), (2.0, 4.0, 5.0))
    raw = SegmentationDataset(folder.refs, folder.schema, IDENTITY3)[0]["image"]
    normalized = SegmentationDataset(folder.refs, folder.schema, stats)[0]["image"]
    expected = (raw - torch.tensor([10.0, 20.0, 30.0])[:, None, None]) / torch.tensor([2.0, 4.0, 5.0])[
        :, None, None
    ]
    torch.testing.assert_close(normalized, expected)


# ---------------------------------------------------------------- whole samples and crops


def test_whole_sample_layout(folder) -> None:
    dataset = SegmentationDataset(folder.refs, folder.schema, IDENTITY3)
    assert len(dataset) == 2
    sample = dataset[0]
    assert set(sample) == {"image", "mask", "path", "id", "crs", "transform"}
    assert (sample["image"].dtype, sample["image"].shape) == (torch.float32, (3, 40, 40))
    assert (sample["mask"].dtype, sample["mask"].shape) == (torch.int64, (40, 40))
    assert isinstance(sample["crs"], str)
    assert sample["transform"] == (10.0, 0.0, 300000.0, 0.0, -10.0, 5000000.0)
    np.testing.assert_array_equal(sample["mask"].numpy(), full_labels(0))
    assert "mask" not in SegmentationDataset(folder.refs, folder.schema, IDENTITY3, with_masks=False)[0]


def test_random_crops_are_windows_of_crop_size(folder, monkeypatch) -> None:
    windows = []
    real_read_pixels = base.read_pixels

    def recording_read_pixels(dataset, window=None, out_shape=None):
        windows.append(window)
        return real_read_pixels(dataset, window, out_shape)

    monkeypatch.setattr(base, "read_pixels", recording_read_pixels)
    whole = SegmentationDataset(folder.refs, folder.schema, IDENTITY3, points=SimulatedPoints(PROTOCOL))
    crops = SegmentationDataset(
        folder.refs,
        folder.schema,
        IDENTITY3,
        crop_size=16,
        crops_per_image=4,
        points=SimulatedPoints(PROTOCOL),
    )
    assert len(crops) == 8
    full = [whole[0], whole[1]]
    windows.clear()
    torch.manual_seed(0)
    origins = set()
    for index in range(len(crops)):
        crop = crops[index]
        scene = index // 4
        assert crop["id"] == f"scene_{scene}"
        row, col = crop_origin(crop, scene)
        assert 0 <= row <= 24 and 0 <= col <= 24
        origins.add((scene, row, col))
        for key in ("image", "mask", "points"):
            assert crop[key].shape[-2:] == (16, 16)
            torch.testing.assert_close(crop[key], full[scene][key][..., row : row + 16, col : col + 16])
    assert len(origins) > 2  # the crops move
    assert [(w.width, w.height) for w in windows] == [(16, 16)] * 8  # never the whole image


def test_crops_larger_than_the_image_are_padded_with_ignore(folder) -> None:
    dataset = SegmentationDataset(
        folder.refs, folder.schema, IDENTITY3, crop_size=48, points=SimulatedPoints(PROTOCOL)
    )
    whole = SegmentationDataset(folder.refs, folder.schema, IDENTITY3, points=SimulatedPoints(PROTOCOL))[1]
    sample = dataset[1]
    assert sample["image"].shape == (3, 48, 48)
    torch.testing.assert_close(sample["image"][:, :40, :40], whole["image"])
    assert (sample["image"][:, 40:] == 0).all() and (sample["image"][:, :, 40:] == 0).all()
    for key in ("mask", "points"):
        assert sample[key].shape == (48, 48)
        torch.testing.assert_close(sample[key][:40, :40], whole[key])
        assert (sample[key][40:] == IGNORE_INDEX).all()
        assert (sample[key][:, 40:] == IGNORE_INDEX).all()
    assert sample["transform"] == whole["transform"]


def test_crop_padded_along_one_side_only(tmp_path) -> None:
    write_dubai(tmp_path, tiles=(1,), per_tile=1, size=(48, 56))  # 48 rows, 56 columns
    refs = discover_dataset("dubai", tmp_path).refs
    torch.manual_seed(3)
    sample = SegmentationDataset(refs, discover_dataset("dubai", tmp_path).schema, IDENTITY3, crop_size=52)[0]
    assert sample["mask"].shape == (52, 52)
    assert (sample["mask"][48:] == IGNORE_INDEX).all()
    assert (sample["mask"][:48] != IGNORE_INDEX).any()


def test_mask_of_another_size_is_an_error_even_if_larger(folder) -> None:
    for size in (30, 50):
        path = write_raster(folder.refs[0].mask_path, np.ones((size, size), dtype=np.uint8))
        for crop_size in (None, 16):
            dataset = SegmentationDataset(folder.refs, folder.schema, IDENTITY3, crop_size=crop_size)
            with pytest.raises(
                PointsegError, match=rf"^{path}: mask is {size}x{size} px, but image .*scene_0.tif is 40x40"
            ):
                dataset[0]


def test_empty_dataset_is_an_error(folder) -> None:
    with pytest.raises(PointsegError, match="empty dataset"):
        SegmentationDataset([], folder.schema, IDENTITY3)


# ---------------------------------------------------------------- point labels


def test_simulated_points_are_reproducible_and_on_their_class(folder) -> None:
    first = SegmentationDataset(folder.refs, folder.schema, IDENTITY3, points=SimulatedPoints(PROTOCOL))
    second = SegmentationDataset(folder.refs, folder.schema, IDENTITY3, points=SimulatedPoints(PROTOCOL))
    other_seed = SegmentationDataset(
        folder.refs, folder.schema, IDENTITY3, points=SimulatedPoints(PointProtocol("density", density=0.05, seed=2))
    )
    for index in range(2):
        points = first[index]["points"]
        assert points.dtype == torch.int64
        torch.testing.assert_close(points, second[index]["points"])
        assert not torch.equal(points, other_seed[index]["points"])
        labelled = points != IGNORE_INDEX
        assert int(labelled.sum()) == round(0.05 * (40 * 40 - 4))  # 79.8 -> 80 of the valid pixels
        torch.testing.assert_close(
            points[labelled], torch.from_numpy(full_labels(index).astype(np.int64))[labelled]
        )
    assert not torch.equal(first[0]["points"], first[1]["points"])


def test_simulated_points_need_a_mask(folder) -> None:
    ref = SampleRef("lone", folder.refs[0].image_path, None, "lone")
    dataset = SegmentationDataset([ref], folder.schema, IDENTITY3, points=SimulatedPoints(PROTOCOL))
    with pytest.raises(PointsegError, match="no dense mask to simulate points from"):
        dataset[0]


def run_cli(monkeypatch, *args: object) -> None:
    monkeypatch.setattr(sys, "argv", ["pointseg", *map(str, args)])
    main()  # returns on success; exits with status 1 on an error


@pytest.mark.parametrize("fmt", ["folder", "deepglobe"])
def test_points_directory_reads_what_points_simulate_writes(tmp_path, monkeypatch, fmt: str) -> None:
    if fmt == "folder":
        root, schema_path = write_folder_dataset(tmp_path / "data", bands=3, dtype="uint8")
        extra = ["--schema", schema_path]
        discovery = discover_dataset("folder", root, schema_path)
    else:
        root, extra = write_deepglobe(tmp_path / "data", count=2), []
        discovery = discover_dataset("deepglobe", root)
    out = tmp_path / "points"
    run_cli(
        monkeypatch,
        "points",
        "simulate",
        root,
        "-f",
        fmt,
        "--out",
        out,
        "--density",
        "0.05",
        "--seed",
        "1",
        *extra,
    )
    suffix = ".tif" if fmt == "folder" else ".png"
    assert sorted(p.name for p in out.glob(f"*{suffix}")) == [f"{ref.id}{suffix}" for ref in discovery.refs]
    stats = BandStats((0.0,) * 3, (1.0,) * 3)
    read = SegmentationDataset(discovery.refs, discovery.schema, stats, points=PointsDirectory(out))
    simulated = SegmentationDataset(discovery.refs, discovery.schema, stats, points=SimulatedPoints(PROTOCOL))
    for index in range(2):
        torch.testing.assert_close(read[index]["points"], simulated[index]["points"])


def test_points_directory_errors(folder, tmp_path) -> None:
    dataset = SegmentationDataset(folder.refs, folder.schema, IDENTITY3, points=PointsDirectory(tmp_path))
    with pytest.raises(
        PointsegError, match=r"no point labels for sample 'scene_0' \(expected scene_0.tif or scene_0.png\)"
    ):
        dataset[0]
    write_raster(tmp_path / "scene_0.png", np.full((30, 40), IGNORE_INDEX, dtype=np.uint8))
    with pytest.raises(PointsegError, match="point labels of 'scene_0' are 30x40, the image is 40x40"):
        dataset[0]
    write_raster(tmp_path / "scene_1.png", np.full((2, 40, 40), IGNORE_INDEX, dtype=np.uint8))
    with pytest.raises(PointsegError, match=r"scene_1\.png: point label map has 2 bands, expected 1"):
        dataset[1]


# ---------------------------------------------------------------- selection and batches


def test_select_refs_by_id_group_and_wildcard(tmp_path) -> None:
    write_dubai(tmp_path, tiles=(1, 2, 4), per_tile=2)
    refs = discover_dataset("dubai", tmp_path).refs
    assert [r.id for r in select_refs(refs, ["Tile 2"], "val")] == [
        "Tile 2/image_part_001",
        "Tile 2/image_part_002",
    ]
    assert [r.id for r in select_refs(refs, ["Tile [14]"], "val")] == [
        "Tile 1/image_part_001",
        "Tile 1/image_part_002",
        "Tile 4/image_part_001",
        "Tile 4/image_part_002",
    ]
    assert [r.id for r in select_refs(refs, ["*/image_part_002", "Tile 1/image_part_001"], "test")] == [
        "Tile 1/image_part_001",
        "Tile 1/image_part_002",
        "Tile 2/image_part_002",
        "Tile 4/image_part_002",
    ]
    with pytest.raises(
        PointsegError, match=r"^--val: 'Tile 9' matches no sample id or group \(groups: Tile 1, Tile 2"
    ):
        select_refs(refs, ["Tile 2", "Tile 9"], "--val")


def test_collate_samples(folder) -> None:
    dataset = SegmentationDataset(
        folder.refs, folder.schema, IDENTITY3, crop_size=16, points=SimulatedPoints(PROTOCOL)
    )
    samples = [dataset[0], dataset[1]]
    batch = collate_samples(samples)
    assert batch["image"].shape == (2, 3, 16, 16)
    assert batch["mask"].shape == (2, 16, 16)
    assert batch["points"].dtype == torch.int64
    torch.testing.assert_close(batch["mask"][1], samples[1]["mask"])
    assert batch["id"] == ["scene_0", "scene_1"]
    assert batch["path"] == [s["path"] for s in samples]
    assert batch["transform"] == [s["transform"] for s in samples]
    assert batch["crs"] == [s["crs"] for s in samples]


def test_dataset_reads_non_georeferenced_and_georeferenced_alike(tmp_path) -> None:
    # The same pixels as a PNG (no CRS) and as a GeoTIFF give the same image and mask.
    labels = block_labels(20, 30, 3, seed=5)
    image = np.stack([labels * 50] * 3).astype(np.uint8)
    for name, crs in (("png", None), ("tif", UTM)):
        transform = from_origin(100, 200, 1, 1) if crs else None
        write_raster(tmp_path / name / "images" / f"x.{name}", image, crs, transform)
        write_raster(tmp_path / name / "masks" / f"x.{name}", labels + 1, crs, transform)
    schema_path = tmp_path / "schema.yaml"
    schema_path.write_text(
        yaml.safe_dump(ClassSchema("toy", ("a", "b", "c"), ((9, 9, 9),) * 3, "index", (1, 2, 3)).to_dict())
    )
    samples = []
    for name in ("png", "tif"):
        discovery = discover_dataset("folder", tmp_path / name, schema_path)
        samples.append(SegmentationDataset(discovery.refs, discovery.schema, IDENTITY3)[0])
    assert "crs" not in samples[0] and "crs" in samples[1]
    torch.testing.assert_close(samples[0]["image"], samples[1]["image"])
    torch.testing.assert_close(samples[0]["mask"], samples[1]["mask"])
