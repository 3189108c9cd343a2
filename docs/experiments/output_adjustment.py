"""Two changes to a trained model's output, scored on validation and test tiles: neither is adopted.

A model trained on 10 clicks per class sees the classes in equal numbers, while Dubai's tiles are
three-quarters land: it paints too little land. This script predicts a checkpoint's class
probabilities on two splits (with the test-time augmentation of its config, float32, as
``pointseg evaluate`` does) and scores, on the dense masks of each, the model's labels as they are and
after each change:

- ``superpixel``: each superpixel (Felzenszwalb or SLIC from scikit-image, through
  :func:`pointseg.label_expansion.superpixels`, at 100, 400 and 1600 px) takes the class of
  its summed probabilities, so that boundaries follow colour edges;
- ``prior``: the class shares of the split are estimated without labels by expectation-maximisation
  (Saerens, Latinne and Decaestecker, "Adjusting the outputs of a classifier to new a priori
  probabilities", Neural Computation 2002), from equal shares as the clicks had, and every pixel's
  log-probabilities get ``power * log(share * K)`` added: 1 is the full correction, 0 none.

A change is worth adopting only if the validation tile says so; the test tile is only to report.

    python docs/experiments/output_adjustment.py CHECKPOINT ../shared/data/dubai_aerial "Tile 6" "Tile 7"
"""

import sys
from pathlib import Path

import numpy as np
import torch

import pointseg.torchvision_compat  # noqa: F401  (before smp/timm)
from pointseg.checkpoint import TrainedModel, load_trained_model
from pointseg.datasets import Discovery, discover_dataset, select_refs
from pointseg.errors import PointsegError
from pointseg.inference import SlidingWindowPredictor, open_source, torch_forward
from pointseg.label_expansion import superpixels
from pointseg.metrics import SegmentationMetrics
from pointseg.raster import read_mask, read_window

SUPERPIXELS = [(method, size) for method in ("felzenszwalb", "slic") for size in (100, 400, 1600)]
POWERS = (0.25, 0.5, 1.0)
Split = list[tuple[Path, np.ndarray, np.ndarray]]
"""``(image path, (K, H, W) probabilities, (H, W) dense mask)`` of each image of a split."""


class ProbabilitySink:
    """Keeps an image's ``(K, H, W)`` blended probabilities (float16, to hold a split in memory)."""

    def __init__(self, classes: int, height: int, width: int) -> None:
        self.probabilities = np.zeros((classes, height, width), dtype=np.float16)

    def write(self, row: int, col: int, block: torch.Tensor) -> None:
        """Store a block of probabilities."""
        self.probabilities[:, row : row + block.shape[1], col : col + block.shape[2]] = block.numpy()


def predict_split(trained: TrainedModel, discovery: Discovery, group: str) -> Split:
    """``(image path, probabilities, dense mask)`` of every image of ``group``."""
    eval_config = trained.config.eval
    predictor = SlidingWindowPredictor(
        torch_forward(trained.model, "cpu", "fp32", eval_config.tta),
        trained.num_classes,
        eval_config.tile,
        eval_config.overlap,
    )
    split = []
    for ref in select_refs(discovery.require_usable(), [group], "group"):
        with open_source(ref.image_path, trained.band_stats, ref.window) as source:
            sink = ProbabilitySink(trained.num_classes, source.height, source.width)
            predictor.predict(source, sink)
        if ref.mask_path is None:
            raise PointsegError(f"{ref.image_path}: no dense mask to score the prediction with")
        split.append((Path(ref.image_path), sink.probabilities, read_mask(ref.mask_path, discovery.schema)))
        print(f"predicted {ref.id}", file=sys.stderr, flush=True)
    return split


def estimated_shares(split: Split, iterations: int = 200) -> np.ndarray:
    """Class shares of a split by EM over every fourth pixel's probabilities, from equal shares."""
    probabilities = np.concatenate(
        [p[:, ::4, ::4].reshape(p.shape[0], -1).astype(np.float64) for _, p, _ in split], axis=1
    )
    classes = probabilities.shape[0]
    shares = np.full(classes, 1 / classes)
    for _ in range(iterations):
        adjusted = probabilities * (shares * classes)[:, None]
        adjusted /= adjusted.sum(axis=0, keepdims=True)
        shares = adjusted.mean(axis=1)
    return shares


def scores(split: Split, class_names: tuple[str, ...]) -> dict[str, float]:
    """Macro mIoU (%) of the split as it is and after each change, one confusion matrix per change."""
    shares = estimated_shares(split)
    names = ["as predicted"]
    names += [f"superpixel {method} {size}" for method, size in SUPERPIXELS]
    names += [f"prior, power {power}" for power in POWERS]
    metrics = {name: SegmentationMetrics(class_names) for name in names}
    print(f"estimated shares: {np.round(shares, 3).tolist()}", file=sys.stderr)

    def count(name: str, labels: np.ndarray, truth: np.ndarray) -> None:
        metrics[name].update(
            torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(truth.astype(np.int64))
        )

    for image_path, probabilities, truth in split:
        count("as predicted", probabilities.argmax(axis=0), truth)
        image = read_window(image_path)
        for method, size in SUPERPIXELS:
            segments = superpixels(image, method, size)  # type: ignore[arg-type]
            sums = np.stack(
                [np.bincount(segments.ravel(), weights=p.ravel().astype(np.float64)) for p in probabilities]
            )
            count(f"superpixel {method} {size}", sums.argmax(axis=0)[segments], truth)
        log_probabilities = np.log(np.maximum(probabilities.astype(np.float32), 1e-8))
        for power in POWERS:
            shift = (power * np.log(shares * len(class_names))).astype(np.float32)[:, None, None]
            count(f"prior, power {power}", (log_probabilities + shift).argmax(axis=0), truth)
    return {name: 100 * metric.report().miou for name, metric in metrics.items()}


def main() -> None:
    """Predict both splits and print one markdown table."""
    if len(sys.argv) != 5:
        sys.exit(f"usage: python {sys.argv[0]} CHECKPOINT DUBAI_ROOT VALIDATION_GROUP TEST_GROUP")
    checkpoint, root, validation, test = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    try:
        trained = load_trained_model(checkpoint, "cpu")
        discovery = discover_dataset("dubai", root, None)
        results = {
            group: scores(predict_split(trained, discovery, group), trained.schema.classes)
            for group in (validation, test)
        }
    except PointsegError as error:
        sys.exit(f"error: {error}")
    print(f"| output | {validation} mIoU (%) | {test} mIoU (%) |")
    print("|---|---:|---:|")
    for name in results[validation]:
        print(f"| {name} | {results[validation][name]:.1f} | {results[test][name]:.1f} |")


if __name__ == "__main__":
    main()
