"""Rebuild the bundled Dubai sample from the Dubai aerial dataset (public domain, CC0).

The sample is what ``pointseg map`` runs on in the README's first command:

- ``images/``: three images of tile 1 and three of tile 2 (JPEG, copied byte for byte);
- ``points/<stem>.geojson``: clicks on those images, as a person would make them: about ten per
  class present, simulated reproducibly from the dense masks with pointseg's own per-class
  protocol (seed 0), in pixel coordinates, with the class name in the ``class`` property;
- ``dense/Tile 6/{images,masks}``: two images of tile 6 with their dense masks, never trained on,
  for an honest dense score (``pointseg evaluate --format dubai --data examples/dubai/dense``).

Only tiles 1, 2 and 6 are used. The training masks are not bundled: the points are the labels.

Usage::

    python examples/dubai/make_sample.py [--source ../shared/data/dubai_aerial]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from pointseg.datasets.dubai import SCHEMA
from pointseg.points import PointProtocol, simulate_points, write_points_geojson
from pointseg.raster import read_mask

HERE = Path(__file__).resolve().parent
TRAIN_IMAGES = {"Tile 1": ("001", "004", "007"), "Tile 2": ("001", "005", "009")}
DENSE_IMAGES = {"Tile 6": ("001", "004")}  # the two images of tile 6 with all five classes
PROTOCOL = PointProtocol(strategy="per-class", per_class=10, seed=0)
MAX_BYTES = 5 * 2**20


def build(source: Path, target: Path) -> None:
    """Write the sample into ``target`` (its ``images``, ``points`` and ``dense`` folders are replaced)."""
    for name in ("images", "points", "dense"):
        shutil.rmtree(target / name, ignore_errors=True)
    for tile, parts in TRAIN_IMAGES.items():
        for part in parts:
            stem = f"{tile.lower().replace(' ', '')}_{part}"  # e.g. tile1_001
            image = source / tile / "images" / f"image_part_{part}.jpg"
            (target / "images").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, target / "images" / f"{stem}.jpg")
            mask = read_mask(source / tile / "masks" / f"image_part_{part}.png", SCHEMA)
            points = simulate_points(mask, PROTOCOL, stem)
            write_points_geojson(target / "points" / f"{stem}.geojson", points, SCHEMA)
    for tile, parts in DENSE_IMAGES.items():
        for kind, suffix in (("images", ".jpg"), ("masks", ".png")):
            (target / "dense" / tile / kind).mkdir(parents=True, exist_ok=True)
            for part in parts:
                name = f"image_part_{part}{suffix}"
                shutil.copyfile(source / tile / kind / name, target / "dense" / tile / kind / name)
    total = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"sample in {target}: {total / 2**20:.2f} MiB")
    if total > MAX_BYTES:
        raise SystemExit(f"the sample is {total / 2**20:.2f} MiB; it must stay under 5 MiB")


def main() -> None:
    """Parse the arguments and build the sample."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=HERE.parents[2] / "shared" / "data" / "dubai_aerial")
    parser.add_argument("--target", type=Path, default=HERE)
    arguments = parser.parse_args()
    build(arguments.source, arguments.target)


if __name__ == "__main__":
    main()
