"""The classical baseline: a pixel random forest on ilastik-style features, trained on the points.

This is what QGIS SCP, Google Earth Engine and ilastik users run on a few clicked points: every
pixel is described by its bands and by filter responses around it, and a random forest
(scikit-learn, 200 trees) learns the classes from the labelled pixels alone. It is a baseline to
beat, scored by the same confusion matrix and macro mIoU as ``pointseg evaluate``; it is not a
product feature.

Features per band (ilastik's default set, restricted to these filters): the band itself, and at
each scale ``sigma`` in 1, 2, 4, 8 pixels its Gaussian smoothing, its Gaussian gradient magnitude
and its local standard deviation (``sqrt(G * x^2 - (G * x)^2)`` with the same Gaussian ``G``):
13 features per band, 39 for RGB. Images are processed in tiles with a margin as wide as the
largest filter, so memory stays bounded and the features equal those of the whole image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from scipy import ndimage
from sklearn.ensemble import RandomForestClassifier

from pointseg.datasets import SampleRef
from pointseg.datasets.point_sources import PointSource
from pointseg.errors import PointsegError
from pointseg.metrics import SegmentationMetrics, SegmentationReport
from pointseg.raster import open_raster, read_mask, read_pixels
from pointseg.schema import IGNORE_INDEX, ClassSchema

FEATURE_SIGMAS = (1.0, 2.0, 4.0, 8.0)
"""Filter scales in pixels."""

FOREST_TREES = 200
"""Number of trees of the random forest."""

TILE = 1024
"""Side of the tiles that features are computed and predicted in, in pixels."""

_TRUNCATE = 4.0
"""scipy's default Gaussian truncation: kernels reach ``int(4 * sigma + 0.5)`` pixels."""


def pixel_features(image: np.ndarray, sigmas: Sequence[float] = FEATURE_SIGMAS) -> np.ndarray:
    """Per-pixel features of a ``(C, H, W)`` image.

    Args:
        image: ``(C, H, W)`` pixels of any numeric dtype (raw values: the forest does not need
            normalised bands).
        sigmas: Gaussian scales in pixels.

    Returns:
        ``(C * (1 + 3 * len(sigmas)), H, W)`` float32: for each band, the band, then for each sigma
        the smoothed band, the gradient magnitude and the local standard deviation.

    Raises:
        PointsegError: if ``image`` is not ``(C, H, W)``.
    """
    if image.ndim != 3:
        raise PointsegError(f"image has shape {image.shape}; expected (C, H, W)")
    features = []
    for band in np.asarray(image, dtype=np.float32):
        features.append(band)
        for sigma in sigmas:
            smooth = ndimage.gaussian_filter(band, sigma, truncate=_TRUNCATE)
            features.append(smooth)
            features.append(ndimage.gaussian_gradient_magnitude(band, sigma, truncate=_TRUNCATE))
            variance = ndimage.gaussian_filter(band * band, sigma, truncate=_TRUNCATE) - smooth * smooth
            features.append(np.sqrt(np.maximum(variance, 0.0)))
    return np.stack(features)


def tiled_features(
    image: np.ndarray, tile: int = TILE, sigmas: Sequence[float] = FEATURE_SIGMAS
) -> Iterator[tuple[tuple[slice, slice], np.ndarray]]:
    """Yield ``((rows, cols), features)`` for each tile of a ``(C, H, W)`` image.

    Each tile's features are computed on the tile plus a margin as wide as the largest filter
    (cut at the image border), so they equal :func:`pixel_features` of the whole image there.

    Args:
        image: ``(C, H, W)`` pixels.
        tile: Tile side in pixels (>= 1).
        sigmas: Gaussian scales in pixels.

    Yields:
        The tile's row and column slices in the image, and its ``(F, h, w)`` float32 features.
    """
    if tile < 1:
        raise PointsegError(f"tile {tile}: expected an integer >= 1")
    margin = int(_TRUNCATE * max(sigmas) + 0.5) + 1 if sigmas else 0
    height, width = image.shape[-2:]
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            rows, cols = slice(top, min(top + tile, height)), slice(left, min(left + tile, width))
            region_top, region_left = max(0, top - margin), max(0, left - margin)
            region = image[
                :, region_top : min(height, rows.stop + margin), region_left : min(width, cols.stop + margin)
            ]
            features = pixel_features(region, sigmas)
            inner = (
                slice(None),
                slice(top - region_top, rows.stop - region_top),
                slice(left - region_left, cols.stop - region_left),
            )
            yield (rows, cols), features[inner]


