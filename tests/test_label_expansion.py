import numpy as np
import pytest
import torch

from pointseg.errors import PointsegError
from pointseg.label_expansion import expand_points, scale_bands, superpixels
from pointseg.losses import partial_cross_entropy, weighted_partial_cross_entropy
from pointseg.schema import IGNORE_INDEX

U = IGNORE_INDEX


def quadrant_segments() -> np.ndarray:
    """6 x 6 ids: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right (3 x 3 each)."""
    return np.repeat(np.repeat(np.array([[0, 1], [2, 3]]), 3, axis=0), 3, axis=1)


def test_a_point_labels_exactly_its_superpixel() -> None:
    segments = quadrant_segments()
    points = np.full((6, 6), U)
    points[1, 4] = 2  # in segment 1
    labels, weights = expand_points(points, segments, expanded_weight=0.3)
    assert np.array_equal(labels == 2, segments == 1)
    assert np.all(labels[segments != 1] == U)
    assert labels.dtype == np.int64 and weights.dtype == np.float32


def test_mixed_superpixels_are_not_expanded() -> None:
    segments = quadrant_segments()
    points = np.full((6, 6), U)
    points[0, 0], points[2, 2] = 1, 3  # two classes in segment 0
    points[4, 4], points[5, 5] = 0, 0  # one class twice in segment 3
    labels, weights = expand_points(points, segments)
    expected = np.full((6, 6), U)
    expected[segments == 3] = 0
    expected[0, 0], expected[2, 2] = 1, 3
    assert np.array_equal(labels, expected)
    assert weights[1, 1] == 0 and weights[0, 0] == 1


def test_weight_map() -> None:
    segments = quadrant_segments()
    points = np.full((6, 6), U)
    points[4, 1] = 5
    points[0, 0], points[0, 1] = 1, 2
    labels, weights = expand_points(points, segments, expanded_weight=0.25)
    expected = np.zeros((6, 6), np.float32)
    expected[segments == 2] = 0.25
    expected[4, 1] = expected[0, 0] = expected[0, 1] = 1.0
    assert np.array_equal(weights, expected)
    assert np.array_equal(weights > 0, labels != U)


def test_no_points_expand_to_nothing() -> None:
    labels, weights = expand_points(np.full((6, 6), U), quadrant_segments())
    assert np.all(labels == U) and not weights.any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"expanded_weight": 0.0}, r"expanded_weight 0.0: expected a number in \(0, 1\]"),
        ({"expanded_weight": 1.5}, r"expanded_weight 1.5"),
        ({"segments": np.zeros((5, 6), np.int64)}, r"points \(6, 6\) and segments \(5, 6\)"),
        ({"segments": -np.ones((6, 6), np.int64)}, r"negative ids"),
    ],
)
def test_bad_expansion_arguments_are_rejected(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"points": np.full((6, 6), U), "segments": quadrant_segments(), **kwargs}
    with pytest.raises(PointsegError, match=message):
        expand_points(**arguments)  # type: ignore[arg-type]


def two_colour_image(bands: int = 3) -> np.ndarray:
    """(bands, 40, 40) uint16: left half dark, right half bright, with a little noise."""
    rng = np.random.default_rng(0)
    image = np.where(np.arange(40) < 20, 1000, 30000)[None, None, :].repeat(40, axis=1).repeat(bands, axis=0)
    return (image + rng.integers(0, 200, image.shape)).astype(np.uint16)


@pytest.mark.parametrize("method", ["slic", "felzenszwalb"])
@pytest.mark.parametrize("bands", [3, 5])
def test_superpixels_follow_colour_edges(method: str, bands: int) -> None:
    segments = superpixels(two_colour_image(bands), method=method, pixels_per_segment=100)  # type: ignore[arg-type]
    assert segments.shape == (40, 40) and segments.dtype == np.int64
    left, right = set(np.unique(segments[:, :20])), set(np.unique(segments[:, 20:]))
    assert not left & right  # no superpixel straddles the edge
    assert len(left | right) > 2


def test_expansion_on_real_superpixels_stays_on_its_side() -> None:
    segments = superpixels(two_colour_image(), pixels_per_segment=100)
    points = np.full((40, 40), U)
    points[10, 5], points[30, 35] = 0, 1
    labels, _ = expand_points(points, segments)
    assert np.all(labels[:, :20] != 1) and np.all(labels[:, 20:] != 0)
    assert (labels == 0).sum() > 20 and (labels == 1).sum() > 20


