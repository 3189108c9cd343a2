"""Self-training: confident predictions of a trained model become pseudo-labels, and training starts again.

After the training on points, the best checkpoint predicts every *training* image whole, with
the sliding window of inference (validation and test images are never predicted). A pixel's
confidence is its largest softmax probability, and its predicted class gets a pseudo-label where
the confidence reaches the class's threshold: a fixed threshold (one, or one per class), or per
class the confidence above which the ``top_share`` most confident of all training pixels
predicted as that class lie. Pixels without data in the image (nodata, alpha, non-finite
values) never get one, and the dense masks are never read to choose them: they are read only
where training itself reads them, to simulate the points. The clicked points always override
the pseudo-labels.

Each round writes the pseudo-labels of every training image as a point label map
(``<run>/pseudo-labels-<k>/<id>.png``, with ``summary.json``: thresholds and counts per class),
then trains again with :func:`pointseg.training.train` on that points folder, warm-started from
the previous round's best weights (``model.weights``), into ``<run>/self-training-<k>``. Scoring
is unchanged: validation and test use the dense masks of their own images. A round whose run
folder already has a ``summary.json`` is finished and is not trained again.

Predictions of all training images are held in memory between the two passes of the
``top-share`` selection: 3 bytes per training pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pointseg.checkpoint import TrainedModel, load_trained_model
from pointseg.config import SelfTrainingConfig, TrainConfig, parse_config
from pointseg.datasets import SampleRef, split_samples
from pointseg.datasets.dataset import SegmentationDataset
from pointseg.errors import PointsegError
from pointseg.inference import LabelSink, SlidingWindowPredictor, open_source, torch_forward
from pointseg.raster import write_label_raster
from pointseg.runs import best_checkpoint, write_json
from pointseg.schema import IGNORE_INDEX
from pointseg.training import point_source, train, trainer_device

CONFIDENCE_BINS = 1000
"""Resolution of the per-class confidence histograms of the ``top-share`` selection."""


@dataclass
class Prediction:
    """A training image's predicted classes and confidences (``IGNORE_INDEX`` and 0 where it has no data)."""

    ref: SampleRef
    labels: np.ndarray  # (H, W) uint8
    confidence: np.ndarray  # (H, W) float16


def class_thresholds(
    settings: SelfTrainingConfig, predictions: Sequence[Prediction], num_classes: int
) -> np.ndarray:
    """The confidence each class's pixels need to become pseudo-labels, ``(K,)`` float.

    Raises:
        PointsegError: for a list of thresholds that does not have one value per class.
    """
    if settings.selection == "threshold":
        values = (
            settings.threshold if isinstance(settings.threshold, list) else [settings.threshold] * num_classes
        )
        if len(values) != num_classes:
            raise PointsegError(
                f"self_training.threshold has {len(values)} values; "
                f"expected one, or one per class ({num_classes})"
            )
        return np.asarray(values, dtype=np.float64)
    counts = np.zeros((num_classes, CONFIDENCE_BINS), dtype=np.int64)
    for prediction in predictions:
        has_data = prediction.labels != IGNORE_INDEX
        bins = np.minimum(
            (prediction.confidence[has_data].astype(np.float64) * CONFIDENCE_BINS).astype(np.int64),
            CONFIDENCE_BINS - 1,
        )
        np.add.at(counts, (prediction.labels[has_data].astype(np.int64), bins), 1)
    # at_or_above[k, b]: pixels of class k with a confidence in bin b or higher.
    at_or_above = counts[:, ::-1].cumsum(axis=1)[:, ::-1]
    thresholds = np.ones(num_classes)
    for k in range(num_classes):
        total = at_or_above[k, 0]
        if total:
            enough = np.nonzero(at_or_above[k] >= settings.top_share * total)[0]
            thresholds[k] = enough[-1] / CONFIDENCE_BINS
    return thresholds