def fit_pixel_forest(
    samples: Iterable[tuple[np.ndarray, np.ndarray]],
    trees: int = FOREST_TREES,
    seed: int = 0,
    jobs: int | None = None,
    tile: int = TILE,
) -> RandomForestClassifier:
    """Train a random forest on the features of the labelled pixels.

    Args:
        samples: ``(image (C, H, W), labels (H, W))`` pairs; ``labels`` holds class indices at
            the labelled pixels (points) and ``IGNORE_INDEX`` elsewhere.
        trees: Number of trees.
        seed: Random seed of the forest.
        jobs: Parallel jobs for scikit-learn (None: one).
        tile: Tile side for computing features.

    Returns:
        The fitted ``RandomForestClassifier``; its ``classes_`` are the classes seen.

    Raises:
        PointsegError: if no pixel is labelled, or an image and its labels differ in size.
    """
    rows, targets = [], []
    for image, labels in samples:
        if image.shape[-2:] != labels.shape:
            raise PointsegError(f"image {image.shape[-2:]} and labels {labels.shape} differ in size")
        for (tile_rows, tile_cols), features in tiled_features(image, tile):
            here = labels[tile_rows, tile_cols]
            labelled = here != IGNORE_INDEX
            if labelled.any():
                rows.append(features[:, labelled].T)
                targets.append(here[labelled])
    if not rows:
        raise PointsegError("no labelled pixel to train the random forest on")
    forest = RandomForestClassifier(n_estimators=trees, random_state=seed, n_jobs=jobs)
    forest.fit(np.concatenate(rows), np.concatenate(targets).astype(np.int64))
    return forest


def predict_pixel_forest(forest: RandomForestClassifier, image: np.ndarray, tile: int = TILE) -> np.ndarray:
    """Predict the class of every pixel of a ``(C, H, W)`` image.

    Returns:
        ``(H, W)`` uint8 class indices.
    """
    labels = np.zeros(image.shape[-2:], dtype=np.uint8)
    for (rows, cols), features in tiled_features(image, tile):
        flat = features.reshape(features.shape[0], -1).T
        labels[rows, cols] = forest.predict(flat).reshape(features.shape[1:])
    return labels


def read_image(ref: SampleRef) -> np.ndarray:
    """The ``(C, H, W)`` raw pixels of a sample (its window, or the whole image)."""
    with open_raster(ref.image_path) as dataset:
        return read_pixels(dataset, ref.window)


def evaluate_pixel_forest(
    train: Sequence[SampleRef],
    test: Sequence[SampleRef],
    schema: ClassSchema,
    points: PointSource,
    trees: int = FOREST_TREES,
    seed: int = 0,
    jobs: int | None = None,
    on_image: Callable[[SampleRef], None] | None = None,
) -> SegmentationReport:
    """Train the pixel random forest on the training samples' points and score it on test masks.

    The points are those a network would train on: ``points.points_for(ref, mask)`` with the
    sample's dense mask, as training and ``pointseg experiment density`` draw them. Scoring is
    ``pointseg evaluate``'s: one confusion matrix over all test pixels, ignored pixels left out,
    macro mIoU.

    Args:
        train: Training samples (with dense masks when the points are simulated).
        test: Test samples with dense masks.
        schema: The dataset's class schema.
        points: Where the points come from (e.g. ``pointseg.training.point_source(config)``).
        trees: Number of trees.
        seed: Random seed of the forest.
        jobs: Parallel jobs for scikit-learn (None: one).
        on_image: Called after each test sample (progress).

    Returns:
        The report (per-class IoU, macro mIoU, accuracy, confusion matrix).

    Raises:
        PointsegError: if a test sample has no mask, no pixel is labelled, or a file is bad.
    """
    missing = [ref.image_path for ref in test if ref.mask_path is None]
    if missing:
        raise PointsegError(f"{missing[0]}: no dense mask to evaluate against")

    def labelled_samples() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for ref in train:
            mask = None if ref.mask_path is None else read_mask(ref.mask_path, schema, ref.window)
            yield read_image(ref), points.points_for(ref, mask).to_label_map()

    forest = fit_pixel_forest(labelled_samples(), trees=trees, seed=seed, jobs=jobs)
    metrics = SegmentationMetrics(list(schema.classes))
    for ref in test:
        assert ref.mask_path is not None
        truth = read_mask(ref.mask_path, schema, ref.window)
        predicted = predict_pixel_forest(forest, read_image(ref))
        if truth.shape != predicted.shape:
            raise PointsegError(f"{ref.mask_path}: mask is {truth.shape}, image is {predicted.shape}")
        metrics.update(
            torch.from_numpy(predicted.astype(np.int64))[None], torch.from_numpy(truth.astype(np.int64))[None]
        )
        if on_image is not None:
            on_image(ref)
    return metrics.report()
