"""What the API sends back: colour PNG masks, GeoTIFF class maps, per-class pixel shares, previews."""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass

import numpy as np
from affine import Affine
from PIL import Image
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

from pointseg.colors import palette_colormap
from pointseg.raster import geotiff_profile
from pointseg.schema import ClassSchema

PNG_COMPRESS_LEVEL = 1  # masks are large flat areas: level 1 is several times faster and barely larger


@dataclass(frozen=True)
class ClassShare:
    """How many pixels were predicted as one class, and their fraction of all predicted pixels."""

    name: str
    color: str
    pixels: int
    share: float


def class_shares(labels: np.ndarray, schema: ClassSchema) -> list[ClassShare]:
    """Count each class in ``(H, W)`` uint8 labels; ``IGNORE_INDEX`` (nodata) pixels are left out.

    The shares sum to 1 unless every pixel is nodata (then they are all 0).
    """
    counts = np.bincount(labels.ravel(), minlength=256)[: schema.num_classes]
    total = int(counts.sum())
    return [
        ClassShare(name, "#{:02X}{:02X}{:02X}".format(*color), int(count), int(count) / max(total, 1))
        for name, color, count in zip(schema.classes, schema.colors, counts, strict=True)
    ]


def shares_header(shares: list[ClassShare]) -> str:
    """Compact JSON ``{"<class>": share, ...}`` for the ``X-Pointseg-Shares`` header (ASCII only)."""
    return json.dumps({s.name: round(s.share, 6) for s in shares}, separators=(",", ":"), ensure_ascii=True)


def encode_mask_png(labels: np.ndarray, schema: ClassSchema) -> bytes:
    """Return an RGBA PNG of ``(H, W)`` labels: class colours with alpha 255, ``IGNORE_INDEX`` transparent."""
    palette = np.zeros((256, 4), dtype=np.uint8)
    for index, rgba in palette_colormap(schema).items():
        palette[index] = rgba
    return encode_png(palette[labels])


def encode_png(pixels: np.ndarray) -> bytes:
    """Return a PNG of ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA uint8 pixels."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def encode_label_geotiff(
    labels: np.ndarray, schema: ClassSchema, crs: CRS | None = None, transform: Affine | None = None
) -> bytes:
    """Return a GeoTIFF of ``(H, W)`` uint8 class indices, written in memory.

    Like :func:`pointseg.raster.write_label_raster`: tiled, DEFLATE-compressed, ``IGNORE_INDEX`` as
    nodata, the class colours as its colour table, and ``crs``/``transform`` when given.
    """
    height, width = labels.shape
    profile = geotiff_profile(width, height, crs, transform)
    with MemoryFile() as memory, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with memory.open(**profile) as dataset:
            dataset.write(labels, 1)
            dataset.write_colormap(1, palette_colormap(schema))
        return memory.read()
