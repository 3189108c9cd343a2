import pytest

from fake_data import write_folder_dataset
from pointseg.datasets import Discovery, discover_dataset


@pytest.fixture
def folder(tmp_path) -> Discovery:
    """Two georeferenced 40x40 scenes (3 bands) whose masks have ignored 2x2 corners."""
    root, schema_path = write_folder_dataset(tmp_path / "scenes", bands=3, dtype="uint8")
    return discover_dataset("folder", root, schema_path)
