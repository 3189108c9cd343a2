"""Segmentation metrics: one confusion matrix per evaluation set -> per-class IoU and macro mIoU.

mIoU here is the mean over classes of per-class IoU (macro), computed from one confusion
matrix accumulated over the whole evaluation set, as papers report it. It is neither the
pixel-averaged (micro) IoU nor the mean of per-batch mIoUs, which both weight classes by how many
pixels or batches they happen to cover.

Confusion matrices follow torchmetrics: ``confusion[i, j]`` counts pixels whose ground truth is
class ``i`` and whose prediction is class ``j`` (rows = ground truth, columns = prediction).
Pixels whose ground truth is ``IGNORE_INDEX`` (255) are left out entirely, whatever is predicted
there, and so are pixels predicted ``IGNORE_INDEX`` (no data in the image: nothing was predicted).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pointseg.torchvision_compat  # noqa: F401  # isort: skip  (shim first: torchvision)
import torch
from rich.table import Table
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from pointseg.schema import IGNORE_INDEX


def iou_from_confusion(confusion: Tensor) -> tuple[Tensor, Tensor]:
    """Per-class intersection over union from a confusion matrix.

    ``IoU_k = TP_k / (TP_k + FP_k + FN_k)``, with ``TP_k = confusion[k, k]``,
    ``FP_k`` = column ``k`` minus ``TP_k`` and ``FN_k`` = row ``k`` minus ``TP_k``.

    A class with ``TP + FP + FN == 0`` appears neither in the ground truth nor in the predictions:
    it is *absent*, its IoU is NaN, and it must be left out of the mean (it is neither 0 nor 1).
    A class that is only predicted (false positives, no ground truth) is present with IoU 0.

    Args:
        confusion: ``(K, K)`` counts, rows = ground truth, columns = prediction.

    Returns:
        ``(K,)`` float64 IoU in [0, 1] (NaN for absent classes) and ``(K,)`` bool "present" mask.
    """
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"expected a square (K, K) confusion matrix, got shape {tuple(confusion.shape)}")
    counts = confusion.to(torch.float64)  # exact for counts up to 2**53 pixels
    true_positive = counts.diagonal()
    union = counts.sum(dim=0) + counts.sum(dim=1) - true_positive
    present = union > 0
    iou = torch.where(present, true_positive / union.clamp_min(1), torch.full_like(union, math.nan))
    return iou, present


@dataclass
class SegmentationReport:
    """Evaluation result of a segmentation model on a whole evaluation set.

    Attributes:
        miou: Macro mean IoU: the mean of per-class IoU over present classes, in [0, 1]
            (NaN if no pixel was evaluated).
        per_class_iou: IoU of each class by name, in [0, 1]; None for absent classes (in neither
            the ground truth nor the predictions).
        accuracy: Overall pixel accuracy, ``trace / sum`` of the confusion matrix, i.e. the
            fraction of non-ignored pixels predicted correctly (NaN if none was evaluated).
        confusion_matrix: ``K x K`` pixel counts, rows = ground truth, columns = prediction.
        class_names: The ``K`` class names, in label order.
    """

    miou: float
    per_class_iou: dict[str, float | None]
    accuracy: float
    confusion_matrix: list[list[int]]
    class_names: list[str]

    @property
    def absent_classes(self) -> list[str]:
        """Names of classes in neither the ground truth nor the predictions."""
        return [name for name, iou in self.per_class_iou.items() if iou is None]

    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON-ready data.

        Returns:
            ``{"miou", "per_class_iou" (name -> IoU or None), "accuracy", "confusion_matrix",
            "absent_classes"}``; a NaN ``miou``/``accuracy`` (nothing evaluated) becomes None.
        """
        return {
            "miou": _none_if_nan(self.miou),
            "per_class_iou": dict(self.per_class_iou),
            "accuracy": _none_if_nan(self.accuracy),
            "confusion_matrix": [list(row) for row in self.confusion_matrix],
            "absent_classes": self.absent_classes,
        }

    def to_table(self, title: str | None = "Evaluation") -> Table:
        """Render per-class IoU as a rich table; absent classes read "absent".

        Columns: class, IoU, ground-truth pixels, predicted pixels. The footer gives the macro
        mIoU (and over how many classes) and the pixel accuracy.
        """
        table = Table(title=title)
        table.add_column("class")
        table.add_column("IoU", justify="right")
        table.add_column("GT pixels", justify="right")
        table.add_column("predicted pixels", justify="right")
        for k, name in enumerate(self.class_names):
            iou = self.per_class_iou[name]
            gt_pixels = sum(self.confusion_matrix[k])
            predicted_pixels = sum(row[k] for row in self.confusion_matrix)
            table.add_row(
                name,
                "absent" if iou is None else f"{iou:.4f}",
                f"{gt_pixels:,}",
                f"{predicted_pixels:,}",
                style="dim" if iou is None else None,
            )
        present = len(self.class_names) - len(self.absent_classes)
        table.add_section()
        table.add_row(f"mIoU (macro, {present} classes)", f"{self.miou:.4f}", "", "", style="bold")
        table.add_row("pixel accuracy", f"{self.accuracy:.4f}", "", "")
        return table


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value


