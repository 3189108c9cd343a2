"""Simulating point labels from a dense mask: a fraction of the pixels, N per class, or one per region.

:func:`simulate_points` draws the points of one image as a :class:`~pointseg.points.protocol.PointProtocol`
says, from a random stream that depends only on the protocol's seed and the image id.
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy import ndimage

from pointseg.points.labels import PointLabels
from pointseg.points.protocol import PointProtocol
from pointseg.schema import IGNORE_INDEX


def _valid_mask(mask: np.ndarray) -> np.ndarray:
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    return mask


def _points_at(mask: np.ndarray, flat_indices: np.ndarray) -> PointLabels:
    height, width = mask.shape
    rows, cols = np.divmod(np.sort(flat_indices), width)
    return PointLabels(rows, cols, mask[rows, cols], height, width)


def sample_density(mask: np.ndarray, fraction: float, rng: np.random.Generator) -> PointLabels:
    """Label a fraction of the valid pixels, chosen uniformly without replacement.

    Args:
        mask: ``(H, W)`` uint8 dense labels, ``IGNORE_INDEX`` for ignored pixels.
        fraction: Fraction of the valid pixels to label, in ``(0, 1]``.
        rng: Random generator.

    Returns:
        Exactly ``round(fraction * n_valid)`` points, none on an ignored pixel.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    valid = np.flatnonzero(_valid_mask(mask).ravel() != IGNORE_INDEX)
    chosen = rng.choice(valid, size=round(fraction * len(valid)), replace=False)
    return _points_at(mask, chosen)


def sample_per_class(mask: np.ndarray, per_class: int, rng: np.random.Generator) -> PointLabels:
    """Label ``per_class`` pixels of each class present, or all of a class's pixels if it has fewer.

    Args:
        mask: ``(H, W)`` uint8 dense labels, ``IGNORE_INDEX`` for ignored pixels.
        per_class: Points per class, at least 1.
        rng: Random generator; classes draw from it in increasing order.

    Returns:
        ``sum(min(per_class, pixels of c))`` points over the classes ``c`` present.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    flat = _valid_mask(mask).ravel()
    by_class = np.argsort(flat, kind="stable")  # flat indices grouped by class, row-major within each
    counts = np.bincount(flat, minlength=IGNORE_INDEX + 1)
    ends = np.cumsum(counts)
    chosen = []
    for label in np.flatnonzero(counts[:IGNORE_INDEX]):
        start = ends[label - 1] if label else 0
        pixels = by_class[start : ends[label]]
        chosen.append(rng.choice(pixels, size=min(per_class, len(pixels)), replace=False))
    return _points_at(mask, np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64))


def sample_per_region(mask: np.ndarray, min_area: int) -> PointLabels:
    """Label one pixel per connected region of a class: the one farthest from the region's border.

    Regions are 4-connected pixels of one class. The image edge counts as border. Among equally
    far pixels the first in row-major order wins, so the result is deterministic.

    Distances come from ``scipy.ndimage.distance_transform_edt`` on each region's bounding box,
    padded by one pixel. When that would cost more than one transform of the whole class mask
    (very many regions, or long diagonal ones whose boxes overlap), the whole mask is transformed
    once instead. Both give the same distances: the nearest pixel outside a region is never of
    the region's own class, since it would then belong to the region.

    Args:
        mask: ``(H, W)`` uint8 dense labels, ``IGNORE_INDEX`` for ignored pixels (never a region).
        min_area: Smallest region that gets a point, in pixels.

    Returns:
        One point per region of at least ``min_area`` pixels.
    """
    if min_area < 1:
        raise ValueError(f"min_area must be >= 1, got {min_area}")
    mask = _valid_mask(mask)
    chosen: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    for label in np.flatnonzero(np.bincount(mask.ravel(), minlength=IGNORE_INDEX + 1)[:IGNORE_INDEX]):
        regions, count = ndimage.label(mask == label)
        kept = np.bincount(regions.ravel(), minlength=count + 1) >= min_area
        kept[0] = False
        boxes = ndimage.find_objects(regions)
        kept_boxes = [(int(region), boxes[region - 1]) for region in np.flatnonzero(kept)]
        box_pixels = sum((b[0].stop - b[0].start + 2) * (b[1].stop - b[1].start + 2) for _, b in kept_boxes)
        if box_pixels + _REGION_COST_PX * len(kept_boxes) <= mask.size:
            chosen.append(
                np.array(
                    [_farthest_in_box(regions, region, box) for region, box in kept_boxes], dtype=np.int64
                )
            )
        else:
            chosen.append(_farthest_in_image(regions, kept))
    return _points_at(mask, np.concatenate(chosen))


_REGION_COST_PX = 400
"""Fixed cost of one bounding-box distance transform, in pixels transformed (measured, 2448x2448)."""


def _farthest_in_box(regions: np.ndarray, region: int, box: tuple[slice, slice]) -> int:
    """Return the flat index of the pixel of ``region`` farthest from its border."""
    inside = np.pad(regions[box] == region, 1)
    row, col = np.unravel_index(np.argmax(ndimage.distance_transform_edt(inside)), inside.shape)
    return int((box[0].start + row - 1) * regions.shape[1] + box[1].start + col - 1)


def _farthest_in_image(regions: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Return the flat index of the pixel farthest from the border of each kept region, in one pass."""
    distance = ndimage.distance_transform_edt(np.pad(regions > 0, 1))[1:-1, 1:-1].ravel()
    pixels = np.flatnonzero(kept[regions.ravel()])
    owner = regions.ravel()[pixels]
    order = np.lexsort((-distance[pixels], owner))  # by region, farthest first; ties stay row-major
    owner = owner[order]
    return pixels[order[np.r_[True, owner[1:] != owner[:-1]]]]


def simulate_points(mask: np.ndarray, protocol: PointProtocol, image_id: str) -> PointLabels:
    """Simulate the point labels of one image from its dense mask.

    The random stream depends only on ``protocol.seed`` and ``image_id``, so an image gets the
    same points whatever other images are simulated, and in any order.

    Args:
        mask: ``(H, W)`` uint8 dense labels, ``IGNORE_INDEX`` for ignored pixels.
        protocol: How to choose the points.
        image_id: Stable identifier of the image (for example its file stem).

    Returns:
        Points on valid pixels only, labelled with the mask's class.
    """
    rng = np.random.default_rng([protocol.seed, zlib.crc32(image_id.encode())])
    if protocol.strategy == "density":
        return sample_density(mask, protocol.density, rng)
    if protocol.strategy == "per-class":
        return sample_per_class(mask, protocol.per_class, rng)
    return sample_per_region(mask, protocol.min_area)
