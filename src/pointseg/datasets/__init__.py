"""Datasets: one adapter module per dataset family, a registry of them, and what they share.

- :mod:`~pointseg.datasets.registry`: the formats (:data:`DATASETS`), :func:`discover_dataset`
  pairs a folder's files for any of them; their names are
  :data:`pointseg.choices.DatasetFormat` (no heavy import, for option parsers and configs);
- :mod:`~pointseg.datasets.adapter`: what an adapter provides;
- :mod:`~pointseg.datasets.samples`: sample refs and what a dataset folder holds;
- :mod:`~pointseg.datasets.splits`: train/val/test splits;
- :mod:`~pointseg.datasets.point_sources`: where point labels come from (simulated, a folder or a file);
- :mod:`~pointseg.datasets.dataset` (imports torch): ``SegmentationDataset`` reads samples by
  window, see it for the sample layout; :mod:`~pointseg.datasets.cache` keeps decoded files.

Band statistics are in :mod:`pointseg.normalization`. Importing this package imports neither torch
nor the point-label readers.
"""

from pointseg.choices import DatasetFormat
from pointseg.datasets.adapter import DatasetAdapter, DiscoveryOptions
from pointseg.datasets.registry import (
    BUILTIN_SCHEMAS,
    DATASET_FORMATS,
    DATASETS,
    dataset_adapter,
    discover_dataset,
    resolve_schema,
)
from pointseg.datasets.samples import Discovery, SampleRef, select_refs
from pointseg.datasets.splits import split_samples

__all__ = [
    "BUILTIN_SCHEMAS",
    "DATASETS",
    "DATASET_FORMATS",
    "DatasetAdapter",
    "DatasetFormat",
    "Discovery",
    "DiscoveryOptions",
    "SampleRef",
    "dataset_adapter",
    "discover_dataset",
    "resolve_schema",
    "select_refs",
    "split_samples",
]
