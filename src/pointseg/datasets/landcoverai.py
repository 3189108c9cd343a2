"""LandCover.ai v1: Polish orthophotos (EPSG:2180) in ``images/*.tif`` with ``masks/*.tif``.

The dataset's own ``split.py`` cuts each orthophoto into non-overlapping 512x512 tiles in
row-major order, numbers them ``<stem>_<k>`` counting the dropped edge tiles too, and keeps only
full tiles; ``train.txt``, ``val.txt`` and ``test.txt`` list tile names. pointseg reads the same
tiles as windows of the original GeoTIFFs, so each tile keeps its CRS and transform.
"""

from __future__ import annotations

from pathlib import Path

from rasterio.windows import Window

from pointseg.datasets.adapter import DatasetAdapter, DiscoveryOptions
from pointseg.datasets.samples import Discovery, SampleRef, pair_files, require_directory
from pointseg.errors import PointsegError
from pointseg.raster import raster_info
from pointseg.schema import ClassSchema

TILE_SIZE = 512
SPLITS = ("train", "val", "test")

SCHEMA = ClassSchema(
    name="landcoverai",
    classes=("background", "building", "woodland", "water", "road"),
    colors=((222, 222, 170), (220, 20, 60), (34, 139, 34), (30, 144, 255), (128, 128, 128)),
    mask_encoding="index",
)


def tile_windows(height: int, width: int, tile_size: int = TILE_SIZE) -> list[tuple[int, Window]]:
    """Return ``(k, window)`` for every full tile, numbered as the dataset's ``split.py`` numbers them."""
    tiles = []
    k = 0
    for row in range(0, height, tile_size):
        for col in range(0, width, tile_size):
            if row + tile_size <= height and col + tile_size <= width:
                tiles.append((k, Window(col, row, tile_size, tile_size)))
            k += 1
    return tiles


def read_split_lists(root: Path, tile_ids: set[str] | None = None) -> dict[str, set[str]]:
    """Read whichever of ``train.txt``/``val.txt``/``test.txt`` exist in ``root``.

    Args:
        root: The dataset folder.
        tile_ids: The tiles found on disk; when given, every listed name must be one of them.

    Raises:
        PointsegError: naming the list, how many of its tiles are missing and a few of them (an
            orthophoto missing from images/ would otherwise shrink a split silently).
    """
    lists = {
        split: {line.strip() for line in _read_list(root / f"{split}.txt").splitlines() if line.strip()}
        for split in SPLITS
        if (root / f"{split}.txt").is_file()
    }
    for split, names in lists.items():
        missing = sorted(names - tile_ids) if tile_ids is not None else []
        if missing:
            raise PointsegError(
                f"{root / (split + '.txt')}: {len(missing)} of its {len(names)} tiles are not in "
                f"{root / 'images'} "
                f"(e.g. {', '.join(missing[:5])}); expected every listed tile's orthophoto in images/"
            )
    return lists


def _read_list(path: Path) -> str:
    """The text of a split list.

    Raises:
        PointsegError: naming the file if it cannot be read or is not UTF-8 text.
    """
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as error:
        raise PointsegError(f"{path}: cannot read split list ({error.strerror})") from error
    except UnicodeDecodeError as error:
        raise PointsegError(
            f"{path}: not UTF-8 text (byte {error.start}: {error.reason}); expected one tile name per line"
        ) from None


def discover(root: Path, options: DiscoveryOptions) -> Discovery:
    """Find orthophotos in ``images/`` (masks in ``masks/``) and cut them into tiles."""
    require_directory(root / "images", "LandCover.ai's images/*.tif (and masks/*.tif)")
    images = {p.stem: p for p in (root / "images").glob("*.tif")}
    masks = {p.stem: p for p in (root / "masks").glob("*.tif")} if (root / "masks").is_dir() else {}
    pairs, problems = pair_files(images, masks, options.require_masks)
    refs: list[SampleRef] = []
    for stem, image, mask in pairs:
        info = raster_info(image)
        refs.extend(
            SampleRef(id=f"{stem}_{k}", image_path=image, mask_path=mask, group=stem, window=window)
            for k, window in tile_windows(info.height, info.width)
        )
    return Discovery("LandCover.ai", root, options.schema, refs, problems)


ADAPTER = DatasetAdapter(discover, SCHEMA, read_split_lists)
