import numpy as np
import pytest

from fake_points import random_mask
from pointseg.points import (
    PointProtocol,
    sample_density,
    sample_per_class,
    sample_per_region,
    simulate_points,
)
from pointseg.points import simulate as simulate_module
from pointseg.schema import IGNORE_INDEX

# Simulation


def test_sample_per_class_takes_n_of_each_class_or_all_of_a_small_class():
    mask = np.full((20, 20), IGNORE_INDEX, dtype=np.uint8)
    mask[:10] = 0  # 200 px
    mask[10:13, :10] = 1  # 30 px
    mask[15, 3:6] = 2  # 3 px
    points = sample_per_class(mask, 10, np.random.default_rng(0))
    assert points.counts_per_class(3).tolist() == [10, 10, 3]
    small = points.classes == 2
    assert points.rows[small].tolist() == [15, 15, 15] and points.cols[small].tolist() == [3, 4, 5]


def test_sample_density_labels_the_asked_fraction_of_valid_pixels():
    mask = np.zeros((200, 300), dtype=np.uint8)
    mask[:, :75] = IGNORE_INDEX
    mask[100:, 150:] = 1
    n_valid = 200 * 225
    points = sample_density(mask, 0.013, np.random.default_rng(0))
    assert len(points) == round(0.013 * n_valid) == 585
    assert abs(len(points) / n_valid - 0.013) <= 0.0005
    assert points.cols.min() >= 75


@pytest.mark.parametrize(
    "protocol",
    [
        PointProtocol("density", density=0.05),
        PointProtocol("per-class", per_class=7),
        PointProtocol("per-region", min_area=5),
    ],
    ids=lambda p: p.strategy,
)
def test_simulated_points_lie_on_pixels_of_their_class_never_on_ignored(protocol):
    mask = random_mask()
    points = simulate_points(mask, protocol, "tile_1")
    assert len(points) > 0
    assert np.array_equal(mask[points.rows, points.cols], points.classes)
    assert not np.any(points.classes == IGNORE_INDEX)
    assert (points.height, points.width) == mask.shape


@pytest.mark.parametrize("strategy", ["density", "per-class"])
def test_simulation_is_reproducible_per_seed_and_image(strategy):
    mask = random_mask()
    protocol = PointProtocol(strategy, density=0.05, per_class=5)
    first = simulate_points(mask, protocol, "tile_1")
    assert simulate_points(mask, PointProtocol(strategy, density=0.05, per_class=5), "tile_1") == first
    other_seed = PointProtocol(strategy, density=0.05, per_class=5, seed=1)
    assert simulate_points(mask, other_seed, "tile_1") != first
    assert simulate_points(mask, protocol, "tile_2") != first


def test_sample_per_region_puts_one_point_at_the_centre_of_each_large_region():
    mask = np.full((30, 40), IGNORE_INDEX, dtype=np.uint8)
    mask[2:9, 2:9] = 0  # 7x7 square, centre (5, 5)
    mask[10:15, 20:25] = 1  # 5x5 square, centre (12, 22)
    mask[0:5, 35:40] = 1  # 5x5 square in the top-right corner: the image edge is border, centre (2, 37)
    mask[20:22, 30:32] = 2  # 2x2 blob, below min_area
    mask[20:23, 0:3] = 0  # two 3x3 squares touching only at a corner: two 4-connected regions
    mask[23:26, 3:6] = 0
    points = sample_per_region(mask, min_area=9)
    assert list(zip(points.rows.tolist(), points.cols.tolist(), points.classes.tolist(), strict=True)) == [
        (2, 37, 1),
        (5, 5, 0),
        (12, 22, 1),
        (21, 1, 0),
        (24, 4, 0),
    ]
    assert len(sample_per_region(mask, min_area=4)) == 6  # now the blob counts too
    assert len(sample_per_region(mask, min_area=26)) == 1  # only the 7x7 square


def test_sample_per_region_breaks_ties_by_row_major_order():
    mask = np.full((6, 8), IGNORE_INDEX, dtype=np.uint8)
    mask[1:3, 1:7] = 0  # a 2x6 bar: every pixel is 1 px from the border
    points = sample_per_region(mask, min_area=1)
    assert (points.rows.tolist(), points.cols.tolist()) == ([1], [1])


def test_sample_per_region_whole_image_transform_gives_the_same_points(monkeypatch):
    mask = random_mask(60, 70, seed=3)
    monkeypatch.setattr(simulate_module, "_REGION_COST_PX", 0)  # box by box
    by_box = sample_per_region(mask, min_area=3)
    monkeypatch.setattr(simulate_module, "_REGION_COST_PX", 10**9)  # one transform per class
    by_image = sample_per_region(mask, min_area=3)
    assert len(by_box) > 20
    assert by_image == by_box
