import torch

from pointseg.schema import IGNORE_INDEX
from pointseg.transforms import BatchAugmentation


def position_batch(size: int = 16) -> dict[str, torch.Tensor]:
    """An image whose value encodes each pixel's position, and labels derived from the position."""
    position = torch.arange(size * size).reshape(size, size)
    image = (position.float() + 1000).expand(2, 3, size, size).clone()
    return {
        "image": image,
        "mask": (position % 7).expand(2, size, size).clone(),
        "points": torch.where(position % 5 == 0, position % 3, IGNORE_INDEX).expand(2, size, size).clone(),
    }


def test_labels_move_with_the_image_and_padding_is_ignored() -> None:
    torch.manual_seed(0)
    augment = BatchAugmentation(flips=True, rotate90=True, color_jitter=0.0, random_crop=0.25)
    saw_padding = saw_motion = False
    for _ in range(10):
        out = augment(position_batch())
        padded = out["image"][:, 0] == 0
        position = (out["image"][:, 0] - 1000).round().long()
        assert torch.equal(out["mask"] == IGNORE_INDEX, padded)
        assert torch.equal(out["mask"][~padded], position[~padded] % 7)
        expected_points = torch.where(position % 5 == 0, position % 3, IGNORE_INDEX)
        assert torch.equal(out["points"][~padded], expected_points[~padded])
        assert (out["points"][padded] == IGNORE_INDEX).all()
        saw_padding |= bool(padded.any())
        saw_motion |= not torch.equal(
            position[~padded], (torch.arange(256).reshape(16, 16).expand(2, 16, 16))[~padded]
        )
    assert saw_padding and saw_motion


def test_expanded_labels_weights_and_valid_masks_move_with_the_image() -> None:
    torch.manual_seed(1)
    augment = BatchAugmentation(flips=True, rotate90=True, color_jitter=0.0, random_crop=0.25)
    for _ in range(10):
        batch = position_batch()
        position = torch.arange(256).reshape(16, 16).expand(2, 16, 16)
        batch["expanded_points"] = position % 4
        batch["point_weights"] = (position % 9).float() / 8 + 0.125
        batch["valid"] = torch.ones(2, 16, 16, dtype=torch.bool)
        out = augment(batch)
        padded = out["image"][:, 0] == 0
        moved = (out["image"][:, 0] - 1000).round().long()
        assert torch.equal(out["expanded_points"][~padded], moved[~padded] % 4)
        assert (out["expanded_points"][padded] == IGNORE_INDEX).all()
        assert out["point_weights"].dtype == torch.float32
        torch.testing.assert_close(out["point_weights"][~padded], (moved[~padded] % 9).float() / 8 + 0.125)
        assert (out["point_weights"][padded] == 0).all()
        assert out["valid"].dtype == torch.bool and torch.equal(out["valid"], ~padded)


def test_no_geometry_and_jitter_only_changes_intensity() -> None:
    batch = position_batch()
    out = BatchAugmentation(flips=False, rotate90=False, color_jitter=0.2, random_crop=0.0)(batch)
    assert torch.equal(out["mask"], batch["mask"]) and torch.equal(out["points"], batch["points"])
    ratio = out["image"] / batch["image"]
    assert not torch.allclose(out["image"], batch["image"])
    assert ((ratio > 0.75) & (ratio < 1.25)).all()


def test_other_keys_pass_through() -> None:
    batch = {**position_batch(), "id": ["a", "b"]}
    assert BatchAugmentation()(batch)["id"] == ["a", "b"]


def test_the_geometric_pipeline_is_built_once_per_crop_size(monkeypatch) -> None:
    augment = BatchAugmentation(flips=True, rotate90=True, color_jitter=0.0, random_crop=0.25)
    built: list[tuple[int, int]] = []
    build = augment._build_geometric
    monkeypatch.setattr(
        augment, "_build_geometric", lambda size, count: built.append(size) or build(size, count)
    )
    for _ in range(3):
        augment(position_batch(16))
        augment(position_batch(32))
    assert built == [(16, 16), (32, 32)]
    assert augment.geometric((16, 16), 2) is augment.geometric((16, 16), 2)
