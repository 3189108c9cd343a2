import numpy as np
import pytest
from rasterio.crs import CRS
from rasterio.windows import Window

from fake_data import block_labels, write_landcoverai
from pointseg.datasets import discover_dataset, landcoverai
from pointseg.datasets.dataset import SegmentationDataset
from pointseg.errors import PointsegError
from pointseg.normalization import BandStats
from pointseg.raster import read_window


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    # Orthophotos of 1100x1300 and 600x1030 px (height x width), cut into 512 px tiles.
    return write_landcoverai(tmp_path_factory.mktemp("landcoverai"))


def test_tile_windows_number_tiles_like_split_py() -> None:
    # 1100 rows x 1300 cols: tile rows start at 0, 512, 1024 and tile columns at 0, 512, 1024; split.py
    # counts k over all nine, keeping k = 0, 1 (row 0), 3, 4 (row 512); the third column and row are cut.
    assert [(k, w.row_off, w.col_off) for k, w in landcoverai.tile_windows(1100, 1300)] == [
        (0, 0, 0),
        (1, 0, 512),
        (3, 512, 0),
        (4, 512, 512),
    ]
    assert landcoverai.tile_windows(1024, 512) == [(0, Window(0, 0, 512, 512)), (1, Window(0, 512, 512, 512))]
    assert landcoverai.tile_windows(511, 2000) == []


def test_discovery_ids_follow_split_py(root) -> None:
    discovery = discover_dataset("landcoverai", root)
    assert discovery.problems == []
    # 600 x 1030: only row 0 has full tiles, k = 0 and 1 (k = 2 is cut at column 1024).
    assert [ref.id for ref in discovery.refs] == [
        "M-33-0_0",
        "M-33-0_1",
        "M-33-0_3",
        "M-33-0_4",
        "M-33-1_0",
        "M-33-1_1",
    ]
    assert {ref.group for ref in discovery.refs} == {"M-33-0", "M-33-1"}
    assert discovery.refs[3].window == Window(512, 512, 512, 512)


def test_split_lists_are_honoured(root, tmp_path) -> None:
    for name in ("images", "masks"):
        (tmp_path / name).symlink_to(root / name)
    (tmp_path / "train.txt").write_text("M-33-0_0\nM-33-0_4\n\n")
    (tmp_path / "val.txt").write_text("M-33-1_1\n")
    assert [ref.id for ref in discover_dataset("landcoverai", tmp_path, split="train").refs] == [
        "M-33-0_0",
        "M-33-0_4",
    ]
    assert [ref.id for ref in discover_dataset("landcoverai", tmp_path, split="val").refs] == ["M-33-1_1"]
    assert len(discover_dataset("landcoverai", tmp_path).refs) == 6
    with pytest.raises(PointsegError, match=r"split 'test' requested but .*test\.txt does not exist"):
        discover_dataset("landcoverai", tmp_path, split="test")


def test_listed_tiles_that_do_not_exist_are_an_error(root, tmp_path) -> None:
    for name in ("images", "masks"):
        (tmp_path / name).symlink_to(root / name)
    (tmp_path / "train.txt").write_text("M-33-0_0\nM-33-9_9\nM-33-0_2\n")  # _2 is a dropped edge tile
    with pytest.raises(PointsegError, match=r"train\.txt: 2 of its 3 tiles are not in .*M-33-0_2, M-33-9_9"):
        discover_dataset("landcoverai", tmp_path, split="train")


def test_tile_sample_is_the_window_with_its_transform_and_crs(root) -> None:
    refs = discover_dataset("landcoverai", root).refs
    dataset = SegmentationDataset(refs, landcoverai.SCHEMA, BandStats((0.0,) * 3, (1.0,) * 3))
    sample = dataset[3]  # M-33-0_4: rows and columns 512..1023
    assert sample["id"] == "M-33-0_4"
    assert sample["path"] == str(root / "images" / "M-33-0.tif")
    assert set(sample) == {"image", "mask", "path", "id", "crs", "transform"}
    assert sample["image"].shape == (3, 512, 512)
    assert sample["mask"].shape == (512, 512)
    labels = block_labels(1100, 1300, 5, seed=0, block=64)
    np.testing.assert_array_equal(sample["mask"].numpy(), labels[512:1024, 512:1024])
    image = read_window(root / "images" / "M-33-0.tif")
    np.testing.assert_array_equal(sample["image"].numpy(), image[:, 512:1024, 512:1024])
    # The orthophoto's origin is (500000, 600000) with 0.25 m pixels; the tile starts 128 m right and down.
    assert sample["transform"] == (0.25, 0.0, 500128.0, 0.0, -0.25, 599872.0)
    assert CRS.from_wkt(sample["crs"]).to_epsg() == 2180
    second = dataset[5]  # M-33-1_1 of the second orthophoto, origin (510000, 600000)
    assert second["transform"] == (0.25, 0.0, 510128.0, 0.0, -0.25, 600000.0)


def test_a_split_list_that_is_not_utf8_is_an_error_naming_it(root, tmp_path) -> None:
    for name in ("images", "masks"):
        (tmp_path / name).symlink_to(root / name)
    (tmp_path / "val.txt").write_bytes(b"M-33-1_1\xff\n")
    with pytest.raises(PointsegError, match=r"val\.txt: not UTF-8 text .*expected one tile name per line"):
        discover_dataset("landcoverai", tmp_path, split="val")
