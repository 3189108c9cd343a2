"""The PyTorch dataset: reads images, masks and point labels of samples by window, and collates them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window
from torch.utils.data import Dataset

from pointseg.datasets.cache import STREAM_SUFFIXES, DecodedRasterCache
from pointseg.datasets.point_sources import PointSource
from pointseg.datasets.samples import SampleRef, check_mask_size
from pointseg.errors import PointsegError
from pointseg.label_expansion import PointExpansion
from pointseg.normalization import BandStats
from pointseg.points import PointLabels
from pointseg.raster import open_raster, read_mask, read_pixels
from pointseg.schema import IGNORE_INDEX, ClassSchema

Sample = dict[str, Any]


class SegmentationDataset(Dataset[Sample]):
    """Reads samples as ``{"image", "mask", "points", "path", "id", ["crs", "transform"]}``.

    Every sample is::

        image:     float32 (C, H, W), normalised with ``band_stats``; 0 (the band mean) where any
                   band is not finite (NaN, +-inf: nodata of a float raster)
        mask:      int64 (H, W) dense labels, IGNORE_INDEX where ignored   (if the dataset has masks)
        points:    int64 (H, W) sparse labels, IGNORE_INDEX where unlabelled (if a point source is given)
        expanded_points: int64 (H, W) the points spread over their superpixels  (with ``expansion``)
        point_weights:   float32 (H, W) loss weight of ``expanded_points``: 1 on points, less on
                   expanded pixels, 0 where unlabelled                        (with ``expansion``)
        valid:     bool (H, W), False on padding and non-finite pixels       (with ``padding_mask``)
        path:      str, the image file
        id:        str, the sample id
        crs:       str (WKT) and transform: tuple of 6 floats, of the returned pixels
                   (georeferenced rasters only)

    With ``crop_size`` set, each item is a random ``crop_size`` window read from disk (never the
    whole image), padded with IGNORE_INDEX labels where the image is smaller; the dataset then has
    ``crops_per_image`` items per image. Without it, each item is the whole sample, never resized.
    With ``point_crop_share`` above 0 (and a point source), that share of the crops (each crop
    drawn independently; all of them at 1) holds at least one clicked point: a class is drawn
    uniformly among the classes clicked in the image, then one of its points, then the crop's place
    among all the windows that contain that point. So sparse clicks are not missed by most crops,
    and rare classes are seen as often as common ones. An image without points is cropped uniformly.
    Pixels where any band is not finite carry no label (IGNORE_INDEX, weight 0) and are not valid.

    Expansion works on the whole sample's raw pixels and points, once per sample and process, and
    every crop cuts the same window from the result; ``points`` stays the clicked points. The
    expanded labels are kept: one byte per pixel of every sample, in each loader worker.

    The point source is checked when the dataset is built, so a missing or unreadable points file
    is an error that names the image before training starts, never one inside a DataLoader worker.
    """

    def __init__(
        self,
        refs: Sequence[SampleRef],
        schema: ClassSchema,
        band_stats: BandStats,
        *,
        crop_size: int | None = None,
        crops_per_image: int = 1,
        point_crop_share: float = 0.0,
        points: PointSource | None = None,
        with_masks: bool = True,
        cache_bytes: int = 1 << 30,
        expansion: PointExpansion | None = None,
        padding_mask: bool = False,
    ) -> None:
        if not refs:
            raise PointsegError("empty dataset: no samples selected")
        self.refs = list(refs)
        self.schema = schema
        self.band_stats = band_stats
        self.crop_size = crop_size
        self.crops_per_image = crops_per_image if crop_size else 1
        if not 0 <= point_crop_share <= 1:
            raise ValueError(f"point_crop_share must be in [0, 1], got {point_crop_share}")
        self.point_crop_share = point_crop_share if points is not None else 0.0
        self.point_source = points
        if points is not None:
            points.check(self.refs)
        self.with_masks = with_masks and all(ref.mask_path is not None for ref in self.refs)
        self.expansion = expansion if points is not None else None
        self.padding_mask = padding_mask
        self._points_cache: dict[str, PointLabels] = {}
        self._expanded_cache: dict[str, np.ndarray] = {}
        self._masks_checked: set[Path] = set()
        self._decoded = DecodedRasterCache(cache_bytes)

    def __len__(self) -> int:
        return len(self.refs) * self.crops_per_image

    def __getitem__(self, index: int) -> Sample:
        ref = self.refs[index // self.crops_per_image]
        with open_raster(ref.image_path) as dataset:
            region = ref.window or Window(0, 0, dataset.width, dataset.height)
            window = self._choose_window(ref, region)
            streamed = ref.image_path.suffix.lower() in STREAM_SUFFIXES
            if streamed:
                image = _cut(
                    self._decoded.get(("image", ref.image_path), lambda: read_pixels(dataset)), window
                )
            else:
                image = read_pixels(dataset, window)
            if self.expansion is not None and ref.id not in self._expanded_cache:
                whole = (
                    _cut(self._decoded.get(("image", ref.image_path), lambda: read_pixels(dataset)), region)
                    if streamed
                    else read_pixels(dataset, region)
                )
                self._expanded_cache[ref.id] = self.expansion.expand(
                    whole, self._points(ref, region).to_label_map()
                )
            georeferencing = (
                (dataset.crs.to_wkt(), tuple(dataset.window_transform(window))[:6]) if dataset.crs else None
            )
            self._check_mask_size(ref, dataset.width, dataset.height)
        sample: Sample = {
            "image": torch.from_numpy(self.band_stats.normalize(image, str(ref.image_path))),
            "path": str(ref.image_path),
            "id": ref.id,
        }
        if self.with_masks:
            mask = self._mask(ref, window)
            sample["mask"] = torch.from_numpy(mask.astype(np.int64))
        if self.point_source is not None:
            crop = self._points(ref, region).crop(
                int(window.row_off - region.row_off),
                int(window.col_off - region.col_off),
                int(window.height),
                int(window.width),
            )
            clicked = crop.to_label_map()
            sample["points"] = torch.from_numpy(clicked.astype(np.int64))
            if self.expansion is not None:
                relative = Window(
                    window.col_off - region.col_off,
                    window.row_off - region.row_off,
                    window.width,
                    window.height,
                )
                expanded = _cut(self._expanded_cache[ref.id], relative)
                sample["expanded_points"] = torch.from_numpy(expanded.astype(np.int64))
                sample["point_weights"] = torch.from_numpy(self.expansion.weights(expanded, clicked))
        finite = np.isfinite(image).all(axis=0)
        if not finite.all():  # no label where the network sees a filled-in 0
            missing = torch.from_numpy(~finite)
            for key in ("mask", "points", "expanded_points", "point_weights"):
                if key in sample:
                    sample[key][missing] = 0 if key == "point_weights" else IGNORE_INDEX
        if self.padding_mask:
            sample["valid"] = torch.from_numpy(finite)
        if georeferencing is not None:
            sample["crs"], sample["transform"] = georeferencing
        if self.crop_size:
            sample = _pad_sample(sample, self.crop_size)
        return sample

    def _check_mask_size(self, ref: SampleRef, width: int, height: int) -> None:
        """Compare the whole files, once per mask.

        So a larger mask is not silently cut to the image, and every random crop of a mismatched
        pair fails alike.
        """
        if ref.mask_path is not None and ref.mask_path not in self._masks_checked:
            check_mask_size(ref, width, height)
            self._masks_checked.add(ref.mask_path)

    def _mask(self, ref: SampleRef, window: Window) -> np.ndarray:
        """Dense labels of ``window`` (decoded once per process for PNG masks)."""
        assert ref.mask_path is not None
        path = ref.mask_path
        if path.suffix.lower() in STREAM_SUFFIXES:
            return _cut(self._decoded.get(("mask", path), lambda: read_mask(path, self.schema)), window)
        return read_mask(path, self.schema, window)

    def _choose_window(self, ref: SampleRef, region: Window) -> Window:
        if not self.crop_size:
            return region
        height = min(self.crop_size, int(region.height))
        width = min(self.crop_size, int(region.width))
        anchor = self._anchor_point(ref, region) if self._crop_around_a_point() else None
        if anchor is None:
            row = _randint(0, int(region.height) - height)
            col = _randint(0, int(region.width) - width)
        else:  # every window of the crop's size that holds the anchor point is equally likely
            point_row, point_col = anchor
            row = _randint(max(0, point_row - height + 1), min(point_row, int(region.height) - height))
            col = _randint(max(0, point_col - width + 1), min(point_col, int(region.width) - width))
        return Window(region.col_off + col, region.row_off + row, width, height)

    def _crop_around_a_point(self) -> bool:
        """Whether this crop goes around a click; draws from the generator only for a share in (0, 1)."""
        if self.point_crop_share in (0, 1):
            return bool(self.point_crop_share)
        return bool(torch.rand(()).item() < self.point_crop_share)

    def _anchor_point(self, ref: SampleRef, region: Window) -> tuple[int, int] | None:
        """A clicked point: its class drawn uniformly among the image's clicked classes, then the point."""
        points = self._points(ref, region)
        if not len(points):
            return None
        classes = np.unique(points.classes)
        chosen_class = classes[_randint(0, len(classes) - 1)]
        of_class = np.flatnonzero(points.classes == chosen_class)
        index = of_class[_randint(0, len(of_class) - 1)]
        return int(points.rows[index]), int(points.cols[index])

    def _points(self, ref: SampleRef, region: Window) -> PointLabels:
        cached = self._points_cache.get(ref.id)
        if cached is None:
            assert self.point_source is not None
            dense = self._mask(ref, region) if ref.mask_path is not None else None
            cached = self.point_source.points_for(ref, dense)
            if (cached.height, cached.width) != (int(region.height), int(region.width)):
                raise PointsegError(
                    f"point labels of '{ref.id}' are {cached.height}x{cached.width}, "
                    f"the image is {int(region.height)}x{int(region.width)}"
                )
            self._points_cache[ref.id] = cached
        return cached


