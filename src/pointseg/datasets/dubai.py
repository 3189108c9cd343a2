"""Dubai aerial imagery ("Semantic segmentation of aerial imagery", MBRSC / Humans in the Loop).

Layout: ``Tile N/images/image_part_00K.jpg`` and ``Tile N/masks/image_part_00K.png``. The
``classes.json`` shipped with the dataset lists colours that the masks do not use, so it is
never read: the colours below are those the masks really hold.
"""

from __future__ import annotations

from pathlib import Path

from pointseg.datasets.adapter import DatasetAdapter, DiscoveryOptions
from pointseg.datasets.samples import Discovery, SampleRef, pair_files, require_directory
from pointseg.schema import ClassSchema

SCHEMA = ClassSchema(
    name="dubai",
    classes=("building", "land", "road", "vegetation", "water"),
    colors=(
        (0x3C, 0x10, 0x98),
        (0x84, 0x29, 0xF6),
        (0x6E, 0xC1, 0xE4),
        (0xFE, 0xDD, 0x3A),
        (0xE2, 0xA9, 0x29),
    ),
    mask_encoding="rgb",
    ignore_colors=((0x9B, 0x9B, 0x9B), (0, 0, 0)),  # "unlabeled", and a few stray black pixels
)


def discover(root: Path, options: DiscoveryOptions) -> Discovery:
    """Find image/mask pairs in every ``Tile N`` folder; ids are ``Tile N/<stem>``, groups the tile."""
    require_directory(root, "the Dubai aerial folder with 'Tile N/images' and 'Tile N/masks'")
    refs: list[SampleRef] = []
    problems: list[str] = []
    tiles = sorted(p for p in root.iterdir() if p.is_dir() and (p / "images").is_dir())
    for tile in tiles:
        images = {p.stem: p for p in (tile / "images").glob("*.jpg")}
        masks = {p.stem: p for p in (tile / "masks").glob("*.png")} if (tile / "masks").is_dir() else {}
        pairs, tile_problems = pair_files(images, masks, options.require_masks)
        problems.extend(tile_problems)
        refs.extend(
            SampleRef(id=f"{tile.name}/{key}", image_path=image, mask_path=mask, group=tile.name)
            for key, image, mask in pairs
        )
    return Discovery("Dubai aerial", root, options.schema, refs, problems)


ADAPTER = DatasetAdapter(discover, SCHEMA)