def report_from_confusion(confusion: Tensor, class_names: Sequence[str]) -> SegmentationReport:
    """Summarise a confusion matrix into a :class:`SegmentationReport`.

    Args:
        confusion: ``(K, K)`` pixel counts, rows = ground truth, columns = prediction (ignored
            pixels already left out).
        class_names: ``K`` class names in label order.

    Returns:
        The report; mIoU averages only over present classes.
    """
    if confusion.shape != (len(class_names), len(class_names)):
        raise ValueError(
            f"confusion matrix of shape {tuple(confusion.shape)} does not match "
            f"{len(class_names)} class names"
        )
    iou, present = iou_from_confusion(confusion)
    counts = confusion.to(torch.float64)
    total = counts.sum().item()
    return SegmentationReport(
        miou=iou[present].mean().item() if bool(present.any()) else math.nan,
        per_class_iou={
            name: (iou[k].item() if bool(present[k]) else None) for k, name in enumerate(class_names)
        },
        accuracy=counts.diagonal().sum().item() / total if total > 0 else math.nan,
        confusion_matrix=confusion.to(torch.int64).tolist(),
        class_names=list(class_names),
    )


class SegmentationMetrics(MulticlassConfusionMatrix):
    """Accumulates one confusion matrix over an evaluation set; reports per-class IoU and mIoU.

    A torchmetrics ``MulticlassConfusionMatrix`` with class names: its state (the ``(K, K)``
    int64 matrix) is summed across processes under DDP when computed, and reset with
    :meth:`reset`. ``update(preds, target)`` takes ``preds`` as ``(B, H, W)`` int64 predicted
    labels in ``0..K-1`` (``(B, K, H, W)`` scores are also accepted and reduced with argmax over
    dim 1) and ``target`` as ``(B, H, W)`` int64 ground truth. Pixels whose target is
    ``ignore_index`` are dropped before counting, so a wrong prediction there changes nothing;
    so are pixels predicted ``ignore_index`` (no data there), whatever their target.
    ``compute()`` returns the ``(K, K)`` int64 confusion matrix (rows = ground truth, columns =
    prediction); :meth:`report` turns it into a :class:`SegmentationReport`.

    Example::

        metrics = SegmentationMetrics(["building", "road", "water"])
        for images, masks in loader:
            metrics.update(model(images).argmax(1), masks)
        report = metrics.report()   # SegmentationReport; report.miou is the macro mIoU

    Args:
        class_names: Name of each class, in label order (``K`` = its length).
        ignore_index: Target label of pixels to leave out (default ``IGNORE_INDEX`` = 255).
        **kwargs: Passed to ``torchmetrics.Metric`` (e.g. ``sync_on_compute``).
    """

    def __init__(self, class_names: Sequence[str], ignore_index: int = IGNORE_INDEX, **kwargs: Any) -> None:
        super().__init__(num_classes=len(class_names), ignore_index=ignore_index, normalize=None, **kwargs)
        self.class_names = list(class_names)

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Count ``(B, H, W)`` predicted labels (or ``(B, K, H, W)`` scores) against the targets.

        Pixels predicted ``ignore_index`` (left out for want of data) get an ignored target, so
        they are not counted (torchmetrics would fail on a label outside ``0..K-1``).
        """
        if self.ignore_index is not None and preds.shape == target.shape:
            target = torch.where(preds == self.ignore_index, self.ignore_index, target)
        super().update(preds, target)

    def report(self) -> SegmentationReport:
        """Return the :class:`SegmentationReport` of everything accumulated so far (synced under DDP)."""
        return report_from_confusion(self.compute(), self.class_names)
