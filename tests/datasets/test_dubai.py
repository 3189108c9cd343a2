import numpy as np
import pytest

from fake_data import block_labels, rgb_mask, write_dubai, write_raster
from pointseg.datasets import discover_dataset, dubai, select_refs
from pointseg.datasets.dataset import SegmentationDataset
from pointseg.errors import PointsegError
from pointseg.normalization import BandStats
from pointseg.raster import raster_info
from pointseg.schema import IGNORE_INDEX

IDENTITY = BandStats((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def expected_labels(tile: int, k: int) -> np.ndarray:
    labels = block_labels(48, 56, dubai.SCHEMA.num_classes, seed=tile * 10 + k)
    labels[-3:, -3:] = IGNORE_INDEX
    return labels


def test_schema_uses_the_colours_the_masks_really_hold() -> None:
    schema = dubai.SCHEMA
    assert schema.classes == ("building", "land", "road", "vegetation", "water")
    hex_colours = ["#{:02X}{:02X}{:02X}".format(*c) for c in schema.colors]
    assert hex_colours == ["#3C1098", "#8429F6", "#6EC1E4", "#FEDD3A", "#E2A929"]
    assert set(schema.ignore_colors) == {(0x9B, 0x9B, 0x9B), (0, 0, 0)}


def test_tile_groups_and_ids(tmp_path) -> None:
    write_dubai(tmp_path, tiles=(1, 2, 7), per_tile=2)
    discovery = discover_dataset("dubai", tmp_path)
    assert discovery.problems == []
    assert [(ref.id, ref.group) for ref in discovery.refs] == [
        ("Tile 1/image_part_001", "Tile 1"),
        ("Tile 1/image_part_002", "Tile 1"),
        ("Tile 2/image_part_001", "Tile 2"),
        ("Tile 2/image_part_002", "Tile 2"),
        ("Tile 7/image_part_001", "Tile 7"),
        ("Tile 7/image_part_002", "Tile 7"),
    ]
    assert discovery.refs[3].image_path == tmp_path / "Tile 2" / "images" / "image_part_002.jpg"
    assert discovery.refs[3].mask_path == tmp_path / "Tile 2" / "masks" / "image_part_002.png"
    assert [ref.id for ref in select_refs(discovery.refs, ["Tile 7"], "val")] == [
        "Tile 7/image_part_001",
        "Tile 7/image_part_002",
    ]


def test_palette_and_rgb_masks_decode_alike_and_classes_json_is_not_used(tmp_path) -> None:
    write_dubai(tmp_path, tiles=(1,), per_tile=2)
    assert "#50E3C2" in (tmp_path / "classes.json").read_text()  # the shipped, wrong colours are there
    assert raster_info(tmp_path / "Tile 1" / "masks" / "image_part_001.png").count == 1  # palette PNG
    assert raster_info(tmp_path / "Tile 1" / "masks" / "image_part_002.png").count == 3  # RGB PNG
    dataset = SegmentationDataset(discover_dataset("dubai", tmp_path).refs, dubai.SCHEMA, IDENTITY)
    for k in range(2):
        sample = dataset[k]
        assert sample["image"].shape == (3, 48, 56)
        np.testing.assert_array_equal(sample["mask"].numpy(), expected_labels(1, k))


def test_grey_and_black_are_ignored(tmp_path) -> None:
    write_dubai(tmp_path, tiles=(1,), per_tile=2)
    labels = expected_labels(1, 1)
    mask = rgb_mask(labels, dubai.SCHEMA, ignore_color=(0x9B, 0x9B, 0x9B))
    mask[:, 0, :5] = 0  # a few stray black pixels
    write_raster(tmp_path / "Tile 1" / "masks" / "image_part_002.png", mask)
    sample = SegmentationDataset(discover_dataset("dubai", tmp_path).refs, dubai.SCHEMA, IDENTITY)[1]
    labels[0, :5] = IGNORE_INDEX
    np.testing.assert_array_equal(sample["mask"].numpy(), labels)
    assert int((sample["mask"] == IGNORE_INDEX).sum()) == 9 + 5


def test_unknown_colour_names_the_mask(tmp_path) -> None:
    write_dubai(tmp_path, tiles=(1,), per_tile=2)
    mask = rgb_mask(expected_labels(1, 1), dubai.SCHEMA, ignore_color=(0x9B, 0x9B, 0x9B))
    mask[:, 5:7, 5:7] = np.array([0x50, 0xE3, 0xC2], dtype=np.uint8)[:, None, None]  # classes.json's "Water"
    path = write_raster(tmp_path / "Tile 1" / "masks" / "image_part_002.png", mask)
    dataset = SegmentationDataset(discover_dataset("dubai", tmp_path).refs, dubai.SCHEMA, IDENTITY)
    with pytest.raises(PointsegError, match=rf"^{path}: 1 mask colour\(s\) .*#50E3C2 \(80, 227, 194\): 4 px"):
        dataset[1]


def test_folders_without_images_are_not_tiles_and_missing_masks_are_reported(tmp_path) -> None:
    write_dubai(tmp_path, tiles=(1, 2), per_tile=1)
    (tmp_path / "notes").mkdir()
    (tmp_path / "Tile 2" / "masks" / "image_part_001.png").unlink()
    discovery = discover_dataset("dubai", tmp_path)
    assert [ref.id for ref in discovery.refs] == ["Tile 1/image_part_001"]
    assert discovery.problems == [
        f"missing mask: {tmp_path / 'Tile 2' / 'images' / 'image_part_001.jpg'} has no mask"
    ]
