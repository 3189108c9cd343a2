import io
import re

import numpy as np
from rich.console import Console

from fake_data import rgb_mask, write_deepglobe, write_raster
from pointseg.datasets import deepglobe, discover_dataset
from pointseg.datasets.check import check_dataset, print_report
from pointseg.schema import IGNORE_INDEX

URBAN, FOREST, WATER = 0, 3, 4


def write_pair(root, image_id: str, labels: np.ndarray) -> None:
    height, width = labels.shape
    write_raster(root / f"{image_id}_sat.jpg", np.full((3, height, width), 100, dtype=np.uint8))
    write_raster(root / f"{image_id}_mask.png", rgb_mask(labels, deepglobe.SCHEMA, ignore_color=(0, 0, 0)))


def write_known_shares(root) -> None:
    """100 mask pixels: 40 urban, 30 water, 20 forest and 10 unknown (ignored)."""
    a = np.full((8, 10), URBAN, dtype=np.uint8)  # 8 rows x 10 columns
    a[:6, 5:] = WATER
    a[6:, 5:] = IGNORE_INDEX
    write_pair(root, "1", a)
    write_pair(root, "2", np.full((5, 4), FOREST, dtype=np.uint8))


def render(report) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    print_report(report, console)
    return console.file.getvalue()


def test_report_counts_sizes_bands_dtypes_and_shares(tmp_path) -> None:
    write_known_shares(tmp_path)
    report = check_dataset(discover_dataset("deepglobe", tmp_path))
    assert report.problems == []
    assert (report.num_images, report.num_samples) == (2, 2)
    assert dict(report.sizes) == {(10, 8): 1, (4, 5): 1}
    assert dict(report.band_counts) == {3: 2}
    assert dict(report.dtypes) == {"uint8": 2}
    assert report.class_pixels.tolist() == [40, 0, 0, 20, 30, 0]
    assert report.ignored_pixels == 10
    assert report.class_shares == {
        "urban_land": 0.4,
        "agriculture": 0.0,
        "rangeland": 0.0,
        "forest": 0.2,
        "water": 0.3,
        "barren": 0.0,
        "(ignored)": 0.1,
    }
    assert report.bands.count == 100
    assert report.bands.mean == [100.0, 100.0, 100.0]
    text = render(report)
    assert "DeepGlobe at" in text and "2 image(s), 2 sample(s)" in text
    assert "sizes: 10x8 (1), 4x5 (1)" in text
    assert "bands: 3 (2)" in text
    assert "dtypes: uint8 (2)" in text
    for name, pixels, share in [
        ("urban_land", 40, "40.0%"),
        ("water", 30, "30.0%"),
        ("forest", 20, "20.0%"),
        ("agriculture", 0, "0.0%"),
        ("(ignored)", 10, "10.0%"),
    ]:
        assert re.search(rf"{re.escape(name)}\s*│\s*{pixels}\s*│\s*{re.escape(share)}", text), name
    assert "no problems found" in text


def test_every_problem_is_listed_with_its_file(tmp_path) -> None:
    write_deepglobe(tmp_path, count=1, size=16)  # 100: good
    labels = np.zeros((16, 16), dtype=np.uint8)
    bad_colour = rgb_mask(labels, deepglobe.SCHEMA)
    bad_colour[:, :2, :3] = np.array([1, 2, 3], dtype=np.uint8)[:, None, None]
    write_pair(tmp_path, "201", labels)
    write_raster(tmp_path / "201_mask.png", bad_colour)  # unknown colour, 6 px
    write_pair(tmp_path, "202", labels)
    write_raster(tmp_path / "202_mask.png", rgb_mask(np.zeros((12, 16), dtype=np.uint8), deepglobe.SCHEMA))
    write_pair(tmp_path, "203", labels)
    (tmp_path / "203_mask.png").unlink()  # missing mask
    write_pair(tmp_path, "204", labels)
    (tmp_path / "204_sat.jpg").unlink()  # missing image
    write_pair(tmp_path, "205", labels)
    (tmp_path / "205_sat.jpg").write_bytes(b"\xff\xd8 not really a JPEG")  # corrupt
    report = check_dataset(discover_dataset("deepglobe", tmp_path))
    assert report.num_images == 4  # 100, 201, 202, 205 have pairs
    expected = [
        (tmp_path / "203_sat.jpg", "missing mask"),
        (tmp_path / "204_mask.png", "missing image"),
        (tmp_path / "201_mask.png", "#010203 (1, 2, 3): 6 px"),
        (tmp_path / "202_mask.png", "is 16x12 px, image"),
        (tmp_path / "205_sat.jpg", "not a readable raster"),
    ]
    assert len(report.problems) == len(expected)
    for (path, what), problem in zip(expected, report.problems, strict=True):
        assert str(path) in problem and what in problem, problem
    text = render(report)
    assert "5 problem(s):" in text
    for path, _ in expected:
        assert str(path) in text
    # The good pair and the readable parts of the others are still counted.
    assert report.class_pixels.sum() + report.ignored_pixels == 16 * 16


def test_truncated_image_is_a_problem(tmp_path) -> None:
    write_deepglobe(tmp_path, count=2, size=64)
    path = tmp_path / "101_sat.jpg"
    path.write_bytes(path.read_bytes()[:300])
    report = check_dataset(discover_dataset("deepglobe", tmp_path))
    assert len(report.problems) == 1
    assert report.problems[0].startswith(f"{path}: ")


def test_empty_folder_is_a_problem(tmp_path) -> None:
    report = check_dataset(discover_dataset("deepglobe", tmp_path))
    assert report.problems == [f"{tmp_path}: no image/mask pairs found"]
    assert (report.num_images, report.num_samples) == (0, 0)
    assert report.class_shares["(ignored)"] == 0.0
    text = render(report)
    assert "1 problem(s):" in text and str(tmp_path) in text


def test_images_without_masks_are_information_when_points_are_given(tmp_path) -> None:
    write_deepglobe(tmp_path, count=3, size=16)
    for mask in tmp_path.glob("*_mask.png"):
        mask.unlink()
    discovery = discover_dataset("deepglobe", tmp_path, require_masks=False)
    report = check_dataset(discovery, points_given=True)
    assert (report.num_images, report.num_samples, report.problems) == (3, 3, [])
    assert report.info == ["3 image(s) without a mask: their labels are the points"]
    assert "info: 3 image(s) without a mask" in render(report)
    report = check_dataset(discovery)
    assert (report.num_images, report.info) == (3, [])
    assert report.problems == [
        f"missing mask: {tmp_path / f'{i}_sat.jpg'} has no mask" for i in (100, 101, 102)
    ]
