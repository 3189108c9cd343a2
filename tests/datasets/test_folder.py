import numpy as np
import pytest
import torch
from rasterio.crs import CRS

from fake_data import UTM, block_labels, write_folder_dataset, write_raster
from pointseg.datasets import discover_dataset
from pointseg.datasets.dataset import SegmentationDataset
from pointseg.errors import PointsegError
from pointseg.normalization import BandStats
from pointseg.raster import read_window
from pointseg.schema import IGNORE_INDEX, ClassSchema


def expected_labels(i: int, size: int = 40) -> np.ndarray:
    labels = block_labels(size, size, 3, seed=i)
    labels[:2, :2] = IGNORE_INDEX  # stored as 0, the schema's ignore value
    return labels


@pytest.mark.parametrize(
    ("bands", "dtype"), [(1, "uint8"), (3, "uint8"), (4, "uint16"), (13, "float32"), (3, "uint16")]
)
def test_any_band_count_and_dtype(tmp_path, bands: int, dtype: str) -> None:
    root, schema_path = write_folder_dataset(tmp_path, bands=bands, dtype=dtype)
    discovery = discover_dataset("folder", root, schema_path)
    assert discovery.problems == []
    assert [ref.id for ref in discovery.refs] == ["scene_0", "scene_1"]
    image_paths = [ref.image_path for ref in discovery.refs]
    stats = BandStats.estimate(image_paths)
    assert stats.num_bands == bands
    dataset = SegmentationDataset(discovery.refs, discovery.schema, stats)
    sample = dataset[1]
    assert set(sample) == {"image", "mask", "path", "id", "crs", "transform"}
    assert sample["image"].dtype == torch.float32
    assert sample["image"].shape == (bands, 40, 40)
    assert sample["mask"].dtype == torch.int64
    np.testing.assert_array_equal(sample["mask"].numpy(), expected_labels(1))
    raw = read_window(image_paths[1])
    assert raw.dtype == np.dtype(dtype)
    expected = (raw.astype(np.float64) - np.array(stats.mean)[:, None, None]) / np.array(stats.std)[
        :, None, None
    ]
    np.testing.assert_allclose(sample["image"].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert CRS.from_wkt(sample["crs"]) == UTM
    assert sample["transform"] == (10.0, 0.0, 300000.0, 0.0, -10.0, 5001000.0)


def test_schema_comes_from_the_file(tmp_path) -> None:
    root, schema_path = write_folder_dataset(tmp_path, bands=3, dtype="uint8")
    schema = discover_dataset("folder", root, schema_path).schema
    assert schema == ClassSchema.load(schema_path)
    assert schema.mask_encoding == "index"
    assert schema.stored_values == (1, 2, 3)
    assert schema.ignore_values == (0,)


def test_missing_schema_is_an_error(tmp_path) -> None:
    root, _ = write_folder_dataset(tmp_path, bands=3, dtype="uint8", count=1)
    with pytest.raises(PointsegError, match=r"format 'folder' needs a class schema file \(--schema"):
        discover_dataset("folder", root)
    with pytest.raises(PointsegError, match=rf"{tmp_path / 'absent.yaml'}: cannot read class schema"):
        discover_dataset("folder", root, tmp_path / "absent.yaml")


def test_mask_pattern(tmp_path) -> None:
    root, schema_path = write_folder_dataset(tmp_path, bands=3, dtype="uint8")
    for i in range(2):
        (root / "masks" / f"scene_{i}.tif").rename(root / "masks" / f"scene_{i}_mask.tif")
    discovery = discover_dataset("folder", root, schema_path, mask_pattern="{stem}_mask")
    assert discovery.problems == []
    assert [(ref.id, ref.mask_path) for ref in discovery.refs] == [
        ("scene_0", root / "masks" / "scene_0_mask.tif"),
        ("scene_1", root / "masks" / "scene_1_mask.tif"),
    ]
    unmatched = discover_dataset("folder", root, schema_path)
    assert unmatched.refs == []
    assert unmatched.problems == [
        f"missing mask: {root / 'images' / 'scene_0.tif'} has no mask",
        f"missing mask: {root / 'images' / 'scene_1.tif'} has no mask",
        f"missing image: {root / 'masks' / 'scene_0_mask.tif'} matches no image",
        f"missing image: {root / 'masks' / 'scene_1_mask.tif'} matches no image",
    ]
    with pytest.raises(PointsegError, match=r"mask_pattern 'mask' must contain '\{stem\}'"):
        discover_dataset("folder", root, schema_path, mask_pattern="mask")


def test_other_folder_names(tmp_path) -> None:
    root, schema_path = write_folder_dataset(tmp_path, bands=3, dtype="uint8", count=1)
    (root / "images").rename(root / "img")
    (root / "masks").rename(root / "gt")
    with pytest.raises(PointsegError, match=rf"^{root / 'images'}: no such folder"):
        discover_dataset("folder", root, schema_path)
    discovery = discover_dataset("folder", root, schema_path, images_dir="img", masks_dir="gt")
    assert [(ref.image_path, ref.mask_path) for ref in discovery.refs] == [
        (root / "img" / "scene_0.tif", root / "gt" / "scene_0.tif")
    ]


def test_index_mask_value_outside_the_schema(tmp_path) -> None:
    root, schema_path = write_folder_dataset(tmp_path, bands=3, dtype="uint8", count=1)
    stored = np.ones((40, 40), dtype=np.uint8)
    stored[0, :3] = 9
    path = write_raster(root / "masks" / "scene_0.tif", stored)
    discovery = discover_dataset("folder", root, schema_path)
    dataset = SegmentationDataset(discovery.refs, discovery.schema, BandStats((0.0,) * 3, (1.0,) * 3))
    with pytest.raises(PointsegError, match=rf"^{path}: 1 mask value\(s\) not in the 'toy' schema: 9: 3 px"):
        dataset[0]
