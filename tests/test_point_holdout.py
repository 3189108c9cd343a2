import numpy as np
import pytest
from scipy.spatial.distance import cdist

from pointseg.point_holdout import split_points_in_blocks
from pointseg.points import PointLabels


def random_points(count: int = 300, size: int = 200, seed: int = 0) -> PointLabels:
    rng = np.random.default_rng(seed)
    flat = rng.choice(size * size, size=count, replace=False)
    rows, cols = np.divmod(flat, size)
    return PointLabels(rows, cols, rng.integers(0, 4, count), size, size)


@pytest.mark.parametrize("block_size", [8, 16, 40])
def test_no_held_out_point_within_the_block_size_of_a_training_point(block_size: int) -> None:
    points = random_points()
    split = split_points_in_blocks(points, block_size, 0.25, seed=3, image_id="a")
    assert len(split.held_out) >= round(0.25 * len(points))
    assert len(split.train) > 0
    held = np.column_stack([split.held_out.rows, split.held_out.cols])
    train = np.column_stack([split.train.rows, split.train.cols])
    assert cdist(held, train).min() >= block_size
    # nothing lost: train, held-out and buffer are the points
    keys = lambda p: set(zip(p.rows.tolist(), p.cols.tolist(), p.classes.tolist(), strict=True))  # noqa: E731
    assert keys(split.train) | keys(split.held_out) | keys(split.buffer) == keys(points)
    assert len(split.train) + len(split.held_out) + len(split.buffer) == len(points)


def test_held_out_points_come_in_whole_blocks() -> None:
    points = random_points()
    split = split_points_in_blocks(points, 20, 0.3, seed=0, image_id="a")
    held_blocks = set(
        zip((split.held_out.rows // 20).tolist(), (split.held_out.cols // 20).tolist(), strict=True)
    )
    others = [split.train, split.buffer]
    for part in others:
        blocks = set(zip((part.rows // 20).tolist(), (part.cols // 20).tolist(), strict=True))
        assert not blocks & held_blocks


def test_the_split_is_reproducible_and_depends_on_seed_and_image() -> None:
    points = random_points()
    first = split_points_in_blocks(points, 16, 0.2, seed=0, image_id="a")
    assert split_points_in_blocks(points, 16, 0.2, seed=0, image_id="a").held_out == first.held_out
    assert split_points_in_blocks(points, 16, 0.2, seed=1, image_id="a").held_out != first.held_out
    assert split_points_in_blocks(points, 16, 0.2, seed=0, image_id="b").held_out != first.held_out


def test_no_hold_out_keeps_every_point_for_training() -> None:
    points = random_points(count=5)
    split = split_points_in_blocks(points, 16, 0.0, seed=0, image_id="a")
    assert split.train == points and len(split.held_out) == 0 and len(split.buffer) == 0
