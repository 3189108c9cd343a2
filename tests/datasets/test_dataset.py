import numpy as np
import pytest
import rasterio
import torch
import yaml
from rasterio.transform import from_origin

from fake_data import UTM, block_labels, folder_labels, write_dubai, write_folder_dataset, write_raster
from pointseg.datasets import dataset as dataset_module
from pointseg.datasets import discover_dataset
from pointseg.datasets.dataset import SegmentationDataset, collate_samples
from pointseg.datasets.point_sources import SimulatedPoints
from pointseg.errors import PointsegError
from pointseg.label_expansion import PointExpansion
from pointseg.normalization import BandStats
from pointseg.points import PointLabels, PointProtocol
from pointseg.schema import IGNORE_INDEX, ClassSchema

IDENTITY3 = BandStats((0.0,) * 3, (1.0,) * 3)
PROTOCOL = PointProtocol("density", density=0.05, seed=1)


def crop_origin(sample: dict, scene: int) -> tuple[int, int]:
    """(row, col) of a crop of the folder fake, from its transform (10 m pixels)."""
    _, _, x, _, _, y = sample["transform"]
    return round((5_000_000 + 1000 * scene - y) / 10), round((x - 300_000) / 10)


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
    np.testing.assert_array_equal(sample["mask"].numpy(), folder_labels(0))
    assert "mask" not in SegmentationDataset(folder.refs, folder.schema, IDENTITY3, with_masks=False)[0]


def test_random_crops_are_windows_of_crop_size(folder, monkeypatch) -> None:
    windows = []
    real_read_pixels = dataset_module.read_pixels

    def recording_read_pixels(dataset, window=None, out_shape=None):
        windows.append(window)
        return real_read_pixels(dataset, window, out_shape)

    monkeypatch.setattr(dataset_module, "read_pixels", recording_read_pixels)
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


# ---------------------------------------------------------------- point expansion and padding masks


EXPANSION = PointExpansion("slic", expanded_weight=0.25, pixels_per_segment=30)


def test_expansion_crops_are_windows_of_the_whole_expanded_sample(folder) -> None:
    points = SimulatedPoints(PROTOCOL)
    whole = SegmentationDataset(folder.refs, folder.schema, IDENTITY3, points=points, expansion=EXPANSION)[0]
    plain = SegmentationDataset(folder.refs, folder.schema, IDENTITY3, points=points)[0]
    # The clicked points are unchanged; the expanded labels hold them and more, with their weights.
    torch.testing.assert_close(whole["points"], plain["points"])
    clicked = whole["points"] != IGNORE_INDEX
    expanded = whole["expanded_points"] != IGNORE_INDEX
    assert (whole["expanded_points"][clicked] == whole["points"][clicked]).all()
    assert expanded.sum() > clicked.sum()
    weights = whole["point_weights"]
    assert weights.dtype == torch.float32
    assert (weights[clicked] == 1).all() and (weights[expanded & ~clicked] == 0.25).all()
    assert (weights[~expanded] == 0).all()
    crops = SegmentationDataset(
        folder.refs,
        folder.schema,
        IDENTITY3,
        crop_size=16,
        crops_per_image=4,
        points=points,
        expansion=EXPANSION,
    )
    torch.manual_seed(0)
    for index in range(4):
        crop = crops[index]
        row, col = crop_origin(crop, 0)
        for key in ("points", "expanded_points", "point_weights"):
            torch.testing.assert_close(crop[key], whole[key][row : row + 16, col : col + 16])


def test_padding_pads_expanded_labels_with_ignore_weights_with_zero_and_marks_valid(folder) -> None:
    dataset = SegmentationDataset(
        folder.refs,
        folder.schema,
        IDENTITY3,
        crop_size=48,
        points=SimulatedPoints(PROTOCOL),
        expansion=EXPANSION,
        padding_mask=True,
    )
    samples = [dataset[0], dataset[1]]
    sample = samples[1]
    assert (sample["expanded_points"][40:] == IGNORE_INDEX).all()
    assert (sample["point_weights"][:, 40:] == 0).all()
    assert sample["valid"].dtype == torch.bool
    assert (
        sample["valid"][:40, :40].all()
        and not sample["valid"][40:].any()
        and not sample["valid"][:, 40:].any()
    )
    batch = collate_samples(samples)
    assert batch["point_weights"].shape == (2, 48, 48) and batch["valid"].shape == (2, 48, 48)
    assert "valid" not in SegmentationDataset(folder.refs, folder.schema, IDENTITY3)[0]


def test_expansion_needs_points(folder) -> None:
    sample = SegmentationDataset(folder.refs, folder.schema, IDENTITY3, expansion=EXPANSION)[0]
    assert "expanded_points" not in sample and "point_weights" not in sample


