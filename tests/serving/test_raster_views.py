"""Views of a window of a raster: only the window is read, one stretch per image, confidence as alpha."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from workspace_data import TRANSFORM

from fake_data import UTM, write_raster
from pointseg.schema import ClassSchema
from pointseg.serving import raster_views
from pointseg.serving.raster_views import ViewWindow, confidence_view, image_view, map_view
from pointseg.serving.workspace import WorkspaceError


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_a_window_is_read_alone_resampled_to_the_width_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gradient = np.broadcast_to(np.arange(200, dtype=np.uint8), (3, 100, 200)).copy()
    path = write_raster(tmp_path / "g.tif", gradient, UTM, TRANSFORM)
    reads: list[tuple[object, object]] = []
    original = rasterio.io.DatasetReader.read

    def spy(self: rasterio.io.DatasetReader, *args: object, **kwargs: object) -> np.ndarray:
        reads.append((kwargs.get("window"), kwargs.get("out_shape")))
        return original(self, *args, **kwargs)

    raster_views.image_limits(path)  # the stretch, from one overview read
    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    shown = decode(image_view(path, ViewWindow(x0=100, x1=200, y0=0, y1=50, width=20)))
    assert shown.shape == (10, 20, 3)
    [(window, out_shape)] = reads
    assert (window.col_off, window.row_off, window.width, window.height) == (100, 0, 100, 50)
    assert out_shape == (3, 10, 20)
    assert (np.diff(shown[0, :, 0].astype(int)) >= 0).all()  # still a left-to-right gradient


def test_only_the_bands_shown_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bands = np.arange(6, dtype=np.uint8)[:, None, None] * 40 + np.zeros((6, 32, 32), dtype=np.uint8)
    path = write_raster(tmp_path / "six.tif", bands, UTM, TRANSFORM)
    raster_views.image_limits(path)
    shapes: list[object] = []
    original = rasterio.io.DatasetReader.read

    def spy(self: rasterio.io.DatasetReader, *args: object, **kwargs: object) -> np.ndarray:
        pixels = original(self, *args, **kwargs)
        shapes.append(pixels.shape)
        return pixels

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    assert decode(image_view(path, ViewWindow(width=8))).shape == (8, 8, 3)
    assert shapes == [(3, 8, 8)]  # bands 1-3 only, not the six


def test_window_checks() -> None:
    with pytest.raises(WorkspaceError, match="not inside the image") as error:
        ViewWindow(x0=10, x1=5).placed(64, 64)
    assert error.value.status_code == 422
    with pytest.raises(WorkspaceError, match="not inside the image"):
        ViewWindow(y1=65).placed(64, 64)
    with pytest.raises(WorkspaceError, match="ask for a wider window"):
        ViewWindow(x0=0, x1=1, width=2048).placed(64, 64)
    window, shape = ViewWindow(width=32).placed(64, 128)
    assert (window.width, window.height, shape) == (64, 128, (64, 32))


def test_map_and_confidence_views(tmp_path: Path) -> None:
    labels = np.array([[0, 1], [1, 255]], dtype=np.uint8)
    schema = ClassSchema("s", ("a", "b"), ((255, 0, 0), (0, 0, 255)), mask_encoding="index")
    class_map = write_raster(tmp_path / "m.tif", labels)
    png, shares = map_view(class_map, ViewWindow(width=2), schema)
    rgba = decode(png)
    assert rgba[0, 0].tolist() == [255, 0, 0, 255] and rgba[1, 1, 3] == 0
    assert [(s.name, s.pixels) for s in shares] == [("a", 1), ("b", 2)]
    confidence = np.array([[[1.0, 0.5], [0.0, np.nan]]], dtype=np.float32)
    alpha = decode(confidence_view(write_raster(tmp_path / "c.tif", confidence), ViewWindow(width=2)))
    assert alpha[..., :3].max() == 0
    assert alpha[..., 3].tolist() == [[0, 128], [255, 0]]
