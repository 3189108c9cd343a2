"""PNG views of a window of a raster of any size: the image, a class map, a confidence layer.

The page shows a whole image from one downsampled request and asks for a sharper window when
the user zooms in. Each view reads only its window, resampled while reading (rasterio's
``out_shape``: GDAL picks overviews or decimates), so a large raster is never read whole. The
image's 2-98 % stretch is computed once per file (from a read of at most
:data:`STRETCH_SAMPLE_PX` pixels a side) and reused for every window, so tiles match.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field
from rasterio.enums import Resampling
from rasterio.windows import Window

from pointseg.colors import stretch_limits, stretch_rgb
from pointseg.raster import open_raster, read_pixels
from pointseg.schema import ClassSchema
from pointseg.serving import outputs
from pointseg.serving.workspace import WorkspaceError

MAX_VIEW_WIDTH = 2048
STRETCH_SAMPLE_PX = 1024


class ViewWindow(BaseModel):
    """The query of the view endpoints: a window ``[x0, x1) x [y0, y1)`` in full-resolution pixels.

    Left out, the window is the whole image. ``width`` is the PNG's width; its height keeps the
    window's aspect ratio.
    """

    x0: int | None = Field(default=None, ge=0)
    y0: int | None = Field(default=None, ge=0)
    x1: int | None = Field(default=None, ge=1)
    y1: int | None = Field(default=None, ge=1)
    width: int = Field(default=1024, ge=1, le=MAX_VIEW_WIDTH)

    def placed(self, width: int, height: int) -> tuple[Window, tuple[int, int]]:
        """The rasterio window on a ``width`` x ``height`` image and the ``(H, W)`` to resample it to.

        Raises:
            WorkspaceError: 422 for a window that reaches outside the image.
        """
        x0, y0 = self.x0 or 0, self.y0 or 0
        x1 = width if self.x1 is None else self.x1
        y1 = height if self.y1 is None else self.y1
        if x1 > width or y1 > height or x0 >= x1 or y0 >= y1:
            raise WorkspaceError(
                422,
                f"window x {x0}..{x1}, y {y0}..{y1} is not inside the image; expected "
                f"0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}",
            )
        out_height = max(1, round(self.width * (y1 - y0) / (x1 - x0)))
        if out_height > MAX_VIEW_WIDTH * 4:
            raise WorkspaceError(
                422, f"the view would be {self.width} x {out_height} px; ask for a wider window"
            )
        return Window(x0, y0, x1 - x0, y1 - y0), (out_height, self.width)


@functools.lru_cache(maxsize=64)
def _limits(path: Path, size: int, modified_ns: int) -> np.ndarray:
    with open_raster(path) as dataset:
        scale = max(1.0, max(dataset.width, dataset.height) / STRETCH_SAMPLE_PX)
        shape = (max(1, math.ceil(dataset.height / scale)), max(1, math.ceil(dataset.width / scale)))
        return stretch_limits(read_pixels(dataset, out_shape=shape))


def image_limits(path: Path) -> np.ndarray:
    """The ``(3, 2)`` display stretch of an image, computed once per file version."""
    status = path.stat()
    return _limits(path, status.st_size, status.st_mtime_ns)


def _read(path: Path, view: ViewWindow, resampling: Resampling, shown: bool = False) -> np.ndarray:
    """``(C, H, W)`` pixels of the window: the bands shown (1-3, or 1) when ``shown``, else band 1."""
    with open_raster(path) as dataset:
        window, shape = view.placed(dataset.width, dataset.height)
        indexes = [1, 2, 3] if shown and dataset.count >= 3 else [1]
        return dataset.read(indexes, window=window, out_shape=(len(indexes), *shape), resampling=resampling)


def image_view(path: Path, view: ViewWindow) -> bytes:
    """An RGB PNG of the window: bands 1-3 (or band 1 as grey) with the image's stretch."""
    pixels = _read(path, view, Resampling.average, shown=True)
    return outputs.encode_png(stretch_rgb(pixels, image_limits(path)))


def map_view(path: Path, view: ViewWindow, schema: ClassSchema) -> tuple[bytes, list[outputs.ClassShare]]:
    """An RGBA PNG of a class map's window in class colours, and the class shares of the pixels shown."""
    labels = _read(path, view, Resampling.nearest)[0]
    return outputs.encode_mask_png(labels, schema), outputs.class_shares(labels, schema)


def confidence_view(path: Path, view: ViewWindow) -> bytes:
    """An RGBA PNG of a confidence raster's window: black, alpha ``255 * (1 - confidence)`` (0 for nodata)."""
    confidence = _read(path, view, Resampling.average)[0].astype(np.float32)
    alpha = np.round(np.clip(1 - np.nan_to_num(confidence, nan=1.0), 0, 1) * 255).astype(np.uint8)
    pixels = np.zeros((*alpha.shape, 4), dtype=np.uint8)
    pixels[..., 3] = alpha
    return outputs.encode_png(pixels)
