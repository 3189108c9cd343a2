"""Running a trained model over samples with dense masks and scoring it: honest macro mIoU.

:func:`score_samples` is the one place where a model meets the ground truth: it predicts each
sample whole with the same sliding window as ``pointseg predict`` (never only random crops),
reads its dense mask and counts the sample's confusion matrix. ``pointseg evaluate``
(:func:`total_report`), ``pointseg plot prediction`` (:func:`plot_model_predictions`) and the
density sweeps all go through it. One confusion matrix is accumulated over the whole set, ignored
pixels left out. The mIoU is the mean over classes of per-class IoU; classes absent from both the
ground truth and the predictions are reported as absent and left out of the mean.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pointseg.checkpoint import TrainedModel
from pointseg.choices import Overlap, Precision, TestTimeAugmentation, Tile, check
from pointseg.datasets import SampleRef
from pointseg.errors import PointsegError
from pointseg.inference import LabelSink, SlidingWindowPredictor, open_source, torch_forward
from pointseg.metrics import SegmentationMetrics, SegmentationReport, report_from_confusion
from pointseg.raster import read_mask, read_window
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

    Pixels without data (nodata, or a non-finite band of a float image) get ``IGNORE_INDEX``, as
    in ``pointseg predict``, and the metrics leave them out. ``tile`` and ``overlap`` default to
    the training config's ``eval`` settings.

    Raises:
        PointsegError: for a bad ``tile`` or ``overlap``, or a bad image file.
    """
    predictor = SlidingWindowPredictor(
        torch_forward(trained.model, device, precision, trained.config.eval.tta, trained.config.eval.scales),
        trained.num_classes,
        check(Tile, tile or trained.config.eval.tile, "tile"),
        check(Overlap, trained.config.eval.overlap if overlap is None else overlap, "overlap"),
        batch_size,
        device=device,
    )
    for ref in refs:
        with open_source(ref.image_path, trained.band_stats, ref.window) as source:
            sink = LabelSink(source.height, source.width, valid=source.valid)
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


@dataclass
class ScoredSample:
    """One sample predicted whole and compared with its dense mask.

    Attributes:
        ref: The sample.
        truth: ``(H, W)`` uint8 ground truth, ``IGNORE_INDEX`` for ignored pixels.
        prediction: ``(H, W)`` uint8 predicted labels.
        confusion: ``(K, K)`` int64 pixel counts of this sample, rows = ground truth, columns =
            prediction, ignored pixels left out (add them up for a set).
    """

    ref: SampleRef
    truth: np.ndarray
    prediction: np.ndarray
    confusion: Tensor

    def image(self) -> np.ndarray:
        """The sample's raw ``(C, H, W)`` pixels (read from disk on each call: figures need them)."""
        return read_window(self.ref.image_path, self.ref.window)

    def report(self, schema: ClassSchema) -> SegmentationReport:
        """mIoU, per-class IoU and accuracy of this sample alone."""
        return report_from_confusion(self.confusion, schema.classes)


def score_samples(
    trained: TrainedModel,
    refs: Sequence[SampleRef],
    schema: ClassSchema,
    tile: int | None = None,
    overlap: float | None = None,
    batch_size: int = 4,
    device: str = "cpu",
    precision: Precision = "fp32",
) -> Iterator[ScoredSample]:
    """Predict every sample whole and compare it with its dense mask, one sample at a time.

    Args:
        trained: The model.
        refs: Samples with dense masks.
        schema: The dataset's class schema; its classes must be the model's.
        tile: Sliding-window tile (default: the training config's ``eval.tile``).
        overlap: Sliding-window overlap (default: the training config's ``eval.overlap``).
        batch_size: Tiles per forward pass.
        device: ``cpu`` or ``cuda``.
        precision: ``fp32`` or ``bf16`` autocast.

    Yields:
        A :class:`ScoredSample` per sample, in the order of ``refs``.

    Raises:
        PointsegError: if the classes differ, a sample has no mask (checked before any
            prediction), a mask's size differs from its image's, or a file is bad.
    """
    require_same_classes(schema, trained.schema)
    missing = [ref.image_path for ref in refs if ref.mask_path is None]
    if missing:
        raise PointsegError(f"{missing[0]}: no dense mask to compare the prediction with")
    for ref, labels in predict_samples(trained, refs, tile, overlap, batch_size, device, precision):
        assert ref.mask_path is not None
        truth = read_mask(ref.mask_path, schema, ref.window)
        if truth.shape != labels.shape:
            raise PointsegError(f"{ref.mask_path}: mask is {_hw(truth.shape)}, image is {_hw(labels.shape)}")
        metrics = SegmentationMetrics(schema.classes)
        metrics.update(
            torch.from_numpy(labels.astype(np.int64))[None], torch.from_numpy(truth.astype(np.int64))[None]
        )
        yield ScoredSample(ref, truth, labels, metrics.compute())


