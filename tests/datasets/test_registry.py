import subprocess
import sys
from typing import get_args

import pytest

from fake_data import write_deepglobe
from pointseg.choices import DatasetFormat as LightDatasetFormat
from pointseg.datasets import BUILTIN_SCHEMAS, DATASET_FORMATS, DATASETS, DatasetFormat, discover_dataset
from pointseg.errors import PointsegError


def test_the_registry_holds_one_adapter_per_format_name() -> None:
    assert LightDatasetFormat is DatasetFormat
    assert set(DATASETS) == set(get_args(DatasetFormat)) == set(DATASET_FORMATS)
    assert set(BUILTIN_SCHEMAS) == {"deepglobe", "landcoverai", "dubai"}


def test_only_formats_with_split_lists_take_a_split(tmp_path) -> None:
    assert [name for name, adapter in DATASETS.items() if adapter.split_lists] == ["landcoverai"]
    root = write_deepglobe(tmp_path / "data", count=1, size=16)
    with pytest.raises(PointsegError, match=r"split lists are a LandCover\.ai feature; format 'deepglobe'"):
        discover_dataset("deepglobe", root, split="val")
    with pytest.raises(PointsegError, match="unknown dataset format 'loveda'; expected one of deepglobe"):
        discover_dataset("loveda", root)


def test_format_names_and_discovery_import_no_torch() -> None:
    code = (
        "import sys; import pointseg; before = 'torch' in sys.modules; "
        "import pointseg.datasets; print(before, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    torch_before, torch_after = result.stdout.split()
    if torch_before == "True":
        pytest.skip("the pointseg package itself imports torch (issue 12: the torchvision shim)")
    assert torch_after == "False"


def test_only_landcoverai_ships_split_lists() -> None:
    assert {name for name, adapter in DATASETS.items() if adapter.ships_split_lists} == {"landcoverai"}
