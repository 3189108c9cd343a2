import pytest

from fake_data import write_dubai
from pointseg.datasets import discover_dataset, select_refs
from pointseg.errors import PointsegError


def test_select_refs_by_id_group_and_wildcard(tmp_path) -> None:
    write_dubai(tmp_path, tiles=(1, 2, 4), per_tile=2)
    refs = discover_dataset("dubai", tmp_path).refs
    assert [r.id for r in select_refs(refs, ["Tile 2"], "val")] == [
        "Tile 2/image_part_001",
        "Tile 2/image_part_002",
    ]
    assert [r.id for r in select_refs(refs, ["Tile [14]"], "val")] == [
        "Tile 1/image_part_001",
        "Tile 1/image_part_002",
        "Tile 4/image_part_001",
        "Tile 4/image_part_002",
    ]
    assert [r.id for r in select_refs(refs, ["*/image_part_002", "Tile 1/image_part_001"], "test")] == [
        "Tile 1/image_part_001",
        "Tile 1/image_part_002",
        "Tile 2/image_part_002",
        "Tile 4/image_part_002",
    ]
    with pytest.raises(
        PointsegError, match=r"^--val: 'Tile 9' matches no sample id or group \(groups: Tile 1, Tile 2"
    ):
        select_refs(refs, ["Tile 2", "Tile 9"], "--val")
