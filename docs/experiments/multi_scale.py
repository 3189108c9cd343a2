"""Multi-scale prediction of a trained model, scored on validation and test tiles.

DeepLab's evaluation averages the class probabilities of an image predicted at several scales
(Chen et al., "Rethinking atrous convolution", 2017: 0.5 to 1.75). This script asks whether that
helps a model trained on clicks, and whether it helps it more than one trained on dense masks.
Each split is predicted once per scale (0.75, 1, 1.25, 1.5; float32, with the mirrors that TTA
names: ``none``, ``flips`` or ``d4``) through :func:`pointseg.inference.scale_averaged`, as
``eval.scales`` predicts; a set of scales is scored by the mean of its probabilities, which is what
``eval.scales`` set to it gives (window blending is linear, so averaging the blended maps is the
same sum). One confusion matrix per split and set of scales, on the dense masks.

A set of scales is worth adopting only if the validation tile says so; the test tile is only to report.

    python docs/experiments/multi_scale.py CHECKPOINT ../shared/data/dubai_aerial none "Tile 6" "Tile 7"
"""

import sys
from pathlib import Path

import numpy as np
import torch
from output_adjustment import ProbabilitySink  # this folder's script: run as a script, it is on sys.path

import pointseg.torchvision_compat  # noqa: F401  (before smp/timm)
from pointseg.checkpoint import TrainedModel, load_trained_model
from pointseg.choices import TestTimeAugmentation, check
from pointseg.datasets import Discovery, discover_dataset, select_refs
from pointseg.errors import PointsegError
from pointseg.inference import SlidingWindowPredictor, open_source, scale_averaged, torch_forward
from pointseg.metrics import SegmentationMetrics
from pointseg.raster import read_mask

SCALES = (0.75, 1.0, 1.25, 1.5)
SCALE_SETS = [(1.0,), (0.75,), (1.25,), (1.5,), (1.0, 1.25), (1.0, 1.5), (0.75, 1.0, 1.25), SCALES]


def scores(
    trained: TrainedModel, discovery: Discovery, tta: TestTimeAugmentation, group: str
) -> dict[tuple[float, ...], float]:
    """Macro mIoU (%) of ``group`` for every set of scales, one confusion matrix per set."""
    eval_config = trained.config.eval
    mirrored = torch_forward(trained.model, "cpu", "fp32", tta)
    predictors = {
        scale: SlidingWindowPredictor(
            scale_averaged(mirrored, (scale,)), trained.num_classes, eval_config.tile, eval_config.overlap
        )
        for scale in SCALES
    }
    metrics = {scales: SegmentationMetrics(trained.schema.classes) for scales in SCALE_SETS}
    for ref in select_refs(discovery.require_usable(), [group], "group"):
        if ref.mask_path is None:
            raise PointsegError(f"{ref.image_path}: no dense mask to score the prediction with")
        truth = torch.from_numpy(read_mask(ref.mask_path, discovery.schema).astype(np.int64))
        probabilities = {}
        with open_source(ref.image_path, trained.band_stats, ref.window) as source:
            for scale, predictor in predictors.items():
                sink = ProbabilitySink(trained.num_classes, source.height, source.width)
                predictor.predict(source, sink)
                probabilities[scale] = sink.probabilities
        for scales, metric in metrics.items():
            mean = sum(probabilities[scale].astype(np.float32) for scale in scales)
            metric.update(torch.from_numpy(np.asarray(mean).argmax(axis=0).astype(np.int64)), truth)
        print(f"predicted {ref.id}", file=sys.stderr, flush=True)
    return {scales: 100 * metric.report().miou for scales, metric in metrics.items()}


def main() -> None:
    """Predict each group at every scale and print one markdown table."""
    if len(sys.argv) < 5:
        sys.exit(f"usage: python {sys.argv[0]} CHECKPOINT DUBAI_ROOT none|flips|d4 GROUP [GROUP ...]")
    checkpoint, root, tta, groups = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4:]
    try:
        check(TestTimeAugmentation, tta, "TTA")
        trained = load_trained_model(checkpoint, "cpu")
        discovery = discover_dataset("dubai", root, None)
        results = {group: scores(trained, discovery, tta, group) for group in groups}  # type: ignore[arg-type]
    except PointsegError as error:
        sys.exit(f"error: {error}")
    print("| scales | " + " | ".join(f"{group} mIoU (%)" for group in groups) + " |")
    print("|---|" + "---:|" * len(groups))
    for scales in SCALE_SETS:
        name = ", ".join(f"{scale:g}" for scale in scales)
        print(f"| {name} | " + " | ".join(f"{results[group][scales]:.1f}" for group in groups) + " |")


if __name__ == "__main__":
    main()
