import sys

import numpy as np
import pytest
import torch

from fake_data import folder_labels, write_deepglobe, write_folder_dataset, write_raster
from pointseg.cli import main
from pointseg.datasets import SampleRef, discover_dataset
from pointseg.datasets.dataset import SegmentationDataset
from pointseg.datasets.point_sources import PointsDirectory, SimulatedPoints
from pointseg.errors import PointsegError
from pointseg.normalization import BandStats
from pointseg.points import PointProtocol
from pointseg.schema import IGNORE_INDEX

IDENTITY3 = BandStats((0.0,) * 3, (1.0,) * 3)
PROTOCOL = PointProtocol("density", density=0.05, seed=1)


# ---------------------------------------------------------------- point labels


def test_simulated_points_are_reproducible_and_on_their_class(folder) -> None:
    first = SegmentationDataset(folder.refs, folder.schema, IDENTITY3, points=SimulatedPoints(PROTOCOL))
    second = SegmentationDataset(folder.refs, folder.schema, IDENTITY3, points=SimulatedPoints(PROTOCOL))
    other_seed = SegmentationDataset(
        folder.refs,
        folder.schema,
        IDENTITY3,
        points=SimulatedPoints(PointProtocol("density", density=0.05, seed=2)),
    )
    for index in range(2):
        points = first[index]["points"]
        assert points.dtype == torch.int64
        torch.testing.assert_close(points, second[index]["points"])
        assert not torch.equal(points, other_seed[index]["points"])
        labelled = points != IGNORE_INDEX
        assert int(labelled.sum()) == round(0.05 * (40 * 40 - 4))  # 79.8 -> 80 of the valid pixels
        torch.testing.assert_close(
            points[labelled], torch.from_numpy(folder_labels(index).astype(np.int64))[labelled]
        )
    assert not torch.equal(first[0]["points"], first[1]["points"])


def test_simulated_points_need_a_mask(folder) -> None:
    ref = SampleRef("lone", folder.refs[0].image_path, None, "lone")
    with pytest.raises(PointsegError, match="no dense mask to simulate points from"):
        SegmentationDataset([ref], folder.schema, IDENTITY3, points=SimulatedPoints(PROTOCOL))


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
    def build() -> SegmentationDataset:
        return SegmentationDataset(folder.refs, folder.schema, IDENTITY3, points=PointsDirectory(tmp_path))

    with pytest.raises(
        PointsegError, match=r"no point labels for sample 'scene_0' \(expected scene_0.tif or scene_0.png\)"
    ):
        build()
    write_raster(tmp_path / "scene_0.png", np.full((30, 40), IGNORE_INDEX, dtype=np.uint8))
    write_raster(tmp_path / "scene_1.png", np.full((40, 40), IGNORE_INDEX, dtype=np.uint8))
    with pytest.raises(PointsegError, match="point labels of 'scene_0' are 30x40, the image is 40x40"):
        build()
    write_raster(tmp_path / "scene_0.png", np.full((40, 40), IGNORE_INDEX, dtype=np.uint8))
    write_raster(tmp_path / "scene_1.png", np.full((2, 40, 40), IGNORE_INDEX, dtype=np.uint8))
    with pytest.raises(PointsegError, match=r"scene_1\.png: point label map has 2 bands, expected 1"):
        build()


def test_a_missing_or_empty_points_file_is_found_when_the_dataset_is_built(folder, tmp_path) -> None:
    """Regression (issue 11): the error came from a DataLoader worker in the middle of training."""
    write_raster(tmp_path / "scene_0.png", np.full((40, 40), IGNORE_INDEX, dtype=np.uint8))
    with pytest.raises(PointsegError) as error:
        SegmentationDataset(folder.refs, folder.schema, IDENTITY3, points=PointsDirectory(tmp_path))
    assert "no point labels for sample 'scene_1'" in str(error.value)
    assert str(folder.refs[1].image_path) in str(error.value)
    (tmp_path / "scene_1.tif").write_bytes(b"")
    with pytest.raises(
        PointsegError, match=r"scene_1\.tif: empty file; expected the point label map of .*scene_1"
    ):
        SegmentationDataset(folder.refs, folder.schema, IDENTITY3, points=PointsDirectory(tmp_path))
    with pytest.raises(PointsegError, match=r"nowhere: no such folder; expected point label maps"):
        SegmentationDataset(
            folder.refs, folder.schema, IDENTITY3, points=PointsDirectory(tmp_path / "nowhere")
        )
