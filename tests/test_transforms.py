import torch

from pointseg.schema import IGNORE_INDEX
from pointseg.transforms import BatchAugmentation, strongly_perturbed


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


def test_strong_perturbation_keeps_pixels_in_place() -> None:
    # A linear ramp: without colour change (strength 0) the blur keeps it as it is away from the
    # borders, so every sample must equal the input there, outside its box; any flip or shift would not.
    torch.manual_seed(0)
    ramp = torch.arange(32, dtype=torch.float32)
    image = (1 + ramp[:, None] * 0.3 + ramp[None, :] * 0.1).expand(8, 3, 32, 32).clone()
    original = image.clone()
    out = strongly_perturbed(image, strength=0.0)
    assert torch.equal(image, original)  # the input is not changed
    assert out.shape == image.shape and out.dtype == image.dtype
    interior = (slice(None), slice(None), slice(6, -6), slice(6, -6))
    boxed = out == 0
    assert torch.allclose(out[interior][~boxed[interior]], image[interior][~boxed[interior]], atol=1e-4)
    boxes = 0
    for sample in range(8):
        zeros = boxed[sample].all(0)
        if zeros.any():
            boxes += 1
            rows, cols = torch.nonzero(zeros, as_tuple=True)
            height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
            assert int(zeros.sum()) == height * width  # one rectangle
            assert 8 <= height <= 16 and 8 <= width <= 16  # a quarter to a half of each side
    assert 0 < boxes < 8


def test_strong_perturbation_blurs_about_half_and_changes_colours_per_band() -> None:
    torch.manual_seed(0)
    image = torch.randn(64, 3, 32, 32)
    out = strongly_perturbed(image, strength=0.0)
    # Blur lowers the differences between neighbours; boxes (zeros) are left out of the comparison.
    kept = (out != 0).all(1)
    pairs = kept[:, :, 1:] & kept[:, :, :-1]
    roughness = ((out[..., 1:] - out[..., :-1]).abs().mean(1) * pairs).sum((1, 2)) / pairs.sum((1, 2))
    input_roughness = (image[..., 1:] - image[..., :-1]).abs().mean(1)
    blurred = roughness < 0.9 * (input_roughness * pairs).sum((1, 2)) / pairs.sum((1, 2))
    assert 16 <= int(blurred.sum()) <= 48
    # Colour: with strength 0.5 the bands of one sample get different gains and offsets.
    plain = strongly_perturbed(torch.ones(4, 3, 32, 32), strength=0.5)
    corner = plain[:, :, 0, 0]
    assert ((corner - 1).abs() <= 1.0 + 1e-6).all() and not torch.allclose(corner[:, 0], corner[:, 1])


def test_strong_perturbation_of_small_and_many_band_crops() -> None:
    torch.manual_seed(0)
    for shape in [(2, 3, 8, 8), (2, 5, 20, 24)]:
        image = torch.randn(shape)
        out = strongly_perturbed(image)
        assert out.shape == image.shape and torch.isfinite(out).all()


def test_strong_perturbation_is_reproducible_with_a_seed() -> None:
    image = torch.randn(4, 3, 16, 16)
    torch.manual_seed(3)
    first = strongly_perturbed(image)
    torch.manual_seed(3)
    assert torch.equal(first, strongly_perturbed(image))
    assert not torch.equal(first, image)


def block_batch(size: int = 32, block: int = 8) -> dict[str, torch.Tensor]:
    """An image of constant blocks whose value names the block, labelled with the block's index."""
    rows = torch.arange(size) // block
    index = rows[:, None] * (size // block) + rows[None, :]
    return {
        "image": (index.float() + 10).expand(2, 3, size, size).clone(),
        "mask": (index % 7).expand(2, size, size).clone(),
        "points": torch.where(index % 3 == 0, index % 5, IGNORE_INDEX).expand(2, size, size).clone(),
    }


def test_random_scale_zooms_labels_with_the_image() -> None:
    # Away from block edges a zoomed image keeps a block's exact value, and its label must be that
    # block's; pixels brought in from outside the crop are 0 and ignored.
    torch.manual_seed(0)
    augment = BatchAugmentation(flips=False, rotate90=False, color_jitter=0.0, random_scale=0.5)
    zoomed_in = zoomed_out = False
    for _ in range(20):
        batch = block_batch()
        out = augment(batch)
        value = out["image"][:, 0]
        padded = value == 0
        exact = (value - value.round()).abs() < 1e-4
        index = (value.round() - 10).long()
        inside = exact & ~padded & (index >= 0)
        assert torch.equal(out["mask"][inside], index[inside] % 7)
        clicked = inside & (out["points"] != IGNORE_INDEX)
        assert torch.equal(out["points"][clicked], index[clicked] % 5)
        assert (out["mask"][padded] == IGNORE_INDEX).all() and (out["points"][padded] == IGNORE_INDEX).all()
        # a zoom-out pads every sample's border, a zoom-in changes the image without padding it
        changed = (out["image"] != batch["image"]).flatten(1).any(dim=1)
        zoomed_in |= bool((changed & ~padded.flatten(1).any(dim=1)).any())
        zoomed_out |= bool(padded.any())
    assert zoomed_in and zoomed_out


def test_no_random_scale_by_default() -> None:
    batch = block_batch()
    out = BatchAugmentation(flips=False, rotate90=False, color_jitter=0.0)(batch)
    assert torch.equal(out["image"], batch["image"]) and torch.equal(out["mask"], batch["mask"])
