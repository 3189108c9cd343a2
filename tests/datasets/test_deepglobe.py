import numpy as np
import pytest
import torch

from fake_data import block_labels, image_for, rgb_mask, write_deepglobe, write_raster
from pointseg.datasets import deepglobe, discover_dataset
from pointseg.datasets.dataset import SegmentationDataset
from pointseg.errors import PointsegError
from pointseg.normalization import BandStats
from pointseg.raster import read_window
from pointseg.schema import IGNORE_INDEX

IDENTITY = BandStats((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def expected_labels(i: int, size: int = 64) -> np.ndarray:
    labels = block_labels(size, size, deepglobe.SCHEMA.num_classes, seed=i)
    labels[:4, :4] = IGNORE_INDEX
    return labels


def test_schema_matches_the_dataset_table() -> None:
    schema = deepglobe.SCHEMA
    assert schema.classes == ("urban_land", "agriculture", "rangeland", "forest", "water", "barren")
    assert schema.colors == (
        (0, 255, 255),
        (255, 255, 0),
        (255, 0, 255),
        (0, 255, 0),
        (0, 0, 255),
        (255, 255, 255),
    )
    assert schema.ignore_colors == ((0, 0, 0),)


def test_discovery_pairs_sat_and_mask_files(tmp_path) -> None:
    write_deepglobe(tmp_path, count=3)
    (tmp_path / "notes.txt").write_text("not a pair")
    discovery = discover_dataset("deepglobe", tmp_path)
    assert discovery.problems == []
    assert [ref.id for ref in discovery.refs] == ["100_sat", "101_sat", "102_sat"]
    assert [ref.group for ref in discovery.refs] == ["100", "101", "102"]
    assert discovery.refs[1].image_path == tmp_path / "101_sat.jpg"
    assert discovery.refs[1].mask_path == tmp_path / "101_mask.png"
    assert all(ref.window is None for ref in discovery.refs)


def test_sample_layout_and_unknown_is_ignored(tmp_path) -> None:
    write_deepglobe(tmp_path, count=2)
    refs = discover_dataset("deepglobe", tmp_path).require_usable()
    sample = SegmentationDataset(refs, deepglobe.SCHEMA, IDENTITY)[1]
    assert set(sample) == {"image", "mask", "path", "id"}  # a JPEG has no CRS
    assert sample["image"].dtype == torch.float32
    assert sample["image"].shape == (3, 64, 64)
    assert sample["mask"].dtype == torch.int64
    assert sample["mask"].shape == (64, 64)
    assert sample["path"] == str(tmp_path / "101_sat.jpg")
    assert sample["id"] == "101_sat"
    np.testing.assert_array_equal(sample["image"].numpy(), read_window(tmp_path / "101_sat.jpg"))
    np.testing.assert_array_equal(sample["mask"].numpy(), expected_labels(1))
    assert (sample["mask"][:4, :4] == IGNORE_INDEX).all()


def test_unknown_colour_is_an_error_never_a_class(tmp_path) -> None:
    write_deepglobe(tmp_path, count=2)
    labels = expected_labels(1)
    mask = rgb_mask(labels, deepglobe.SCHEMA, ignore_color=(0, 0, 0))
    mask[:, 10:13, 20:25] = np.array([10, 20, 30], dtype=np.uint8)[:, None, None]  # 15 px off-palette
    write_raster(tmp_path / "101_mask.png", mask)
    dataset = SegmentationDataset(discover_dataset("deepglobe", tmp_path).refs, deepglobe.SCHEMA, IDENTITY)
    assert dataset[0]["mask"].shape == (64, 64)
    with pytest.raises(PointsegError) as caught:
        dataset[1]
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / '101_mask.png'}: 1 mask colour(s) not in the 'deepglobe' schema")
    assert "#0A141E (10, 20, 30): 15 px" in message


def test_big_image_is_not_resized(tmp_path) -> None:
    labels = block_labels(200, 300, 6, seed=3)
    colors = np.array(deepglobe.SCHEMA.colors)
    write_raster(tmp_path / "7_sat.jpg", image_for(labels, colors, seed=3))
    write_raster(tmp_path / "7_mask.png", rgb_mask(labels, deepglobe.SCHEMA))
    sample = SegmentationDataset(discover_dataset("deepglobe", tmp_path).refs, deepglobe.SCHEMA, IDENTITY)[0]
    assert sample["image"].shape == (3, 200, 300)
    assert sample["mask"].shape == (200, 300)
    np.testing.assert_array_equal(sample["mask"].numpy(), labels)


def test_missing_folder_and_unpaired_files(tmp_path) -> None:
    with pytest.raises(
        PointsegError, match=rf"^{tmp_path / 'nope'}: no such folder; expected a DeepGlobe folder"
    ):
        discover_dataset("deepglobe", tmp_path / "nope")
    write_deepglobe(tmp_path, count=2)
    (tmp_path / "100_mask.png").unlink()
    (tmp_path / "101_sat.jpg").unlink()
    discovery = discover_dataset("deepglobe", tmp_path)
    assert discovery.refs == []
    assert discovery.problems == [
        f"missing mask: {tmp_path / '100_sat.jpg'} has no mask",
        f"missing image: {tmp_path / '101_mask.png'} has no image",
    ]
    with pytest.raises(PointsegError, match=r"2 problem\(s\) in the DeepGlobe dataset"):
        discovery.require_usable()
    # Without masks required (prediction), the image alone is a sample.
    assert [ref.mask_path for ref in discover_dataset("deepglobe", tmp_path, require_masks=False).refs] == [
        None
    ]


def test_split_lists_are_landcoverai_only(tmp_path) -> None:
    write_deepglobe(tmp_path, count=1)
    with pytest.raises(PointsegError, match=r"split lists are a LandCover\.ai feature; format 'deepglobe'"):
        discover_dataset("deepglobe", tmp_path, split="train")
    with pytest.raises(PointsegError, match="unknown dataset format 'kaggle'"):
        discover_dataset("kaggle", tmp_path)
