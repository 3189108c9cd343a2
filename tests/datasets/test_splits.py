from pathlib import Path

import pytest

from fake_data import write_landcoverai
from pointseg.config import DataConfig
from pointseg.datasets import split_samples
from pointseg.errors import PointsegError


def data_config(root: Path, **settings: object) -> DataConfig:
    return DataConfig.model_validate(
        {"format": "deepglobe", "root": root, "val": ["102"], "test": ["103"], **settings}
    )


def test_splits_are_disjoint_and_val_is_required(fake_deepglobe: Path) -> None:
    _, splits = split_samples(data_config(fake_deepglobe))
    assert [r.id for r in splits["val"]] == ["102_sat"]
    with pytest.raises(PointsegError, match=r"data\.val is empty"):
        split_samples(data_config(fake_deepglobe, val=[]))
    with pytest.raises(PointsegError, match="matches no sample"):
        split_samples(data_config(fake_deepglobe, val=["999"]))
    with pytest.raises(PointsegError, match="held-out"):
        split_samples(data_config(fake_deepglobe, train=["102"]))


def test_a_dataset_with_split_lists_uses_them_unless_splits_are_given(tmp_path: Path) -> None:
    root = write_landcoverai(tmp_path, sizes=((1024, 1024),))
    (root / "train.txt").write_text("M-33-0_0\nM-33-0_1\n")
    (root / "val.txt").write_text("M-33-0_2\n")
    (root / "test.txt").write_text("M-33-0_3\n")
    schema, splits = split_samples(DataConfig(format="landcoverai", root=root))
    assert schema.name == "landcoverai"
    assert {name: [r.id for r in refs] for name, refs in splits.items()} == {
        "train": ["M-33-0_0", "M-33-0_1"],
        "val": ["M-33-0_2"],
        "test": ["M-33-0_3"],
    }
    _, given = split_samples(DataConfig(format="landcoverai", root=root, val=["M-33-0_0"]))
    assert [r.id for r in given["val"]] == ["M-33-0_0"]
    assert [r.id for r in given["train"]] == ["M-33-0_1", "M-33-0_2", "M-33-0_3"]
