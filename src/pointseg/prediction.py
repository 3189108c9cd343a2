"""``pointseg predict``: class maps for images and rasters of any size, written window by window.

For each input it writes, into the output folder:

- ``<stem>_classes.tif``: single-band uint8 class indices, a Cloud-Optimised GeoTIFF (tiled,
  DEFLATE, overviews) with the input's CRS and transform, ``255`` as nodata where the input has no
  data, and the class colours as its colour table, so GIS software shows it in colour, and the
  class names in its band metadata (see :mod:`pointseg.gis_outputs`);
- ``<stem>_classes.png``: the same map as a colour (palette) PNG, with nodata transparent;
- ``<stem>_confidence.tif`` (optional): the max softmax probability, float32, same grid.

Labels are produced by :class:`pointseg.inference.SlidingWindowPredictor` and streamed into a
tiled GeoTIFF band of rows at a time, so memory stays bounded whatever the raster's size. Every
file is written under a temporary name and renamed when complete; work files named with the id
of a process that no longer runs (a killed earlier run) are removed from the output folder.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import torch
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from pointseg.choices import OutputFormat, Tile, check
from pointseg.colors import palette_colormap
from pointseg.errors import PointsegError
from pointseg.gis_outputs import class_name_tags
from pointseg.inference import InferenceModel, RasterSource, SlidingWindowPredictor
from pointseg.raster import (
    IMAGE_SUFFIXES,
    atomic_output,
    geotiff_profile,
    open_raster,
    remove_stale_work_files,
)
from pointseg.schema import IGNORE_INDEX

BLOCK_SIZE = 512
GDAL_CACHE_MB = 128
"""GDAL's block cache during prediction (unless the GDAL_CACHEMAX environment variable says otherwise).
GDAL's default, 5% of RAM, fills with the blocks of a large raster and makes peak memory grow with
its size; the streaming writer needs only one row of output blocks and the windows being read."""


def expand_inputs(inputs: Sequence[Path]) -> list[Path]:
    """Files as given, folders as the images directly inside them (sorted).

    Raises:
        PointsegError: for a missing path, a folder without images, or two inputs with one stem
            (their outputs would collide).
    """
    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise PointsegError(f"{path}: folder has no images ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise PointsegError(f"{path}: no such file or folder")
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            raise PointsegError(
                f"{path} and {stems[path.stem]} share the name '{path.stem}'; their outputs would collide"
            )
        stems[path.stem] = path
    return files


class GeoTiffBandWriter:
    """A sink that writes blended predictions into tiled GeoTIFFs one band of rows at a time.

    The predictor delivers every tile row as blocks sharing one row range, left to right, so one
    ``(rows, width)`` buffer per output suffices.
    """

    def __init__(
        self,
        source: RasterSource,
        labels: rasterio.io.DatasetWriter,
        confidence: rasterio.io.DatasetWriter | None = None,
    ):
        self.source = source
        self.labels = labels
        self.confidence = confidence
        self._row = -1
        self._label_rows = np.zeros((0, source.width), dtype=np.uint8)
        self._confidence_rows = np.zeros((0, source.width), dtype=np.float32)

    def write(self, row: int, col: int, probabilities: torch.Tensor) -> None:
        """Take a block of ``(K, h, w)`` probabilities."""
        height, width = probabilities.shape[1:]
        if row != self._row:
            self.flush()
            self._row = row
            self._label_rows = np.zeros((height, self.source.width), dtype=np.uint8)
            if self.confidence is not None:
                self._confidence_rows = np.zeros((height, self.source.width), dtype=np.float32)
        confidence, labels = probabilities.max(dim=0)
        labels_np = labels.numpy().astype(np.uint8)
        valid = self.source.valid(row, col, height, width)
        if valid is not None:
            labels_np[~valid] = IGNORE_INDEX
        self._label_rows[:, col : col + width] = labels_np
        if self.confidence is not None:
            confidence_np = confidence.numpy()
            if valid is not None:
                confidence_np = np.where(valid, confidence_np, np.nan)
            self._confidence_rows[:, col : col + width] = confidence_np

    def flush(self) -> None:
        """Write the buffered rows."""
        if self._row < 0:
            return
        window = Window(0, self._row, self.source.width, self._label_rows.shape[0])
        self.labels.write(self._label_rows, 1, window=window)
        if self.confidence is not None:
            self.confidence.write(self._confidence_rows, 1, window=window)
        self._row = -1


@dataclass
class PredictionResult:
    """The files written for one input."""

    input: Path
    outputs: list[Path]
    width: int
    height: int
    tiles: int


def output_profile(source: RasterSource, dtype: str, nodata: float) -> dict[str, Any]:
    """A tiled, compressed single-band GeoTIFF on the source's grid."""
    dataset = source.dataset
    transform = dataset.window_transform(source.window) if dataset.crs is not None else None
    return geotiff_profile(source.width, source.height, dataset.crs, transform, dtype, nodata, BLOCK_SIZE)


