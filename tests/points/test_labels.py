import numpy as np
import pytest

from pointseg.points import PointLabels
from pointseg.schema import IGNORE_INDEX

# PointLabels


def test_point_labels_are_sorted_row_major_and_round_trip_through_a_label_map():
    points = PointLabels(np.array([3, 0, 3, 1]), np.array([1, 4, 0, 2]), np.array([2, 0, 1, 1]), 5, 6)
    assert points.rows.tolist() == [0, 1, 3, 3]
    assert points.cols.tolist() == [4, 2, 0, 1]
    assert points.classes.tolist() == [0, 1, 1, 2]
    label_map = points.to_label_map()
    assert label_map.shape == (5, 6) and label_map.dtype == np.uint8
    assert (label_map != IGNORE_INDEX).sum() == 4
    assert label_map[3, 1] == 2 and label_map[0, 4] == 0 and label_map[0, 0] == IGNORE_INDEX
    assert PointLabels.from_label_map(label_map) == points
    assert len(points) == 4


@pytest.mark.parametrize(
    ("rows", "cols"),
    [([0, 0], [1, 1]), ([5], [0]), ([0], [-1])],
    ids=["same pixel twice", "row past the image", "negative column"],
)
def test_point_labels_reject_impossible_points(rows, cols):
    with pytest.raises(ValueError):
        PointLabels(np.array(rows), np.array(cols), np.zeros(len(rows), dtype=np.int64), 5, 5)


def test_crop_keeps_points_inside_the_window_shifted_even_past_the_edge():
    points = PointLabels(np.array([0, 2, 4]), np.array([0, 3, 4]), np.array([0, 1, 2]), 5, 5)
    window = points.crop(2, 2, 5, 5)  # reaches 2 px past the bottom and right edges
    assert (window.height, window.width) == (5, 5)
    assert window.rows.tolist() == [0, 2] and window.cols.tolist() == [1, 2]
    assert window.classes.tolist() == [1, 2]
    before_start = points.crop(-1, -1, 3, 3)
    assert before_start.rows.tolist() == [1] and before_start.cols.tolist() == [1]


def test_counts_per_class():
    points = PointLabels(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), np.array([2, 0, 2, 2]), 3, 3)
    counts = points.counts_per_class(4)
    assert counts.dtype == np.int64
    assert counts.tolist() == [1, 0, 3, 0]
