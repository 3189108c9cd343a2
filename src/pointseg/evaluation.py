"""``pointseg evaluate``: honest macro mIoU of a trained model on dense masks.

Whole images are predicted with the same sliding window as ``pointseg predict`` (never only
random crops), and one confusion matrix is accumulated over the whole set, ignored pixels left
out. The mIoU is the mean over classes of per-class IoU; classes absent from both the ground
truth and the predictions are reported as absent and left out of the mean.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pointseg.checkpoint import TrainedModel
from pointseg.datasets import SampleRef
from pointseg.errors import PointsegError
from pointseg.inference import LabelSink, Precision, SlidingWindowPredictor, open_source, torch_forward
from pointseg.metrics import SegmentationMetrics, SegmentationReport
from pointseg.raster import read_mask
from pointseg.schema import ClassSchema


def predict_samples(
    trained: TrainedModel,
    refs: Sequence[SampleRef],
    tile: int | None = None,
    overlap: float | None = None,
    batch_size: int = 4,
    device: str = "cpu",
    precision: Precision = "fp32",
) -> Iterator[tuple[SampleRef, np.ndarray]]:
    """Predict each sample whole with the sliding window, yielding ``(ref, (H, W) uint8 labels)``.

    ``tile`` and ``overlap`` default to the training config's ``eval`` settings.
    """
    predictor = SlidingWindowPredictor(
        torch_forward(trained.model, device, precision),
        trained.num_classes,
        tile or trained.config.eval.tile,
        trained.config.eval.overlap if overlap is None else overlap,
        batch_size,
        device=device,
    )
    for ref in refs:
        with open_source(ref.image_path, trained.band_stats, ref.window) as source:
            sink = LabelSink(source.height, source.width)
            predictor.predict(source, sink)
        yield ref, sink.labels


def require_same_classes(data: ClassSchema, model: ClassSchema) -> None:
    """Raise unless the data's classes are the model's, in the same order.

    Raises:
        PointsegError: listing both.
    """
    if data.classes != model.classes:
        raise PointsegError(
            f"the data's classes {list(data.classes)} differ from the model's {list(model.classes)}"
        )


def evaluate_model(
    trained: TrainedModel,
    refs: Sequence[SampleRef],
    schema: ClassSchema,
    tile: int | None = None,
    overlap: float | None = None,
    batch_size: int = 4,
    device: str = "cpu",
    precision: Precision = "fp32",
    on_image: Callable[[SampleRef], None] | None = None,
) -> SegmentationReport:
    """Predict every sample whole and score it against its dense mask.

    Args:
        trained: The model.
        refs: Samples with dense masks.
        schema: The dataset's class schema; its classes must be the model's.
        tile: Sliding-window tile (default: the training config's ``eval.tile``).
        overlap: Sliding-window overlap (default: the training config's ``eval.overlap``).
        batch_size: Tiles per forward pass.
        device: ``cpu`` or ``cuda``.
        precision: ``fp32`` or ``bf16`` autocast.
        on_image: Called after each sample (progress).

    Raises:
        PointsegError: if the classes differ, a sample has no mask, or a file is bad.
    """
    require_same_classes(schema, trained.schema)
    missing = [ref.image_path for ref in refs if ref.mask_path is None]
    if missing:
        raise PointsegError(f"{missing[0]}: no dense mask to evaluate against")
    metrics = SegmentationMetrics(list(schema.classes))
    for ref, labels in predict_samples(trained, refs, tile, overlap, batch_size, device, precision):
        assert ref.mask_path is not None
        truth = read_mask(ref.mask_path, schema, ref.window)
        if truth.shape != labels.shape:
            raise PointsegError(f"{ref.mask_path}: mask is {truth.shape}, image is {labels.shape}")
        metrics.update(
            torch.from_numpy(labels.astype(np.int64))[None], torch.from_numpy(truth.astype(np.int64))[None]
        )
        if on_image is not None:
            on_image(ref)
    return metrics.report()


def report_json(report: SegmentationReport, refs: Sequence[SampleRef], checkpoint: Path) -> dict[str, Any]:
    """The layout of ``pointseg evaluate --json``: the report, the images scored and the checkpoint."""
    return {**report.to_dict(), "images": [ref.id for ref in refs], "checkpoint": str(checkpoint)}