def total_report(
    samples: Iterable[ScoredSample],
    schema: ClassSchema,
    on_sample: Callable[[ScoredSample], None] | None = None,
) -> SegmentationReport:
    """Score a set as one confusion matrix: the sum of its samples' (from :func:`score_samples`).

    Args:
        samples: Scored samples, usually ``score_samples(trained, refs, schema, ...)``.
        schema: The dataset's class schema.
        on_sample: Called after each sample (progress).

    Raises:
        PointsegError: whatever ``samples`` raises while they are predicted.
    """
    confusion = torch.zeros(schema.num_classes, schema.num_classes, dtype=torch.int64)
    for sample in samples:
        confusion += sample.confusion
        if on_sample is not None:
            on_sample(sample)
    return report_from_confusion(confusion, schema.classes)


def plot_model_predictions(
    trained: TrainedModel,
    refs: Sequence[SampleRef],
    schema: ClassSchema,
    out: str | Path,
    tile: int | None = None,
    overlap: float | None = None,
    batch_size: int = 4,
    device: str = "cpu",
    precision: Precision = "fp32",
    on_image: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Predict samples with a model and write one image | ground truth | prediction figure per sample.

    Args:
        trained: The model.
        refs: Samples with dense masks.
        schema: The dataset's class schema; its classes must be the model's.
        out: A ``.png`` file (one sample only) or a folder for ``<id>.png`` files.
        tile: Sliding-window tile (default: the training config's ``eval.tile``).
        overlap: Sliding-window overlap (default: the training config's ``eval.overlap``).
        batch_size: Tiles per forward pass.
        device: ``cpu`` or ``cuda``.
        precision: ``fp32`` or ``bf16`` autocast.
        on_image: Called with each figure's path once it is written.

    Returns:
        The figures written, in the order of ``refs``.

    Raises:
        PointsegError: if the classes differ, a sample has no mask, or a file is bad.
    """
    out = Path(out)
    if out.suffix.lower() == ".png" and len(refs) != 1:
        raise PointsegError(f"--out {out}: {len(refs)} images selected; give a folder for one <id>.png each")
    from pointseg.plots import plot_prediction  # matplotlib only for figures, not for ``evaluate``

    written = []
    for sample in score_samples(trained, refs, schema, tile, overlap, batch_size, device, precision):
        report = sample.report(schema)
        target = out if out.suffix.lower() == ".png" else out / f"{sample.ref.id}.png"
        plot_prediction(
            sample.image(),
            sample.truth,
            sample.prediction,
            schema,
            target,
            title=f"{sample.ref.id}: mIoU {report.miou:.1%}, accuracy {report.accuracy:.1%} "
            f"({trained.path.name})",
        )
        written.append(target)
        if on_image is not None:
            on_image(target)
    return written


def image_summary(sample: ScoredSample, schema: ClassSchema) -> dict[str, Any]:
    """One image of a report: its own mIoU and accuracy, and the share of each class in truth and prediction.

    The shares (over the image's scored pixels) show a model that paints a whole scene one class,
    which the set's mIoU alone can hide.
    """
    confusion = sample.confusion.to(torch.float64)
    scored = float(confusion.sum())
    report = sample.report(schema).to_dict()

    def shares(counts: Tensor) -> dict[str, float]:
        fractions = counts / scored if scored else counts * 0
        return {name: round(float(f), 4) for name, f in zip(schema.classes, fractions, strict=True)}

    return {
        "id": sample.ref.id,
        "miou": report["miou"],
        "accuracy": report["accuracy"],
        "true_share": shares(confusion.sum(dim=1)),
        "predicted_share": shares(confusion.sum(dim=0)),
    }


def report_json(
    report: SegmentationReport,
    refs: Sequence[SampleRef],
    checkpoint: Path | None,
    per_image: Sequence[dict[str, Any]] = (),
    tta: TestTimeAugmentation | None = None,
    scales: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The layout of ``pointseg evaluate --json``.

    The report, the images scored, the checkpoint (if any), the test-time augmentation and the
    scales the model predicted with (if given), and with ``per_image`` the :func:`image_summary` of
    each image.
    """
    return {
        **report.to_dict(),
        "images": [ref.id for ref in refs],
        "checkpoint": None if checkpoint is None else str(checkpoint),
        **({"tta": tta} if tta is not None else {}),
        **({"scales": list(scales)} if scales is not None else {}),
        **({"per_image": list(per_image)} if per_image else {}),
    }


def _hw(shape: Sequence[int]) -> str:
    return f"{shape[0]}x{shape[1]} (HxW)"