def test_a_non_finite_pixel_is_filled_in_the_image_and_ignored_in_every_label(tmp_path) -> None:
    root, schema_path = write_folder_dataset(tmp_path / "scenes", bands=3, dtype="float32", count=1)
    image_path = root / "images" / "scene_0.tif"
    with rasterio.open(image_path) as source:
        pixels, profile = source.read(), source.profile
    pixels[1, 10, 10], pixels[0, 20, 30] = np.nan, np.inf
    with rasterio.open(image_path, "w", **profile) as target:
        target.write(pixels)
    data = discover_dataset("folder", root, schema_path)
    sample = SegmentationDataset(
        data.refs,
        data.schema,
        BandStats((100.0,) * 3, (50.0,) * 3),
        crop_size=40,
        points=SimulatedPoints(PointProtocol("density", density=1.0, seed=1)),
        expansion=EXPANSION,
        padding_mask=True,
    )[0]
    assert torch.isfinite(sample["image"]).all()
    assert sample["image"][1, 10, 10] == 0 and sample["image"][0, 20, 30] == 0  # the band mean
    bad = [(10, 10), (20, 30)]
    for row, col in bad:
        for key in ("mask", "points", "expanded_points"):
            assert sample[key][row, col] == IGNORE_INDEX, key
        assert sample["point_weights"][row, col] == 0 and not sample["valid"][row, col]
    assert int((sample["mask"] != IGNORE_INDEX).sum()) == 40 * 40 - 4 - len(bad)  # the 2x2 ignored corner
    assert int(sample["valid"].sum()) == 40 * 40 - len(bad)


# ---------------------------------------------------------------- crops around clicked points


class FixedPoints:
    """The same points for every image."""

    def __init__(self, points: PointLabels) -> None:
        self.points = points

    def check(self, refs) -> None:
        pass

    def points_for(self, ref, dense_labels) -> PointLabels:
        return self.points


def test_crops_around_points_hold_a_point_of_each_class_equally_often(folder) -> None:
    # Class 0: twenty points in the top-left corner; class 1: one point in the bottom-right one.
    rows, cols = np.divmod(np.arange(20), 5)
    points = PointLabels(np.r_[rows, 38], np.r_[cols, 38], np.r_[np.zeros(20), 1], 40, 40)
    refs = folder.refs[:1]

    def crops(share: float) -> list[dict]:
        dataset = SegmentationDataset(
            refs, folder.schema, IDENTITY3, crop_size=8, crops_per_image=200,
            point_crop_share=share, points=FixedPoints(points),
        )  # fmt: skip
        torch.manual_seed(0)
        return [dataset[index] for index in range(len(dataset))]

    around = crops(1.0)
    whole = SegmentationDataset(refs, folder.schema, IDENTITY3, points=FixedPoints(points))[0]
    for crop in around:  # each crop is the window its transform says, in every layer
        row, col = crop_origin(crop, 0)
        for key in ("image", "mask", "points"):
            torch.testing.assert_close(crop[key], whole[key][..., row : row + 8, col : col + 8])
    clicked = [crop["points"][crop["points"] != IGNORE_INDEX] for crop in around]
    assert all(len(labels) for labels in clicked)  # every crop holds a point
    with_rare_class = sum(bool((labels == 1).any()) for labels in clicked)
    assert 70 <= with_rare_class <= 130  # half the crops: the class is drawn, not the point
    origins = {crop_origin(crop, 0) for crop in around if (crop["points"] == 1).any()}
    assert origins == {(31, 31), (31, 32), (32, 31), (32, 32)}  # every window holding the point
    uniform = crops(0.0)
    assert sum(bool((crop["points"] != IGNORE_INDEX).any()) for crop in uniform) < 50
    half = sum(bool((crop["points"] != IGNORE_INDEX).any()) for crop in crops(0.5))
    assert 70 <= half <= 150  # about half around a point, plus the few uniform ones that hold one


def test_point_crop_share_must_be_a_share(folder) -> None:
    with pytest.raises(ValueError, match=r"point_crop_share must be in \[0, 1\], got 1.5"):
        SegmentationDataset(
            folder.refs, folder.schema, IDENTITY3, crop_size=8, point_crop_share=1.5,
            points=SimulatedPoints(PROTOCOL),
        )  # fmt: skip


def test_crops_around_points_fall_back_to_uniform_without_points(folder) -> None:
    empty = PointLabels(np.empty(0), np.empty(0), np.empty(0), 40, 40)
    dataset = SegmentationDataset(
        folder.refs, folder.schema, IDENTITY3, crop_size=16, crops_per_image=8,
        point_crop_share=1.0, points=FixedPoints(empty),
    )  # fmt: skip
    torch.manual_seed(0)
    origins = {crop_origin(dataset[index], index // 8) for index in range(len(dataset))}
    assert len(origins) > 2
    assert all(0 <= row <= 24 and 0 <= col <= 24 for row, col in origins)
