"""The value type of point labels: a few labelled pixels of one image (:class:`PointLabels`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pointseg.schema import IGNORE_INDEX


@dataclass(frozen=True, eq=False)
class PointLabels:
    """Sparse point labels of one image: pixel (row, col) positions and their classes.

    Points are kept sorted in row-major order (by row, then column) and each pixel holds at most
    one point, so two sets of the same points compare equal whatever order they were made in.
    The arrays are read-only.

    Attributes:
        rows: ``(N,)`` int64 pixel rows, ``0 <= rows < height``.
        cols: ``(N,)`` int64 pixel columns, ``0 <= cols < width``.
        classes: ``(N,)`` int64 class labels in ``0..IGNORE_INDEX-1``.
        height: Image height in pixels.
        width: Image width in pixels.
    """

    rows: np.ndarray
    cols: np.ndarray
    classes: np.ndarray
    height: int
    width: int

    def __post_init__(self) -> None:
        rows, cols, classes = (
            np.asarray(a, dtype=np.int64).ravel() for a in (self.rows, self.cols, self.classes)
        )
        if not len(rows) == len(cols) == len(classes):
            raise ValueError(
                f"rows, cols and classes differ in length: {len(rows)}, {len(cols)}, {len(classes)}"
            )
        if self.height < 0 or self.width < 0:
            raise ValueError(f"image size {self.height}x{self.width} is negative")
        if len(rows) and (
            rows.min() < 0 or rows.max() >= self.height or cols.min() < 0 or cols.max() >= self.width
        ):
            raise ValueError(f"points lie outside the {self.height}x{self.width} image")
        if len(classes) and (classes.min() < 0 or classes.max() >= IGNORE_INDEX):
            raise ValueError(
                f"classes must be in 0..{IGNORE_INDEX - 1}, found {classes.min()}..{classes.max()}"
            )
        keys = rows * self.width + cols
        order = np.argsort(keys, kind="stable")
        if np.any(np.diff(keys[order]) == 0):
            raise ValueError("two points lie on the same pixel")
        for name, values in (("rows", rows), ("cols", cols), ("classes", classes)):
            values = values[order]
            values.setflags(write=False)
            object.__setattr__(self, name, values)

    def __len__(self) -> int:
        return len(self.rows)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PointLabels):
            return NotImplemented
        return (
            (self.height, self.width) == (other.height, other.width)
            and np.array_equal(self.rows, other.rows)
            and np.array_equal(self.cols, other.cols)
            and np.array_equal(self.classes, other.classes)
        )

    def to_label_map(self) -> np.ndarray:
        """Return the points as a dense ``(H, W)`` uint8 map, ``IGNORE_INDEX`` where unlabelled."""
        label_map = np.full((self.height, self.width), IGNORE_INDEX, dtype=np.uint8)
        label_map[self.rows, self.cols] = self.classes
        return label_map

    @classmethod
    def from_label_map(cls, label_map: np.ndarray) -> PointLabels:
        """Make points of every pixel of an ``(H, W)`` label map that is not ``IGNORE_INDEX``."""
        if label_map.ndim != 2:
            raise ValueError(f"label map must be (H, W), got shape {label_map.shape}")
        rows, cols = np.nonzero(label_map != IGNORE_INDEX)
        return cls(rows, cols, label_map[rows, cols], label_map.shape[0], label_map.shape[1])

    def crop(self, row_off: int, col_off: int, height: int, width: int) -> PointLabels:
        """Return the points inside a window, in the window's pixel coordinates.

        Args:
            row_off: First row of the window, in image pixels (may be negative).
            col_off: First column of the window, in image pixels (may be negative).
            height: Window height in pixels; the window may reach past the image.
            width: Window width in pixels.

        Returns:
            Points of a ``height`` x ``width`` image whose pixel ``(0, 0)`` is image pixel
            ``(row_off, col_off)``.
        """
        inside = (
            (self.rows >= row_off)
            & (self.rows < row_off + height)
            & (self.cols >= col_off)
            & (self.cols < col_off + width)
        )
        return PointLabels(
            self.rows[inside] - row_off, self.cols[inside] - col_off, self.classes[inside], height, width
        )

    def counts_per_class(self, num_classes: int) -> np.ndarray:
        """Return the ``(num_classes,)`` int64 number of points of each class."""
        if len(self) and self.classes.max() >= num_classes:
            raise ValueError(
                f"a point has class {self.classes.max()}, but there are only {num_classes} classes"
            )
        return np.bincount(self.classes, minlength=num_classes).astype(np.int64)
