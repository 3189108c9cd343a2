"""Band statistics: the per-band mean and standard deviation that normalise images.

They are estimated from the training images, stored in checkpoints and ONNX metadata, and reused
unchanged by evaluation, prediction and export; this module needs neither torch nor the dataset
package, so those can import it cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pointseg.errors import PointsegError
from pointseg.raster import raster_info, read_window


@dataclass(frozen=True)
class BandStats:
    """Per-band mean and standard deviation, used to normalise images: ``(x - mean) / std``.

    They are estimated from the training images (any band count, any dtype), stored in the
    checkpoint, and reused unchanged for evaluation and prediction.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_bands(self) -> int:
        """Number of bands the statistics describe."""
        return len(self.mean)

    def to_dict(self) -> dict[str, list[float]]:
        """``{"mean": [...], "std": [...]}``, as stored in checkpoints and ONNX metadata."""
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BandStats:
        """The inverse of :meth:`to_dict`."""
        return cls(tuple(data["mean"]), tuple(data["std"]))

    def normalize(self, image: np.ndarray, source: str = "image") -> np.ndarray:
        """Return ``(C, H, W)`` float32 ``(image - mean) / std``, always finite.

        Non-finite values (NaN, +inf, -inf: nodata in a float raster) become 0, the band mean, so
        that no such pixel reaches a network; callers that must leave them out (labels, scores)
        find them with ``np.isfinite`` on the raw image.

        Raises:
            PointsegError: if the band count differs from the statistics'.
        """
        if image.shape[0] != self.num_bands:
            raise PointsegError(
                f"{source}: {image.shape[0]} band(s), but the model was set up for {self.num_bands}"
            )
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        normalized = (image.astype(np.float32) - mean) / std
        if not np.isfinite(normalized).all():
            np.nan_to_num(normalized, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        return normalized

    @classmethod
    def estimate(
        cls, image_paths: Sequence[Path], max_images: int = 64, overview_size: int = 512
    ) -> BandStats:
        """Estimate statistics from decimated reads of up to ``max_images`` images (evenly spaced).

        Pixels equal to a file's nodata value, and non-finite pixels (NaN, +inf, -inf), are left
        out, band by band.

        Raises:
            PointsegError: for no images, images with different band counts, or a band without
                a single valid pixel.
        """
        if not image_paths:
            raise PointsegError("cannot estimate band statistics: no training images")
        unique = sorted(set(image_paths))
        step = max(1, math.ceil(len(unique) / max_images))
        sums: np.ndarray | None = None
        squares: np.ndarray | None = None
        counts: np.ndarray | None = None
        for path in unique[::step]:
            info = raster_info(path)
            scale = max(1.0, max(info.width, info.height) / overview_size)
            shape = (max(1, round(info.height / scale)), max(1, round(info.width / scale)))
            pixels = read_window(path, out_shape=shape).astype(np.float64).reshape(info.count, -1)
            if sums is not None and pixels.shape[0] != sums.shape[0]:
                raise PointsegError(
                    f"{path}: {pixels.shape[0]} band(s), but earlier images have {sums.shape[0]}"
                )
            valid = np.isfinite(pixels)
            if info.nodata is not None:
                valid &= pixels != info.nodata
            pixels = np.where(valid, pixels, 0.0)
            sums = pixels.sum(axis=1) + (0 if sums is None else sums)
            squares = (pixels**2).sum(axis=1) + (0 if squares is None else squares)
            counts = valid.sum(axis=1) + (0 if counts is None else counts)
        assert sums is not None and squares is not None and counts is not None
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            raise PointsegError(
                f"cannot estimate band statistics: band(s) {', '.join(str(b + 1) for b in empty)} have no "
                f"valid pixel in {len(unique[::step])} training image(s) (all nodata or non-finite); "
                "expected some finite pixels that are not nodata"
            )
        mean = sums / counts
        std = np.sqrt(np.maximum(squares / counts - mean**2, 0.0))
        std = np.where(std < 1e-6, 1.0, std)  # a constant band stays constant instead of dividing by zero
        return cls(tuple(float(m) for m in mean), tuple(float(s) for s in std))
