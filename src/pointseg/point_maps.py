"""Point-label files for a whole dataset: ``pointseg points simulate`` and ``pointseg points import``.

For each image, a folder of point labels holds:

- ``<id>.png``: single-band uint8 map the size of the image, class index on labelled pixels and
  ``IGNORE_INDEX`` (255) elsewhere; or ``<id>.tif`` with the image's CRS and transform when the
  image is georeferenced;
- ``<id>.geojson``: the same points as GeoJSON Point features with ``class`` and ``class_index``;

and the folder holds ``summary.json`` with the points per class. Everything is written to a
staging folder first and moved in only when every image succeeded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from pointseg.datasets import Discovery, SampleRef
from pointseg.datasets.samples import check_mask_size
from pointseg.errors import PointsegError
from pointseg.points import (
    ImportReport,
    PointLabels,
    PointProtocol,
    import_points,
    simulate_points,
    write_points_geojson,
)
from pointseg.raster import atomic_output, open_raster, raster_info, read_mask, write_label_raster
from pointseg.schema import IGNORE_INDEX, ClassSchema


@dataclass
class PointSummary:
    """Totals over the images of a points folder (the content of ``summary.json``)."""

    class_names: tuple[str, ...]
    source: dict[str, Any]
    points_per_class: np.ndarray
    valid_pixels: int = 0
    per_image: dict[str, int] = field(default_factory=dict)

    def add(self, image_id: str, points: PointLabels, valid_pixels: int) -> None:
        """Count one image's points."""
        self.points_per_class += points.counts_per_class(len(self.class_names))
        self.valid_pixels += valid_pixels
        self.per_image[image_id] = len(points)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to ``summary.json``."""
        total = int(self.points_per_class.sum())
        return {
            **self.source,
            "images": len(self.per_image),
            "points": total,
            "points_per_class": {
                name: int(n) for name, n in zip(self.class_names, self.points_per_class, strict=True)
            },
            "labelled_fraction_of_valid_pixels": total / self.valid_pixels if self.valid_pixels else None,
            "points_per_image": self.per_image,
        }


def georeferencing(ref_or_path: SampleRef | Path) -> tuple[CRS | None, Affine | None]:
    """CRS and transform of an image (of the sample's window for tiled datasets), if it has them."""
    path = ref_or_path.image_path if isinstance(ref_or_path, SampleRef) else ref_or_path
    window = ref_or_path.window if isinstance(ref_or_path, SampleRef) else None
    with open_raster(path) as dataset:
        if dataset.crs is None:
            return None, None
        return dataset.crs, dataset.window_transform(window) if window is not None else dataset.transform


def write_point_files(
    directory: Path,
    image_id: str,
    points: PointLabels,
    schema: ClassSchema,
    crs: CRS | None,
    transform: Affine | None,
) -> None:
    """Write ``<id>.tif`` (georeferenced) or ``<id>.png``, and ``<id>.geojson``, into ``directory``."""
    suffix = ".tif" if crs is not None else ".png"
    write_label_raster(directory / f"{image_id}{suffix}", points.to_label_map(), schema, crs, transform)
    write_points_geojson(directory / f"{image_id}.geojson", points, schema, crs, transform)


def write_summary(directory: Path, summary: PointSummary) -> None:
    """Write ``summary.json`` atomically."""
    with atomic_output(directory / "summary.json") as temporary:
        temporary.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")


def simulate_dataset_points(
    discovery: Discovery,
    protocol: PointProtocol,
    staging: Path,
    advance: Callable[[str], None] | None = None,
) -> PointSummary:
    """Simulate points for every sample of a dataset and write their files into ``staging``.

    Args:
        discovery: The dataset, with dense masks.
        protocol: How to simulate the points.
        staging: Folder to write ``<id>.png``/``.tif``, ``<id>.geojson`` and ``summary.json`` into.
        advance: Called with each sample's id once it is done (to show progress).

    Raises:
        PointsegError: for a dataset with problems (missing pairs) or a mask with unknown values.
    """
    schema = discovery.schema
    summary = PointSummary(
        schema.classes,
        {
            "dataset": discovery.name,
            "root": str(discovery.root),
            "protocol": protocol.describe(),
            **protocol.model_dump(),
        },
        np.zeros(schema.num_classes, dtype=np.int64),
    )
    for ref in discovery.require_usable():
        assert ref.mask_path is not None
        image = raster_info(ref.image_path)
        check_mask_size(ref, image.width, image.height)
        mask = read_mask(ref.mask_path, schema, ref.window)
        points = simulate_points(mask, protocol, ref.id)
        write_point_files(staging, ref.id, points, schema, *georeferencing(ref))
        summary.add(ref.id, points, int(np.count_nonzero(mask != IGNORE_INDEX)))
        if advance is not None:
            advance(ref.id)
    write_summary(staging, summary)
    return summary


def import_point_file(
    points_path: Path,
    image_path: Path,
    schema: ClassSchema,
    staging: Path,
    points_crs: str | None = None,
    skip_invalid: bool = False,
    class_field: str = "class",
) -> tuple[PointSummary, ImportReport]:
    """Import points clicked in a GIS onto an image's pixel grid and write their files into ``staging``.

    ``class_field`` names the attribute holding the class name (see :func:`pointseg.points.import_points`).

    Raises:
        PointsegError: for unreadable files, a file without any point, and (unless
            ``skip_invalid``) any point outside the image, of an unknown class, or sharing a pixel
            with another.
    """
    points, report = import_points(
        points_path, image_path, schema, points_crs, skip_invalid, class_field=class_field
    )
    if report.total == 0:
        raise PointsegError(f"{points_path}: holds no points; expected at least one clicked point")
    crs, transform = georeferencing(image_path)
    write_point_files(staging, image_path.stem, points, schema, crs, transform)
    summary = PointSummary(
        schema.classes,
        {"source": str(points_path), "image": str(image_path), "import": report.summary()},
        np.zeros(schema.num_classes, dtype=np.int64),
    )
    summary.add(image_path.stem, points, points.height * points.width)
    write_summary(staging, summary)
    return summary, report
