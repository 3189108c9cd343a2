"""Any folder of image/mask pairs with a class schema file (LoveDA, Potsdam, Chesapeake, your own).

Images and masks sit in two folders (by default ``<root>/images`` and ``<root>/masks``) and are
matched by file stem. ``mask_pattern`` maps an image stem to a mask stem when they differ, for
example ``"{stem}_mask"``. Rasters may have any band count and dtype (uint8, uint16, float32).
"""

from __future__ import annotations

from pathlib import Path

from pointseg.datasets.adapter import DatasetAdapter, DiscoveryOptions
from pointseg.datasets.samples import Discovery, SampleRef, pair_files, require_directory
from pointseg.errors import PointsegError
from pointseg.raster import IMAGE_SUFFIXES


def discover(root: Path, options: DiscoveryOptions) -> Discovery:
    """Find image/mask pairs in ``options.images_dir`` and ``masks_dir``, matched by stem.

    ``options.mask_pattern`` maps an image stem to its mask's stem.
    """
    mask_pattern = options.mask_pattern
    if "{stem}" not in mask_pattern:
        raise PointsegError(f"mask_pattern '{mask_pattern}' must contain '{{stem}}'")
    image_root = root / options.images_dir
    mask_root = root / options.masks_dir
    require_directory(image_root, f"a folder of images ({', '.join(IMAGE_SUFFIXES)})")
    images = {p.stem: p for p in sorted(image_root.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    mask_files = {p.stem: p for p in sorted(mask_root.iterdir())} if mask_root.is_dir() else {}
    masks = {}
    for stem in images:
        mask_stem = mask_pattern.format(stem=stem)
        if mask_stem in mask_files:
            masks[stem] = mask_files.pop(mask_stem)
    pairs, problems = pair_files(images, masks, options.require_masks)
    problems.extend(
        f"missing image: {path} matches no image"
        for path in mask_files.values()
        if path.suffix.lower() in IMAGE_SUFFIXES
    )
    refs = [SampleRef(id=key, image_path=image, mask_path=mask, group=key) for key, image, mask in pairs]
    return Discovery(options.schema.name, root, options.schema, refs, problems)


ADAPTER = DatasetAdapter(discover)
