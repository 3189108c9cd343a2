"""Colours: class colour tables for label rasters and display colours for raw images.

Light on purpose (numpy only), so the server, the predictor and the figures share it without
importing each other.
"""

from __future__ import annotations

import numpy as np

from pointseg.schema import IGNORE_INDEX, ClassSchema


def palette_colormap(schema: ClassSchema) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table for a label raster: class colours, and transparent black for ignore."""
    colormap = {i: (*color, 255) for i, color in enumerate(schema.colors)}
    colormap[IGNORE_INDEX] = (0, 0, 0, 0)
    return colormap


def display_rgb(image: np.ndarray, stride: int = 1) -> np.ndarray:
    """Return ``(H', W', 3)`` uint8 display colours of a raw ``(C, H, W)`` image, subsampled by ``stride``.

    Bands 1-3 become red, green and blue (one or two bands: band 1 as grey); each band is stretched
    linearly between its 2nd and 98th percentile over finite pixels. A constant band shows as black.
    """
    subsampled = image[:, ::stride, ::stride]
    return stretch_rgb(subsampled, stretch_limits(subsampled))


def display_bands(image: np.ndarray) -> np.ndarray:
    """The ``(3, H, W)`` bands shown as red, green and blue: bands 1-3, or band 1 three times."""
    return image[:3] if image.shape[0] >= 3 else image[:1].repeat(3, axis=0)


def stretch_limits(image: np.ndarray) -> np.ndarray:
    """``(3, 2)`` 2nd and 98th percentiles of the displayed bands of ``(C, H, W)`` pixels (finite ones)."""
    limits = np.zeros((3, 2))
    for index, band in enumerate(display_bands(image).astype(np.float32)):
        finite = band[np.isfinite(band)]
        if finite.size:
            limits[index] = np.percentile(finite, (2, 98))
    return limits


def stretch_rgb(image: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 colours of ``(C, H, W)`` pixels, each shown band stretched between its ``limits``.

    A band whose limits are equal shows as black; values that are not finite as black too.
    """
    bands = display_bands(image)
    shown = np.empty(bands.shape, dtype=np.uint8)
    for index, band in enumerate(bands.astype(np.float32)):
        low, high = limits[index]
        scaled = (band - low) / (high - low) if high > low else np.zeros_like(band)
        shown[index] = np.round(np.clip(np.nan_to_num(scaled), 0, 1) * 255).astype(np.uint8)
    return np.moveaxis(shown, 0, -1)
