"""Tiny, seeded rasters in each dataset's real layout, written by code (never committed).

Masks are blocks of classes; each image pixel is its class colour plus noise, so even a tiny
model can learn the mapping in a few steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from benchmarks.common import write_untrained_checkpoint  # noqa: F401  (shared with the benchmarks)
from rasterio.crs import CRS
from rasterio.transform import from_origin

from pointseg.datasets import deepglobe, dubai, landcoverai
from pointseg.schema import IGNORE_INDEX, ClassSchema

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
"""The real sample data (../shared/data beside the project), used by the few end-to-end tests."""

UTM = CRS.from_epsg(32633)
PL1992 = CRS.from_epsg(2180)


def block_labels(height: int, width: int, num_classes: int, seed: int, block: int = 8) -> np.ndarray:
    """``(H, W)`` uint8 labels made of ``block``-sized squares of random classes."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, num_classes, size=(-(-height // block), -(-width // block)))
    return np.kron(coarse, np.ones((block, block), dtype=np.int64))[:height, :width].astype(np.uint8)


def image_for(
    labels: np.ndarray, colors: np.ndarray, seed: int, bands: int = 3, dtype: str = "uint8"
) -> np.ndarray:
    """``(bands, H, W)`` image whose pixels are their class's colour plus noise."""
    rng = np.random.default_rng(seed + 1000)
    palette = np.zeros((256, 3))
    palette[: len(colors)] = colors
    base = palette[labels]  # (H, W, 3); ignored pixels are dark
    if bands != 3:
        base = np.concatenate([base] * (-(-bands // 3)), axis=-1)[..., :bands]
    image = np.clip(base * 0.8 + 25 + rng.normal(0, 8, base.shape), 0, 255)
    if dtype == "uint16":
        image = image * 40
    return np.moveaxis(image, -1, 0).astype(dtype)


def write_raster(
    path: Path,
    array: np.ndarray,
    crs: CRS | None = None,
    transform=None,
    driver: str | None = None,
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
) -> Path:
    """Write ``(C, H, W)`` or ``(H, W)`` pixels with rasterio; GeoTIFF gets ``crs``/``transform``."""
    array = array[None] if array.ndim == 2 else array
    suffix = path.suffix.lower()
    driver = (
        driver or {".tif": "GTiff", ".tiff": "GTiff", ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}[suffix]
    )
    profile = {
        "driver": driver,
        "count": array.shape[0],
        "height": array.shape[1],
        "width": array.shape[2],
        "dtype": array.dtype.name,
    }
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    path.parent.mkdir(parents=True, exist_ok=True)
    if driver == "JPEG":
        profile["quality"] = 100
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(array)
        if colormap is not None:
            dataset.write_colormap(1, colormap)
    return path


def rgb_mask(
    labels: np.ndarray, schema: ClassSchema, ignore_color: tuple[int, int, int] | None = None
) -> np.ndarray:
    """``(3, H, W)`` colour-coded mask; label 255 becomes ``ignore_color``."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: schema.num_classes] = schema.colors
    if ignore_color is not None:
        palette[255] = ignore_color
    return np.moveaxis(palette[labels], -1, 0)


def write_deepglobe(root: Path, count: int = 3, size: int = 64, ignored_corner: int = 4) -> Path:
    """``<id>_sat.jpg`` + ``<id>_mask.png`` pairs; a corner of each mask is 'unknown' (black)."""
    schema = deepglobe.SCHEMA
    colors = np.array(schema.colors)
    for i in range(count):
        labels = block_labels(size, size, schema.num_classes, seed=i)
        labels[:ignored_corner, :ignored_corner] = 255
        write_raster(root / f"{100 + i}_sat.jpg", image_for(labels, colors, seed=i))
        write_raster(root / f"{100 + i}_mask.png", rgb_mask(labels, schema, ignore_color=(0, 0, 0)))
    return root


def write_dubai(
    root: Path, tiles: tuple[int, ...] = (1, 2), per_tile: int = 2, size: tuple[int, int] = (48, 56)
) -> Path:
    """``Tile N/images/*.jpg`` + ``Tile N/masks/*.png``; one mask per tile is a palette PNG."""
    schema = dubai.SCHEMA
    colors = np.array(schema.colors)
    for tile in tiles:
        for k in range(per_tile):
            seed = tile * 10 + k
            labels = block_labels(*size, schema.num_classes, seed=seed)
            labels[-3:, -3:] = 255
            name = f"image_part_{k + 1:03d}"
            write_raster(
                root / f"Tile {tile}" / "images" / f"{name}.jpg", image_for(labels, colors, seed=seed)
            )
            mask = rgb_mask(labels, schema, ignore_color=(0x9B, 0x9B, 0x9B))
            if k == 0:  # a palette PNG, as some real Dubai masks are
                palette_labels = np.where(labels == 255, 9, labels).astype(np.uint8)
                colormap = {i: (*c, 255) for i, c in enumerate(schema.colors)} | {9: (0x9B, 0x9B, 0x9B, 255)}
                write_raster(
                    root / f"Tile {tile}" / "masks" / f"{name}.png", palette_labels, colormap=colormap
                )
            else:
                write_raster(root / f"Tile {tile}" / "masks" / f"{name}.png", mask)
    (root / "classes.json").write_text(
        '{"classes": [{"title": "Water", "color": "#50E3C2"}]}'
    )  # wrong, as shipped
    return root


def write_landcoverai(
    root: Path, sizes: tuple[tuple[int, int], ...] = ((1100, 1300), (600, 1030)), tile_size: int = 512
) -> Path:
    """``images/*.tif`` + ``masks/*.tif`` in EPSG:2180, sized so edge tiles get dropped."""
    schema = landcoverai.SCHEMA
    colors = np.array(schema.colors)
    for i, (height, width) in enumerate(sizes):
        stem = f"M-33-{i}"
        labels = block_labels(height, width, schema.num_classes, seed=i, block=64)
        transform = from_origin(500000 + 10000 * i, 600000, 0.25, 0.25)
        write_raster(root / "images" / f"{stem}.tif", image_for(labels, colors, seed=i), PL1992, transform)
        write_raster(root / "masks" / f"{stem}.tif", labels, PL1992, transform)
    return root


def write_folder_dataset(
    root: Path,
    bands: int = 4,
    dtype: str = "uint16",
    count: int = 2,
    size: int = 40,
    schema: ClassSchema | None = None,
    ignore_value: int = 0,
) -> tuple[Path, Path]:
    """GeoTIFF images with any band count and dtype, index masks (class i stored as i + 1, 0 = no data),
    and the schema file; returns ``(root, schema_path)``."""
    schema = schema or ClassSchema(
        name="toy",
        classes=("a", "b", "c"),
        colors=((255, 0, 0), (0, 255, 0), (0, 0, 255)),
        mask_encoding="index",
        mask_values=(1, 2, 3),
        ignore_values=(ignore_value,),
    )
    colors = np.array(schema.colors)
    for i in range(count):
        labels = block_labels(size, size, schema.num_classes, seed=i)
        transform = from_origin(300000, 5000000 + 1000 * i, 10, 10)
        write_raster(
            root / "images" / f"scene_{i}.tif",
            image_for(labels, colors, seed=i, bands=bands, dtype=dtype),
            UTM,
            transform,
        )
        stored = np.array(schema.stored_values, dtype=np.uint8)[labels]
        stored[:2, :2] = ignore_value
        write_raster(root / "masks" / f"scene_{i}.tif", stored, UTM, transform)
    schema_path = root / "schema.yaml"
    import yaml

    schema_path.write_text(yaml.safe_dump(schema.to_dict()))
    return root, schema_path


def folder_labels(i: int, size: int = 40) -> np.ndarray:
    """The labels of scene ``i`` of :func:`write_folder_dataset`: ``IGNORE_INDEX`` on its 2x2 corner."""
    labels = block_labels(size, size, 3, seed=i)
    labels[:2, :2] = IGNORE_INDEX
    return labels
