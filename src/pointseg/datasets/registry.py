"""The dataset registry: one adapter per format, and discovery of a dataset folder through it.

Adding a format is one adapter module (a ``discover`` function, its built-in schema if it has
one, and an ``ADAPTER``) plus one line in :data:`DATASETS` (and its name in
:data:`~pointseg.choices.DatasetFormat`).
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from pointseg.choices import DatasetFormat
from pointseg.datasets import deepglobe, dubai, folder, landcoverai
from pointseg.datasets.adapter import DatasetAdapter, DiscoveryOptions
from pointseg.datasets.samples import Discovery
from pointseg.errors import PointsegError
from pointseg.schema import ClassSchema

DATASETS: dict[str, DatasetAdapter] = {
    "deepglobe": deepglobe.ADAPTER,
    "landcoverai": landcoverai.ADAPTER,
    "dubai": dubai.ADAPTER,
    "folder": folder.ADAPTER,
}

DATASET_FORMATS: tuple[str, ...] = get_args(DatasetFormat)
"""The format names, in the order they are listed to users."""

BUILTIN_SCHEMAS: dict[str, ClassSchema] = {
    name: adapter.schema for name, adapter in DATASETS.items() if adapter.schema is not None
}
"""The class schema of each format that has one built in."""


def dataset_adapter(format: str) -> DatasetAdapter:
    """The adapter of ``format``.

    Raises:
        PointsegError: for an unknown format, listing the known ones.
    """
    if format not in DATASETS:
        raise PointsegError(
            f"unknown dataset format '{format}'; expected one of {', '.join(DATASET_FORMATS)}"
        )
    return DATASETS[format]


def resolve_schema(format: str | None, schema_file: str | Path | None) -> ClassSchema:
    """The class schema from ``schema_file`` if given, else the built-in one of ``format``.

    Raises:
        PointsegError: if neither names a schema.
    """
    if schema_file is not None:
        return ClassSchema.load(schema_file)
    if format in BUILTIN_SCHEMAS:
        return BUILTIN_SCHEMAS[format]
    if format is None:
        raise PointsegError(
            f"no classes given: give --schema FILE, or --format {' | '.join(BUILTIN_SCHEMAS)}"
        )
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
        format: A name of :data:`DATASETS`: ``deepglobe``, ``landcoverai``, ``dubai`` or ``folder``.
        root: The dataset folder.
        schema: A schema file or object. Required for formats without a built-in schema
            (``folder``); for the others it replaces the built-in schema.
        require_masks: Report images without masks as problems.
        split: Formats with split lists (LandCover.ai): keep the samples of that list.
        images_dir: ``folder`` only: subfolder of images.
        masks_dir: ``folder`` only: subfolder of masks.
        mask_pattern: ``folder`` only: mask stem for an image stem, e.g. ``"{stem}_mask"``.

    Raises:
        PointsegError: for an unknown format, a missing folder or schema, or a split list the
            format does not have.
    """
    adapter = dataset_adapter(format)
    loaded = ClassSchema.load(schema) if isinstance(schema, (str, Path)) else schema
    if loaded is None:
        loaded = adapter.schema
    if loaded is None:
        raise PointsegError(f"format '{format}' needs a class schema file (--schema FILE.yaml)")
    if split is not None and adapter.split_lists is None:
        raise PointsegError(f"split lists are a LandCover.ai feature; format '{format}' has none")
    options = DiscoveryOptions(
        schema=loaded,
        require_masks=require_masks,
        images_dir=images_dir,
        masks_dir=masks_dir,
        mask_pattern=mask_pattern,
    )
    discovery = adapter.discover(Path(root), options)
    if split is not None:
        discovery.refs = adapter.select_split(discovery, split)
    return discovery
