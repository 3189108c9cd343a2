import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from fake_data import UTM, write_untrained_checkpoint
from pointseg.checkpoint import load_trained_model
from pointseg.config import SelfTrainingConfig, load_config
from pointseg.datasets import SampleRef, split_samples
from pointseg.datasets.dataset import SegmentationDataset
from pointseg.errors import PointsegError
from pointseg.raster import read_window
from pointseg.schema import IGNORE_INDEX
from pointseg.self_training import (
    CONFIDENCE_BINS,
    Prediction,
    class_thresholds,
    predict_training_images,
    pseudo_labels,
)
from pointseg.training import point_source

CPU_SMALL = Path(__file__).resolve().parents[1] / "configs" / "cpu_small.yaml"
U = IGNORE_INDEX


def prediction(labels: list[list[int]], confidence: list[list[float]]) -> Prediction:
    return Prediction(
        SampleRef("x", Path("x.tif"), None, "x"),
        np.array(labels, dtype=np.uint8),
        np.array(confidence, dtype=np.float16),
    )


def test_confident_pixels_with_data_become_pseudo_labels_and_clicked_points_override() -> None:
    predicted = prediction([[0, 0, 1], [1, U, 2]], [[0.95, 0.5, 0.7], [0.65, 0.0, 0.99]])
    points = np.array([[U, 2, U], [U, U, U]], dtype=np.uint8)
    labels = pseudo_labels(predicted, np.array([0.9, 0.68, 0.99]), points)
    # class 0 needs 0.9, class 1 0.68, class 2 0.99; the point (class 2) overrides a class-0 pixel.
    np.testing.assert_array_equal(labels, [[0, 2, 1], [U, U, 2]])
    # A pixel without data (U in the prediction) stays unlabelled even with every threshold at 0.
    assert pseudo_labels(predicted, np.zeros(3), np.full((2, 3), U, np.uint8))[1, 1] == U


def test_top_share_keeps_the_most_confident_share_of_each_class_over_all_images() -> None:
    first = prediction([[0, 0, 0, 0]], [[0.2, 0.4, 0.6, 0.8]])
    second = prediction([[0, 0, 0, 0, 1, 1, U]], [[0.3, 0.5, 0.7, 0.9, 0.9, 0.5, 1.0]])
    settings = SelfTrainingConfig(selection="top-share", top_share=0.5)
    thresholds = class_thresholds(settings, [first, second], 3)
    # class 0: 8 pixels, the top 4 are 0.6..0.9; class 1: the top 1 of 2 is 0.9; class 2 has none.
    assert thresholds[0] == pytest.approx(0.6, abs=2 / CONFIDENCE_BINS)
    assert thresholds[1] == pytest.approx(0.9, abs=2 / CONFIDENCE_BINS)
    assert thresholds[2] == 1.0
    kept = [pseudo_labels(p, thresholds, np.full(p.labels.shape, U, np.uint8)) for p in (first, second)]
    assert sum(int((k == 0).sum()) for k in kept) == 4 and sum(int((k == 1).sum()) for k in kept) == 1
    assert kept[1][0, 6] == U  # no data


def test_fixed_thresholds_one_or_one_per_class() -> None:
    assert class_thresholds(SelfTrainingConfig(threshold=0.8), [], 3).tolist() == [0.8] * 3
    assert class_thresholds(SelfTrainingConfig(threshold=[0.5, 0.6, 0.7]), [], 3).tolist() == [0.5, 0.6, 0.7]
    with pytest.raises(PointsegError, match=r"self_training\.threshold has 2 values"):
        class_thresholds(SelfTrainingConfig(threshold=[0.5, 0.6]), [], 3)


def test_self_training_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(PointsegError) as error:
        load_config(CPU_SMALL, ["self_training.rounds=9", "self_training.threshold=[0.5, 1.5]"])
    assert "self_training.rounds" in str(error.value) and "self_training.threshold" in str(error.value)
    with pytest.raises(PointsegError, match="needs supervision 'points'"):
        load_config(CPU_SMALL, ["supervision=dense", "loss.name=ce", "self_training.rounds=1"])


