"""Hold out clicked points for validation in spatial blocks, so held-out points are not beside training ones.

Neighbouring pixels look alike, so a point held out at random next to a training point says
little about how the map does elsewhere. Here the image is cut into square blocks; whole blocks
of points are held out until they hold the asked share of the points, and training points closer
than the block size to any held-out point are set aside (a buffer, used for neither). No
held-out point is then within the block size of a training point.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from pointseg.points import PointLabels


@dataclass(frozen=True)
class HoldoutSplit:
    """The points of one image split for training and a held-out check.

    Attributes:
        train: Points to train on.
        held_out: Points to validate on.
        buffer: Points used for neither: training points within the block size of a held-out point.
    """

    train: PointLabels
    held_out: PointLabels
    buffer: PointLabels


def _subset(points: PointLabels, keep: np.ndarray) -> PointLabels:
    return PointLabels(
        points.rows[keep], points.cols[keep], points.classes[keep], points.height, points.width
    )


def split_points_in_blocks(
    points: PointLabels, block_size: int, fraction: float, seed: int, image_id: str
) -> HoldoutSplit:
    """Hold out whole ``block_size`` blocks of points, in a random order, until ``fraction`` are held out.

    Args:
        points: The clicked points of one image.
        block_size: Side of the square blocks, in pixels; also the smallest distance kept between
            a held-out and a training point.
        fraction: Share of the points to hold out, in ``[0, 1)``; blocks are added until at least
            ``round(fraction * len(points))`` points are held out (0 holds out nothing).
        seed: Seed of the block order; each image gets its own stream from the seed and its id.
        image_id: Stable identifier of the image.

    Returns:
        The training, held-out and buffer points; together they are ``points``.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    wanted = round(fraction * len(points))
    held = np.zeros(len(points), dtype=bool)
    if wanted:
        blocks = (points.rows // block_size) * (points.width // block_size + 1) + points.cols // block_size
        rng = np.random.default_rng([seed, zlib.crc32(image_id.encode())])
        for block in rng.permutation(np.unique(blocks)):
            held |= blocks == block
            if np.count_nonzero(held) >= wanted:
                break
    buffer = np.zeros(len(points), dtype=bool)
    if held.any() and not held.all():
        tree = cKDTree(np.column_stack([points.rows[held], points.cols[held]]).astype(np.float64))
        others = np.flatnonzero(~held)
        distance, _ = tree.query(
            np.column_stack([points.rows[others], points.cols[others]]).astype(np.float64)
        )
        buffer[others[distance < block_size]] = True
    return HoldoutSplit(_subset(points, ~held & ~buffer), _subset(points, held), _subset(points, buffer))
