from pathlib import Path

import numpy as np
import pytest

from fake_data import write_deepglobe, write_raster
from pointseg.baselines import (
    evaluate_pixel_forest,
    fit_pixel_forest,
    pixel_features,
    predict_pixel_forest,
    tiled_features,
)
from pointseg.datasets import deepglobe, discover_dataset
from pointseg.datasets.point_sources import PointsDirectory, SimulatedPoints
from pointseg.errors import PointsegError
from pointseg.points import PointProtocol
from pointseg.raster import read_mask
from pointseg.schema import IGNORE_INDEX

U = IGNORE_INDEX


def two_colour_image(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(3, 40, 50) uint8 image: a red disc (class 1) on green (class 0), with noise; and its truth."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:40, :50]
    truth = ((rows - 20) ** 2 + (cols - 25) ** 2 < 12**2).astype(np.uint8)
    colours = np.array([[40, 160, 50], [200, 40, 30]])
    image = colours[truth].transpose(2, 0, 1) + rng.normal(0, 10, (3, 40, 50))
    return np.clip(image, 0, 255).astype(np.uint8), truth


def test_features_are_ilastiks_set_per_band() -> None:
    image = np.full((3, 20, 20), 7, dtype=np.uint16)
    features = pixel_features(image)
    assert features.shape == (3 * 13, 20, 20) and features.dtype == np.float32
    band = features[:13]  # band, then (smooth, gradient, std) per sigma
    np.testing.assert_allclose(band[[0, 1, 4, 7, 10]], 7, rtol=1e-6)  # constant band: smooth = band
    np.testing.assert_allclose(band[[2, 3, 5, 6, 8, 9, 11, 12]], 0, atol=1e-5)  # no gradient, no std
    step = np.zeros((1, 20, 20), np.float32)
    step[:, :, 10:] = 100
    edge = pixel_features(step, sigmas=(1.0,))
    assert edge[2, 10, 9] > edge[2, 10, 2] and edge[3, 10, 9] > 10  # gradient and std peak at the edge


def test_tiled_features_equal_whole_image_features() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (2, 45, 38)).astype(np.uint8)
    whole = pixel_features(image, sigmas=(1.0, 2.0))
    covered = np.zeros((45, 38), bool)
    for (rows, cols), features in tiled_features(image, tile=16, sigmas=(1.0, 2.0)):
        np.testing.assert_allclose(features, whole[:, rows, cols], rtol=1e-5, atol=1e-3)
        covered[rows, cols] = True
    assert covered.all()


def test_forest_separates_two_clearly_different_colours() -> None:
    image, truth = two_colour_image()
    points = np.full(truth.shape, U)
    rng = np.random.default_rng(0)
    for label in (0, 1):  # 15 random points per class
        rows, cols = np.nonzero(truth == label)
        chosen = rng.choice(len(rows), 15, replace=False)
        points[rows[chosen], cols[chosen]] = label
    forest = fit_pixel_forest([(image, points)], trees=20, tile=16)
    predicted = predict_pixel_forest(forest, two_colour_image(seed=1)[0], tile=16)
    assert predicted.shape == truth.shape and predicted.dtype == np.uint8
    assert (predicted == truth).mean() > 0.95


def test_forest_needs_labelled_pixels() -> None:
    image, truth = two_colour_image()
    with pytest.raises(PointsegError, match="no labelled pixel"):
        fit_pixel_forest([(image, np.full(truth.shape, U))])
    with pytest.raises(PointsegError, match="differ in size"):
        fit_pixel_forest([(image, truth[:10])])


@pytest.fixture(scope="module")
def fake_refs(tmp_path_factory: pytest.TempPathFactory) -> list:
    root = write_deepglobe(tmp_path_factory.mktemp("deepglobe"), count=4, size=64)
    return sorted(discover_dataset("deepglobe", root).require_usable(), key=lambda ref: ref.id)


def test_evaluate_on_the_same_points_and_score_like_evaluate(fake_refs: list) -> None:
    seen = []
    source = SimulatedPoints(PointProtocol(strategy="per-class", per_class=10, seed=0))
    report = evaluate_pixel_forest(
        fake_refs[:3],
        fake_refs[3:],
        deepglobe.SCHEMA,
        source,
        trees=30,
        on_image=lambda ref: seen.append(ref.id),
    )
    assert seen == [fake_refs[3].id]
    assert report.miou > 0.8
    truth = read_mask(fake_refs[3].mask_path, deepglobe.SCHEMA)
    assert sum(map(sum, report.confusion_matrix)) == int((truth != U).sum())  # ignored pixels left out


def test_evaluate_reads_points_from_a_folder_and_needs_test_masks(fake_refs: list, tmp_path: Path) -> None:
    points = np.full((64, 64), U, dtype=np.uint8)
    points[5:7, 5:7] = 1
    points[40:42, 40:42] = 2
    write_raster(tmp_path / f"{fake_refs[0].id}.png", points)
    report = evaluate_pixel_forest(
        fake_refs[:1], fake_refs[3:], deepglobe.SCHEMA, PointsDirectory(tmp_path), trees=5
    )
    assert 0 <= report.miou <= 1
    unmasked = type(fake_refs[3])(fake_refs[3].id, fake_refs[3].image_path, None, fake_refs[3].group)
    with pytest.raises(PointsegError, match="no dense mask to evaluate against"):
        evaluate_pixel_forest(fake_refs[:1], [unmasked], deepglobe.SCHEMA, PointsDirectory(tmp_path))
