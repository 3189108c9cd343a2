"""Tiny point-label test data: a blobby mask, a small UTM GeoTIFF or PNG, a CSV file."""

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage

from pointseg.schema import IGNORE_INDEX, ClassSchema

SCHEMA = ClassSchema(
    name="toy", classes=("water", "forest", "urban"), colors=((0, 0, 255), (0, 255, 0), (255, 0, 0))
)
UTM = CRS.from_epsg(32633)
ORIGIN = (500_000.0, 4_000_000.0)  # top-left corner of the test images, in UTM 33N metres
PIXEL_SIZE = 10.0


def random_mask(height: int = 40, width: int = 50, seed: int = 0) -> np.ndarray:
    """Blobs of classes 0..2 with about a fifth of the pixels ignored."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random((height, width)), 2)
    mask = np.digitize(noise, np.quantile(noise, [1 / 3, 2 / 3])).astype(np.uint8)
    mask[rng.random((height, width)) < 0.2] = IGNORE_INDEX
    return mask


def grid(origin: tuple[float, float]) -> Affine:
    """North-up transform with PIXEL_SIZE pixels and ``origin`` as the top-left corner."""
    return Affine(PIXEL_SIZE, 0.0, origin[0], 0.0, -PIXEL_SIZE, origin[1])


def write_image(path: Path, height: int, width: int, crs: CRS | None = UTM) -> Path:
    """A one-band uint8 image: a GeoTIFF in ``crs`` at ORIGIN, or a PNG without a CRS."""
    profile = {"count": 1, "dtype": "uint8", "height": height, "width": width}
    if crs is None:
        profile["driver"] = "PNG"
    else:
        profile.update(driver="GTiff", crs=crs, transform=grid(ORIGIN))
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(np.zeros((1, height, width), dtype=np.uint8))
    return path


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
