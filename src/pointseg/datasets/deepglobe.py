"""DeepGlobe 2018 Land Cover Classification: ``<id>_sat.jpg`` and ``<id>_mask.png`` in one folder."""

from __future__ import annotations

from pathlib import Path

from pointseg.datasets.adapter import DatasetAdapter, DiscoveryOptions
from pointseg.datasets.samples import Discovery, SampleRef, pair_files, require_directory
from pointseg.schema import ClassSchema

SCHEMA = ClassSchema(
    name="deepglobe",
    classes=("urban_land", "agriculture", "rangeland", "forest", "water", "barren"),
    colors=((0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255), (255, 255, 255)),
    mask_encoding="rgb",
    ignore_colors=((0, 0, 0),),  # "unknown": not a land-cover class
)


def discover(root: Path, options: DiscoveryOptions) -> Discovery:
    """Find ``<id>_sat.jpg`` / ``<id>_mask.png`` pairs in ``root``. Sample ids are the image stems."""
    require_directory(root, "a DeepGlobe folder with <id>_sat.jpg and <id>_mask.png files")
    images = {p.name.removesuffix("_sat.jpg"): p for p in root.glob("*_sat.jpg")}
    masks = {p.name.removesuffix("_mask.png"): p for p in root.glob("*_mask.png")}
    pairs, problems = pair_files(images, masks, options.require_masks)
    refs = [
        SampleRef(id=image.stem, image_path=image, mask_path=mask, group=key) for key, image, mask in pairs
    ]
    return Discovery("DeepGlobe", root, options.schema, refs, problems)


ADAPTER = DatasetAdapter(discover, SCHEMA)