def pseudo_labels(prediction: Prediction, thresholds: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8 pseudo-labels of one image, the clicked ``points`` written over them.

    Args:
        prediction: The image's predicted classes (``IGNORE_INDEX`` where it has no data) and
            confidences.
        thresholds: ``(K,)`` minimum confidence per class.
        points: ``(H, W)`` clicked point labels, ``IGNORE_INDEX`` where unlabelled.
    """
    labels = prediction.labels
    has_data = labels != IGNORE_INDEX
    needed = np.ones(labels.shape)
    needed[has_data] = thresholds[labels[has_data]]
    confident = has_data & (prediction.confidence >= needed)
    result = np.where(confident, labels, IGNORE_INDEX).astype(np.uint8)
    clicked = points != IGNORE_INDEX
    result[clicked] = points[clicked]
    return result


def predict_training_images(
    trained: TrainedModel, refs: Sequence[SampleRef], device: str
) -> list[Prediction]:
    """Predict each training image whole with the sliding window of the model's ``eval`` settings."""
    evaluation = trained.config.eval
    predictor = SlidingWindowPredictor(
        torch_forward(trained.model, device, tta=evaluation.tta, scales=evaluation.scales),
        trained.num_classes,
        evaluation.tile,
        evaluation.overlap,
        evaluation.batch_size,
        device=device,
    )
    predictions = []
    for ref in refs:
        with open_source(ref.image_path, trained.band_stats, ref.window) as source:
            sink = LabelSink(source.height, source.width, with_confidence=True, valid=source.valid)
            predictor.predict(source, sink)
        assert sink.confidence is not None
        predictions.append(Prediction(ref, sink.labels, np.nan_to_num(sink.confidence).astype(np.float16)))
    return predictions


def write_pseudo_labels(
    config: TrainConfig, checkpoint: Path, directory: Path, device: str = "cpu"
) -> dict[str, object]:
    """Write the pseudo-labels of every training image of ``config`` into ``directory``.

    Returns:
        The summary also written to ``directory/summary.json``: thresholds, pseudo-labelled pixels
        per class, and the labelled share of the pixels with data.

    Raises:
        PointsegError: for thresholds that do not fit the classes (before anything is predicted),
            or a checkpoint or points that cannot be read.
    """
    schema, splits = split_samples(config.data)
    refs = splits["train"]
    settings = config.self_training
    fixed = class_thresholds(settings, [], schema.num_classes) if settings.selection == "threshold" else None
    trained = load_trained_model(checkpoint, device)
    predictions = predict_training_images(trained, refs, device)
    thresholds = fixed if fixed is not None else class_thresholds(settings, predictions, schema.num_classes)
    clicked = SegmentationDataset(
        refs, schema, trained.band_stats, points=point_source(config), with_masks=False
    )
    counts = np.zeros(schema.num_classes, dtype=np.int64)
    with_data = 0
    for index, prediction in enumerate(predictions):
        points = clicked[index]["points"].numpy()
        labels = pseudo_labels(prediction, thresholds, points)
        path = directory / f"{prediction.ref.id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_label_raster(path, labels, schema)
        counts += np.bincount(labels[labels != IGNORE_INDEX], minlength=schema.num_classes)[
            : schema.num_classes
        ]
        with_data += int((prediction.labels != IGNORE_INDEX).sum())
    summary: dict[str, object] = {
        "checkpoint": str(checkpoint),
        "selection": config.self_training.selection,
        "thresholds": dict(zip(schema.classes, thresholds.tolist(), strict=True)),
        "pixels_per_class": dict(zip(schema.classes, counts.tolist(), strict=True)),
        "labelled_share": int(counts.sum()) / with_data if with_data else 0.0,
        "images": [ref.id for ref in refs],
    }
    write_json(directory / "summary.json", summary)
    return summary


def round_dir(run_dir: Path, index: int) -> Path:
    """The run folder of self-training round ``index`` (from 1) of the run in ``run_dir``."""
    return run_dir / f"self-training-{index}"


def finished_rounds(run_dir: Path) -> list[Path]:
    """The run folders of the finished self-training rounds of a run, in order (none without rounds).

    The model a run ends with is the last one's best checkpoint, or the run's own without rounds.
    """
    rounds: list[Path] = []
    while (round_dir(run_dir, len(rounds) + 1) / "summary.json").is_file():
        rounds.append(round_dir(run_dir, len(rounds) + 1))
    return rounds


def round_config(config: TrainConfig, run_dir: Path, labels: Path, weights: Path, index: int) -> TrainConfig:
    """The settings of round ``index``: the pseudo-labels as points, warm-started from ``weights``."""
    data = config.model_dump(mode="json", by_alias=True)
    data["points"]["directory"] = str(labels)
    data["points"]["file"] = None  # the pseudo-labels replace the clicked points
    data["points"]["expansion"]["method"] = "none"  # pseudo-labels are already spread
    data["model"]["weights"] = str(weights)
    data["self_training"]["rounds"] = 0
    data["trainer"]["max_epochs"] = config.self_training.max_epochs or config.trainer.max_epochs
    data["output_dir"] = str(run_dir)
    data["run_name"] = round_dir(run_dir, index).name
    return parse_config(data, f"self-training round {index}")


def self_train(
    config: TrainConfig, run_dir: Path, progress: bool = True, device: str | None = None
) -> list[Path]:
    """Run ``config.self_training.rounds`` rounds after the training on points in ``run_dir``.

    Rounds run in this process (under DDP, launch them from one process only).

    Args:
        config: The settings the run in ``run_dir`` was trained with.
        run_dir: The run folder of the training on points.
        progress: Show training progress.
        device: Where the pseudo-labels are predicted; default: CUDA if available and the
            config's accelerator is not ``cpu``.

    Returns:
        The run folder of each round, in order (the last holds the final model).

    Raises:
        PointsegError: if a run has no best checkpoint to start from, or as :func:`pointseg.training.train`.
    """
    if device is None:
        device = trainer_device(config.trainer)
    rounds = []
    previous = run_dir
    for index in range(1, config.self_training.rounds + 1):
        labels = run_dir / f"pseudo-labels-{index}"
        folder = round_dir(run_dir, index)
        if not (folder / "summary.json").is_file():
            write_pseudo_labels(config, best_checkpoint(previous), labels, device)
            train(round_config(config, run_dir, labels, best_checkpoint(previous), index), progress=progress)
        rounds.append(folder)
        previous = folder
    return rounds