def test_pixels_without_data_are_never_predicted_as_pseudo_labels(tmp_path: Path) -> None:
    trained = load_trained_model(write_untrained_checkpoint(tmp_path / "model.ckpt"))
    pixels = np.random.default_rng(0).integers(30, 220, (3, 40, 48)).astype(np.uint8)
    pixels[:, 10:20, 5:30] = 0  # nodata
    path = tmp_path / "scene.tif"
    profile = {"driver": "GTiff", "count": 3, "height": 40, "width": 48, "dtype": "uint8", "nodata": 0}
    with rasterio.open(path, "w", crs=UTM, transform=from_origin(0, 0, 1, 1), **profile) as dataset:
        dataset.write(pixels)
    [predicted] = predict_training_images(trained, [SampleRef("scene", path, None, "scene")], "cpu")
    nodata = np.zeros((40, 48), bool)
    nodata[10:20, 5:30] = True
    assert (predicted.labels[nodata] == U).all() and (predicted.labels[~nodata] != U).all()
    labels = pseudo_labels(predicted, np.zeros(trained.num_classes), np.full((40, 48), U, np.uint8))
    assert (labels[nodata] == U).all() and (labels[~nodata] != U).all()


@pytest.mark.integration
def test_a_round_trains_on_pseudo_labels_of_training_images_only(
    fake_deepglobe: Path, tmp_path: Path, cli
) -> None:
    overrides = [
        f"data.root={fake_deepglobe}",
        "data.val=['102']",
        "data.test=['103']",
        "data.crop_size=64",
        "data.crops_per_image=2",
        "data.batch_size=4",
        "data.num_workers=0",
        "points.density=0.05",
        "eval.tile=64",
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",
        "self_training.rounds=1",
        "self_training.threshold=0.2",
        f"output_dir={tmp_path}",
        "run_name=st",
    ]
    code, out, err = cli(
        "train", "--config", CPU_SMALL, *[a for o in overrides for a in ("--set", o)], "--no-progress"
    )
    assert code == 0, err
    run_dir = tmp_path / "st"
    round_dir = run_dir / "self-training-1"
    assert "self-training round 1:" in out and str(round_dir) in out
    assert (round_dir / "checkpoints" / "best.ckpt").is_file()
    labels_dir = run_dir / "pseudo-labels-1"
    # Only the training images get pseudo-labels: never validation (102) or test (103) images.
    assert sorted(p.name for p in labels_dir.glob("*.png")) == ["100_sat.png", "101_sat.png"]
    summary = json.loads((labels_dir / "summary.json").read_text())
    assert summary["images"] == ["100_sat", "101_sat"] and 0 < summary["labelled_share"] <= 1
    # The round is warm-started from the first model and trains on the pseudo-labels as points.
    round_config = load_config(round_dir / "config.yaml")
    assert Path(round_config.model.weights or "") == run_dir / "checkpoints" / "best.ckpt"
    assert round_config.points.directory == labels_dir and round_config.self_training.rounds == 0
    # The clicked points are in the pseudo-labels, with their own class.
    config = load_config(CPU_SMALL, overrides)
    schema, splits = split_samples(config.data)
    clicked = SegmentationDataset(
        splits["train"],
        schema,
        load_trained_model(round_dir / "checkpoints" / "best.ckpt").band_stats,
        points=point_source(config),
        with_masks=False,
    )
    for index, ref in enumerate(splits["train"]):
        points = clicked[index]["points"].numpy()
        written = read_window(labels_dir / f"{ref.id}.png")[0]
        assert (written[points != U] == points[points != U]).all()
        assert (written != U).sum() > (points != U).sum()
    # A finished round is not trained again.
    from pointseg.self_training import self_train

    modified = (round_dir / "summary.json").stat().st_mtime_ns
    assert self_train(config, run_dir, progress=False) == [round_dir]
    assert (round_dir / "summary.json").stat().st_mtime_ns == modified
    assert torch.load(round_dir / "checkpoints" / "best.ckpt", weights_only=True)["global_step"] > 0


def test_a_checkpoint_as_model_weights_loads_the_whole_network(tmp_path: Path) -> None:
    from pointseg.models import build_model

    checkpoint = write_untrained_checkpoint(tmp_path / "model.ckpt")
    trained = load_trained_model(checkpoint)
    settings = trained.config.model
    warm = build_model(
        trained.num_classes, 3, settings.arch, settings.encoder, settings.norm, str(checkpoint)
    )
    for name, tensor in trained.model.state_dict().items():
        torch.testing.assert_close(warm.state_dict()[name], tensor, msg=name)
