import math

import numpy as np
import pytest
import rasterio

from fake_data import write_raster
from pointseg.errors import PointsegError
from pointseg.normalization import BandStats

# ---------------------------------------------------------------- band statistics


def write_bands(path, *bands: np.ndarray):
    return write_raster(path, np.stack(bands).astype(np.float32))


def test_band_stats_estimate_per_band(tmp_path) -> None:
    half = np.zeros((4, 4))
    half[:, 2:] = 4
    a = write_bands(tmp_path / "a.tif", np.full((4, 4), 10.0), np.full((4, 4), 5.0), half)
    b = write_bands(tmp_path / "b.tif", np.full((4, 4), 30.0), np.full((4, 4), 5.0), np.full((4, 4), 2.0))
    stats = BandStats.estimate([a, b])
    # Band 1: 16 px of 10 and 16 of 30. Band 2: constant, so its std stays 1 instead of 0.
    # Band 3: 8 px of 0, 8 of 4 and 16 of 2 -> mean 2, variance (8 * 4 + 8 * 4) / 32 = 2.
    np.testing.assert_allclose(stats.mean, (20.0, 5.0, 2.0))
    np.testing.assert_allclose(stats.std, (10.0, 1.0, math.sqrt(2)))
    assert stats.num_bands == 3
    normalized = stats.normalize(np.array([[[30.0]], [[5.0]], [[2.0 + 2 * math.sqrt(2)]]]))
    assert normalized.dtype == np.float32
    np.testing.assert_allclose(normalized.ravel(), (1.0, 0.0, 2.0), rtol=1e-6)


def test_band_stats_reads_evenly_spaced_images(tmp_path) -> None:
    paths = [write_bands(tmp_path / f"{i}.tif", np.full((2, 2), float(i))) for i in range(10)]
    # ceil(10 / 4) = 3: images 0, 3, 6 and 9.
    assert BandStats.estimate(paths, max_images=4).mean == pytest.approx((4.5,))


def test_band_stats_errors(tmp_path) -> None:
    a = write_bands(tmp_path / "a.tif", np.zeros((2, 2)), np.zeros((2, 2)))
    b = write_bands(tmp_path / "b.tif", np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(PointsegError, match=rf"^{b}: 3 band\(s\), but earlier images have 2"):
        BandStats.estimate([a, b])
    with pytest.raises(PointsegError, match="no training images"):
        BandStats.estimate([])
    with pytest.raises(PointsegError, match=r"^x\.tif: 3 band\(s\), but the model was set up for 2"):
        BandStats((0.0, 0.0), (1.0, 1.0)).normalize(np.zeros((3, 2, 2)), "x.tif")


def test_band_stats_ignore_nodata_and_non_finite_pixels(tmp_path) -> None:
    # Band 1: 10 and 30 on the valid pixels; band 2: 5 and 7. The rest is nodata (-9999) or NaN/+-inf.
    band1 = np.array([[10.0, 30.0, -9999.0, np.nan], [10.0, 30.0, np.inf, -np.inf]])
    band2 = np.array([[5.0, 7.0, np.nan, -9999.0], [-np.inf, 5.0, 7.0, np.inf]])
    path = write_bands(tmp_path / "a.tif", band1, band2)
    with rasterio.open(path, "r+") as dataset:
        dataset.nodata = -9999.0
    stats = BandStats.estimate([path])
    np.testing.assert_allclose(stats.mean, (20.0, 6.0))
    np.testing.assert_allclose(stats.std, (10.0, 1.0))
    assert all(math.isfinite(v) for v in stats.mean + stats.std)


def test_band_stats_of_a_band_without_valid_pixels_is_an_error(tmp_path) -> None:
    path = write_bands(tmp_path / "a.tif", np.ones((2, 2)), np.full((2, 2), np.nan))
    with pytest.raises(PointsegError, match=r"band\(s\) 2 have no valid pixel in 1 training image"):
        BandStats.estimate([path])