def test_scale_bands_maps_percentiles_to_unit_range() -> None:
    image = np.stack([np.arange(100).reshape(10, 10), np.full((10, 10), 7)]).astype(np.uint16)
    scaled = scale_bands(image, low=0, high=100)
    assert scaled.shape == (10, 10, 2)
    assert scaled[..., 0].min() == 0 and scaled[..., 0].max() == 1
    assert np.all(scaled[..., 1] == 0)  # a constant band


def test_superpixels_reject_bad_input() -> None:
    with pytest.raises(PointsegError, match="superpixel method 'watershed' is not known"):
        superpixels(two_colour_image(), method="watershed")  # type: ignore[arg-type]
    with pytest.raises(PointsegError, match=r"expected \(C, H, W\)"):
        superpixels(np.zeros((4, 4)))


def test_weighted_partial_ce_with_unit_weights_is_partial_ce() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 5)
    target = torch.full((2, 5, 5), U)
    target[:, ::2, ::2] = torch.randint(0, 4, target[:, ::2, ::2].shape)
    ones = torch.ones(2, 5, 5)
    torch.testing.assert_close(
        weighted_partial_cross_entropy(logits, target, ones), partial_cross_entropy(logits, target)
    )


def test_weighted_partial_ce_by_hand() -> None:
    # Two labelled pixels of 2 classes, logits 0 everywhere: each pixel's loss is log 2.
    # A third pixel with class 1 and logits (0, log 3): loss log(4/3), weight 0.5.
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 1, 0, 2] = float(np.log(3))
    target = torch.tensor([[[0, 1, 1, U]]])
    pixel_weight = torch.tensor([[[1.0, 1.0, 0.5, 7.0]]])  # the unlabelled pixel's weight is unused
    expected = (2 * np.log(2) + 0.5 * np.log(4 / 3)) / 2.5
    loss = weighted_partial_cross_entropy(logits, target, pixel_weight)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    class_weighted = weighted_partial_cross_entropy(
        logits, target, pixel_weight, weight=torch.tensor([2.0, 1])
    )
    assert class_weighted.item() == pytest.approx((3 * np.log(2) + 0.5 * np.log(4 / 3)) / 2.5, rel=1e-6)


def test_weighted_partial_ce_gradient_is_zero_on_unlabelled_and_zero_weight_pixels() -> None:
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), U)
    target[0, 0, 0], target[0, 1, 1] = 2, 0
    pixel_weight = torch.zeros(1, 4, 4)
    pixel_weight[0, 0, 0] = 1.0
    weighted_partial_cross_entropy(logits, target, pixel_weight).backward()
    assert logits.grad is not None
    touched = logits.grad.abs().sum(1)[0] > 0
    assert touched.nonzero().tolist() == [[0, 0]]


def test_weighted_partial_ce_all_unlabelled_is_zero_and_shape_is_checked() -> None:
    logits = torch.randn(1, 3, 4, 4)
    assert weighted_partial_cross_entropy(logits, torch.full((1, 4, 4), U), torch.ones(1, 4, 4)).item() == 0
    with pytest.raises(ValueError, match="pixel_weight shaped like target"):
        weighted_partial_cross_entropy(logits, torch.full((1, 4, 4), U), torch.ones(4, 4))


def test_scale_bands_leaves_non_finite_pixels_out_and_sets_them_to_zero() -> None:
    image = np.stack([np.arange(16, dtype=np.float32).reshape(4, 4), np.full((4, 4), np.nan, np.float32)])
    image[0, 0, :2] = [np.nan, np.inf]
    scaled = scale_bands(image, low=0, high=100)
    assert np.isfinite(scaled).all() and scaled.dtype == np.float32
    assert scaled[0, 0, 0] == 0 and scaled[0, 1, 0] == 0 and (scaled[..., 1] == 0).all()
    assert scaled[0, 2, 0] == 0 and scaled[3, 3, 0] == 1  # percentiles of the finite values 2..15
    assert superpixels(image, pixels_per_segment=4).shape == (4, 4)