def _cut(array: np.ndarray, window: Window) -> np.ndarray:
    """The ``window`` of a whole ``(..., H, W)`` array."""
    rows, cols = window.toslices()
    return array[..., rows, cols]


def _pad_sample(sample: Sample, size: int) -> Sample:
    height, width = sample["image"].shape[1:]
    if height == size and width == size:
        return sample
    pad = (0, size - width, 0, size - height)
    sample["image"] = torch.nn.functional.pad(sample["image"], pad, value=0.0)
    for key in ("mask", "points", "expanded_points"):
        if key in sample:
            sample[key] = torch.nn.functional.pad(sample[key], pad, value=IGNORE_INDEX)
    for key in ("point_weights", "valid"):
        if key in sample:
            sample[key] = torch.nn.functional.pad(sample[key], pad, value=0)
    return sample


def collate_samples(samples: Sequence[Sample]) -> Sample:
    """Stack tensors of equal shape; keep everything else (paths, ids, CRS) as lists."""
    batch: Sample = {}
    for key in samples[0]:
        values = [sample[key] for sample in samples]
        batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return batch


def _randint(low: int, high: int) -> int:
    """A uniform integer in ``[low, high]``, from torch's generator (seeded per loader worker)."""
    return int(torch.randint(low, high + 1, ()).item())
