"""Dataset loaders: one module per dataset family, all yielding the same sample.

``discover_dataset`` pairs a folder's files for any format; ``SegmentationDataset`` reads the
pairs by window. See :class:`pointseg.datasets.base.SegmentationDataset` for the sample layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pointseg.datasets import deepglobe, dubai, folder, landcoverai
from pointseg.datasets.base import (
    BandStats,
    Discovery,
    PointsDirectory,
    PointSource,
    Sample,
    SampleRef,
    SegmentationDataset,
    SimulatedPoints,
    collate_samples,
    select_refs,
)
from pointseg.errors import PointsegError
from pointseg.schema import ClassSchema

DatasetFormat = Literal["deepglobe", "landcoverai", "dubai", "folder"]
DATASET_FORMATS: tuple[str, ...] = ("deepglobe", "landcoverai", "dubai", "folder")
BUILTIN_SCHEMAS: dict[str, ClassSchema] = {
    "deepglobe": deepglobe.SCHEMA,
    "landcoverai": landcoverai.SCHEMA,
    "dubai": dubai.SCHEMA,
}

__all__ = [
    "BUILTIN_SCHEMAS",
    "DATASET_FORMATS",
    "BandStats",
    "Discovery",
    "PointSource",
    "PointsDirectory",
    "Sample",
    "SampleRef",
    "SegmentationDataset",
    "SimulatedPoints",
    "collate_samples",
    "discover_dataset",
    "resolve_schema",
    "select_refs",
]


def resolve_schema(format: str | None, schema_file: str | Path | None) -> ClassSchema:
    """The class schema from ``schema_file`` if given, else the built-in one of ``format``.

    Raises:
        PointsegError: if neither names a schema.
    """
    if schema_file is not None:
        return ClassSchema.load(schema_file)
    if format in BUILTIN_SCHEMAS:
        return BUILTIN_SCHEMAS[format]
    raise PointsegError(
        f"--format {format!r} has no built-in classes: give --schema FILE, or --format "
        f"{' | '.join(BUILTIN_SCHEMAS)}"
    )


def discover_dataset(
    format: str,
    root: str | Path,
    schema: str | Path | ClassSchema | None = None,
    *,
    require_masks: bool = True,
    split: str | None = None,
    images_dir: str = "images",
    masks_dir: str = "masks",
    mask_pattern: str = "{stem}",
) -> Discovery:
    """Pair the files of a dataset folder.

    Args:
        format: ``deepglobe``, ``landcoverai``, ``dubai`` or ``folder``.
        root: The dataset folder.
        schema: A schema file or object. Required for ``folder``; for the built-in formats it
            replaces the built-in schema.
        require_masks: Report images without masks as problems.
        split: LandCover.ai only: keep the tiles of ``train``/``val``/``test``.txt.
        images_dir: ``folder`` only: subfolder of images.
        masks_dir: ``folder`` only: subfolder of masks.
        mask_pattern: ``folder`` only: mask stem for an image stem, e.g. ``"{stem}_mask"``.

    Raises:
        PointsegError: for an unknown format, a missing folder or schema.
    """
    root = Path(root)
    loaded = ClassSchema.load(schema) if isinstance(schema, (str, Path)) else schema
    if format == "folder":
        if loaded is None:
            raise PointsegError("format 'folder' needs a class schema file (--schema FILE.yaml)")
        return folder.discover(root, loaded, images_dir, masks_dir, mask_pattern, require_masks)
    if split is not None and format != "landcoverai":
        raise PointsegError(f"split lists are a LandCover.ai feature; format '{format}' has none")
    if format == "deepglobe":
        discovery = deepglobe.discover(root, require_masks)
    elif format == "dubai":
        discovery = dubai.discover(root, require_masks)
    elif format == "landcoverai":
        discovery = landcoverai.discover(root, require_masks, split)
    else:
        raise PointsegError(
            f"unknown dataset format '{format}'; expected one of {', '.join(DATASET_FORMATS)}"
        )
    if loaded is not None:
        discovery.schema = loaded
    return discovery