@contextlib.contextmanager
def _open_for_writing(path: Path, profile: dict) -> Iterator[rasterio.io.DatasetWriter]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dataset:
            yield dataset


def _made_folder(folder: Path) -> Path:
    """``folder``, created (with its parents) if missing."""
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def predict_file(
    model: InferenceModel,
    path: Path,
    out_dir: Path,
    predictor: SlidingWindowPredictor,
    output_format: OutputFormat = "geotiff",
    confidence: bool = False,
    on_start: Callable[[Path, int], None] | None = None,
    on_tiles: Callable[[int], None] | None = None,
) -> PredictionResult:
    """Predict one image or raster and write its outputs (see the module docstring).

    ``on_start`` is called with the input and its tile count once it is open, before prediction.

    Raises:
        PointsegError: for unreadable inputs or a band count the model cannot take.
    """
    stem = path.stem
    outputs: list[Path] = []
    with (
        open_raster(path) as dataset,
        # the folder is made once the input has opened: an unreadable input leaves no empty --out
        tempfile.TemporaryDirectory(
            prefix=f".pointseg-{os.getpid()}-", dir=_made_folder(out_dir)
        ) as work_dir,
    ):
        source = RasterSource(dataset, model.band_stats)
        tiles = predictor.count_tiles(source.height, source.width)
        if on_start is not None:
            on_start(path, tiles)
        labels_work = Path(work_dir) / "classes.tif"
        confidence_work = Path(work_dir) / "confidence.tif" if confidence else None
        with contextlib.ExitStack() as writers:
            labels = writers.enter_context(
                _open_for_writing(labels_work, output_profile(source, "uint8", IGNORE_INDEX))
            )
            labels.write_colormap(1, palette_colormap(model.schema))
            labels.update_tags(1, **class_name_tags(model.schema))
            confidence_writer = None
            if confidence_work is not None:
                profile = output_profile(source, "float32", np.nan)
                confidence_writer = writers.enter_context(_open_for_writing(confidence_work, profile))
            sink = GeoTiffBandWriter(source, labels, confidence_writer)
            predictor.predict(source, sink, on_tiles)
            sink.flush()
        if output_format in ("geotiff", "both"):
            outputs.append(_copy_as(labels_work, out_dir / f"{stem}_classes.tif", "COG"))
        if output_format in ("png", "both"):
            outputs.append(_copy_as(labels_work, out_dir / f"{stem}_classes.png", "PNG"))
        if confidence_work is not None:
            outputs.append(_copy_as(confidence_work, out_dir / f"{stem}_confidence.tif", "COG"))
        return PredictionResult(path, outputs, source.width, source.height, tiles)


def _copy_as(work: Path, target: Path, driver: str) -> Path:
    options = (
        {"COMPRESS": "DEFLATE", "OVERVIEW_RESAMPLING": "NEAREST", "BLOCKSIZE": BLOCK_SIZE}
        if driver == "COG"
        else {}
    )
    with atomic_output(target) as temporary, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        rasterio.shutil.copy(work, temporary, driver=driver, **options)
    return target


def predict_files(
    model: InferenceModel,
    inputs: Sequence[Path],
    out_dir: Path,
    tile: int | None = None,
    overlap: float | None = None,
    batch_size: int = 4,
    device: str = "cpu",
    output_format: OutputFormat = "geotiff",
    confidence: bool = False,
    on_start: Callable[[Path, int], None] | None = None,
    on_tiles: Callable[[int], None] | None = None,
) -> list[PredictionResult]:
    """Predict every input (files, or folders of images) into ``out_dir``.

    ``tile`` and ``overlap`` default to the model's own (from training). ``on_start`` is called with
    each input and its tile count before it is predicted.

    Raises:
        PointsegError: for ``out_dir`` naming a file, bad inputs (see :func:`expand_inputs`) or a
            tile size that is not a multiple of 32.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise PointsegError(f"--out {out_dir}: is a file; expected a folder for the outputs")
    tile = check(Tile, tile or model.tile, "--tile")
    predictor = SlidingWindowPredictor(
        model.forward,
        model.num_classes,
        tile,
        model.overlap if overlap is None else overlap,
        batch_size,
        device,
    )
    files = expand_inputs(inputs)
    remove_stale_work_files(out_dir)
    results = []
    cache = {} if "GDAL_CACHEMAX" in os.environ else {"GDAL_CACHEMAX": GDAL_CACHE_MB}
    with rasterio.Env(**cache):
        for path in files:
            results.append(
                predict_file(model, path, out_dir, predictor, output_format, confidence, on_start, on_tiles)
            )
    return results
