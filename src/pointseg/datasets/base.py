"""What every dataset shares: sample refs, discovery results, band statistics, the PyTorch dataset.

The dataset reads images, masks and point labels by window.
"""

from __future__ import annotations

import fnmatch
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from rasterio.windows import Window
from torch.utils.data import Dataset

from pointseg.errors import PointsegError
from pointseg.points import PointLabels, PointProtocol, simulate_points
from pointseg.raster import open_raster, raster_info, read_mask, read_pixels, read_window
from pointseg.schema import IGNORE_INDEX, ClassSchema

Sample = dict[str, Any]


@dataclass(frozen=True)
class SampleRef:
    """One image (or one window of an image) and its mask.

    Attributes:
        id: Unique name within the dataset. Output files are named after it (``<id>.png``),
            and splits select by it.
        image_path: The image file.
        mask_path: The dense mask file, or ``None`` when the dataset has none.
        group: The unit that splits keep together: the tile for Dubai, the source orthophoto
            for LandCover.ai, the image itself otherwise.
        window: For datasets cut into tiles (LandCover.ai), the tile's window in both files.
    """

    id: str
    image_path: Path
    mask_path: Path | None
    group: str
    window: Window | None = None


@dataclass
class Discovery:
    """What a dataset folder holds: usable samples, and problems found while pairing files."""

    name: str
    root: Path
    schema: ClassSchema
    refs: list[SampleRef]
    problems: list[str] = field(default_factory=list)

    def require_usable(self) -> list[SampleRef]:
        """Return the samples, or raise if pairing found problems or no sample at all.

        Raises:
            PointsegError: listing the problems (missing pairs, unexpected files).
        """
        if self.problems:
            shown = "\n  ".join(self.problems[:20])
            more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
            raise PointsegError(
                f"{self.root}: {len(self.problems)} problem(s) in the {self.name} dataset "
                f"(run `pointseg data check` for a full report):\n  {shown}{more}"
            )
        if not self.refs:
            raise PointsegError(f"{self.root}: no {self.name} image/mask pairs found")
        return self.refs


def select_refs(refs: Sequence[SampleRef], patterns: Iterable[str], what: str) -> list[SampleRef]:
    """Return the samples whose id or group matches any of ``patterns`` (shell-style wildcards).

    Raises:
        PointsegError: if a pattern matches nothing, naming the pattern and ``what`` it was for.
    """
    patterns = list(patterns)
    selected = []
    for pattern in patterns:
        if not any(
            fnmatch.fnmatchcase(ref.id, pattern) or fnmatch.fnmatchcase(ref.group, pattern) for ref in refs
        ):
            examples = ", ".join(sorted({ref.group for ref in refs})[:8])
            raise PointsegError(
                f"{what}: '{pattern}' matches no sample id or group (groups: {examples}, ...)"
            )
    for ref in refs:
        if any(fnmatch.fnmatchcase(ref.id, p) or fnmatch.fnmatchcase(ref.group, p) for p in patterns):
            selected.append(ref)
    return selected


@dataclass(frozen=True)
class BandStats:
    """Per-band mean and standard deviation, used to normalise images: ``(x - mean) / std``.

    They are estimated from the training images (any band count, any dtype), stored in the
    checkpoint, and reused unchanged for evaluation and prediction.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_bands(self) -> int:
        """Number of bands the statistics describe."""
        return len(self.mean)

    def to_dict(self) -> dict[str, list[float]]:
        """``{"mean": [...], "std": [...]}``, as stored in checkpoints and ONNX metadata."""
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BandStats:
        """The inverse of :meth:`to_dict`."""
        return cls(tuple(data["mean"]), tuple(data["std"]))

    def normalize(self, image: np.ndarray, source: str = "image") -> np.ndarray:
        """Return ``(C, H, W)`` float32 ``(image - mean) / std``.

        Raises:
            PointsegError: if the band count differs from the statistics'.
        """
        if image.shape[0] != self.num_bands:
            raise PointsegError(
                f"{source}: {image.shape[0]} band(s), but the model was set up for {self.num_bands}"
            )
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return (image.astype(np.float32) - mean) / std

    @classmethod
    def estimate(
        cls, image_paths: Sequence[Path], max_images: int = 64, overview_size: int = 512
    ) -> BandStats:
        """Estimate statistics from decimated reads of up to ``max_images`` images (evenly spaced)."""
        if not image_paths:
            raise PointsegError("cannot estimate band statistics: no training images")
        unique = sorted(set(image_paths))
        step = max(1, math.ceil(len(unique) / max_images))
        sums: np.ndarray | None = None
        squares: np.ndarray | None = None
        count = 0
        for path in unique[::step]:
            info = raster_info(path)
            scale = max(1.0, max(info.width, info.height) / overview_size)
            shape = (max(1, round(info.height / scale)), max(1, round(info.width / scale)))
            pixels = read_window(path, out_shape=shape).astype(np.float64).reshape(info.count, -1)
            if sums is not None and pixels.shape[0] != sums.shape[0]:
                raise PointsegError(
                    f"{path}: {pixels.shape[0]} band(s), but earlier images have {sums.shape[0]}"
                )
            sums = pixels.sum(axis=1) + (0 if sums is None else sums)
            squares = (pixels**2).sum(axis=1) + (0 if squares is None else squares)
            count += pixels.shape[1]
        assert sums is not None and squares is not None
        mean = sums / count
        std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
        std = np.where(std < 1e-6, 1.0, std)  # a constant band stays constant instead of dividing by zero
        return cls(tuple(float(m) for m in mean), tuple(float(s) for s in std))


class PointSource(Protocol):
    """Where a dataset gets the sparse point labels of a sample."""

    def points_for(self, ref: SampleRef, dense_labels: np.ndarray | None) -> PointLabels:
        """Point labels over the whole sample (``ref.window`` or the whole image)."""
        ...


@dataclass
class SimulatedPoints:
    """Points drawn once per sample from its dense mask with a fixed protocol and seed."""

    protocol: PointProtocol

    def points_for(self, ref: SampleRef, dense_labels: np.ndarray | None) -> PointLabels:
        """Simulate points for ``ref``; the same seed and id always give the same points."""
        if dense_labels is None:
            raise PointsegError(f"{ref.image_path}: no dense mask to simulate points from")
        return simulate_points(dense_labels, self.protocol, ref.id)


@dataclass
class PointsDirectory:
    """Points read from ``<directory>/<id>.tif`` or ``<id>.png`` (as ``pointseg points`` writes them)."""

    directory: Path

    def points_for(self, ref: SampleRef, dense_labels: np.ndarray | None) -> PointLabels:
        """Read the point label map of ``ref``."""
        for suffix in (".tif", ".png"):
            path = self.directory / f"{ref.id}{suffix}"
            if path.is_file():
                label_map = read_window(path)
                if label_map.shape[0] != 1:
                    raise PointsegError(f"{path}: point label map has {label_map.shape[0]} bands, expected 1")
                return PointLabels.from_label_map(label_map[0])
        raise PointsegError(
            f"{self.directory}: no point labels for sample '{ref.id}' (expected {ref.id}.tif or {ref.id}.png)"
        )


STREAM_SUFFIXES = (".jpg", ".jpeg", ".png")
"""Formats whose windows can only be read by decoding the file from its start."""


class DecodedRasterCache:
    """Whole decoded JPEG/PNG images and masks, least recently used first out, bounded in bytes.

    Random training crops of a JPEG re-decode most of the file each time (about 50-100 ms for a
    2448² DeepGlobe image), so each process (each DataLoader worker) keeps decoded files while
    they fit. GeoTIFFs are read by window and never cached.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, Path], np.ndarray] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple[str, Path], load: Callable[[], np.ndarray]) -> np.ndarray:
        """Return the cached array for ``key``, loading (and maybe caching) it on a miss."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        array = load()
        if array.nbytes <= self.max_bytes:
            self._items[key] = array
            self._bytes += array.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes
        return array


class SegmentationDataset(Dataset[Sample]):
    """Reads samples as ``{"image", "mask", "points", "path", "id", ["crs", "transform"]}``.

    Every sample is::

        image:     float32 (C, H, W), normalised with ``band_stats``
        mask:      int64 (H, W) dense labels, IGNORE_INDEX where ignored   (if the dataset has masks)
        points:    int64 (H, W) sparse labels, IGNORE_INDEX where unlabelled (if a point source is given)
        path:      str, the image file
        id:        str, the sample id
        crs:       str (WKT) and transform: tuple of 6 floats, of the returned pixels
                   (georeferenced rasters only)

    With ``crop_size`` set, each item is a random ``crop_size`` window read from disk (never the
    whole image), padded with IGNORE_INDEX labels where the image is smaller; the dataset then has
    ``crops_per_image`` items per image. Without it, each item is the whole sample, never resized.
    """

    def __init__(
        self,
        refs: Sequence[SampleRef],
        schema: ClassSchema,
        band_stats: BandStats,
        *,
        crop_size: int | None = None,
        crops_per_image: int = 1,
        points: PointSource | None = None,
        with_masks: bool = True,
        cache_bytes: int = 1 << 30,
    ) -> None:
        if not refs:
            raise PointsegError("empty dataset: no samples selected")
        self.refs = list(refs)
        self.schema = schema
        self.band_stats = band_stats
        self.crop_size = crop_size
        self.crops_per_image = crops_per_image if crop_size else 1
        self.point_source = points
        self.with_masks = with_masks and all(ref.mask_path is not None for ref in self.refs)
        self._points_cache: dict[str, PointLabels] = {}
        self._masks_checked: set[Path] = set()
        self._decoded = DecodedRasterCache(cache_bytes)

    def __len__(self) -> int:
        return len(self.refs) * self.crops_per_image

    def __getitem__(self, index: int) -> Sample:
        ref = self.refs[index // self.crops_per_image]
        with open_raster(ref.image_path) as dataset:
            region = ref.window or Window(0, 0, dataset.width, dataset.height)
            window = self._choose_window(region)
            if ref.image_path.suffix.lower() in STREAM_SUFFIXES:
                image = _cut(
                    self._decoded.get(("image", ref.image_path), lambda: read_pixels(dataset)), window
                )
            else:
                image = read_pixels(dataset, window)
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
            sample["points"] = torch.from_numpy(crop.to_label_map().astype(np.int64))
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

    def _choose_window(self, region: Window) -> Window:
        if not self.crop_size:
            return region
        height = min(self.crop_size, int(region.height))
        width = min(self.crop_size, int(region.width))
        row = int(torch.randint(0, int(region.height) - height + 1, ()).item())
        col = int(torch.randint(0, int(region.width) - width + 1, ()).item())
        return Window(region.col_off + col, region.row_off + row, width, height)

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


def check_mask_size(ref: SampleRef, image_width: int, image_height: int) -> None:
    """Raise unless the mask file of ``ref`` (if any) has its image's size.

    Raises:
        PointsegError: naming both files and their sizes.
    """
    if ref.mask_path is None:
        return
    mask = raster_info(ref.mask_path)
    if (mask.width, mask.height) != (image_width, image_height):
        raise PointsegError(
            f"{ref.mask_path}: mask is {mask.width}x{mask.height} px, "
            f"but image {ref.image_path} is {image_width}x{image_height} px"
        )


def _pad_sample(sample: Sample, size: int) -> Sample:
    height, width = sample["image"].shape[1:]
    if height == size and width == size:
        return sample
    pad = (0, size - width, 0, size - height)
    sample["image"] = torch.nn.functional.pad(sample["image"], pad, value=0.0)
    for key in ("mask", "points"):
        if key in sample:
            sample[key] = torch.nn.functional.pad(sample[key], pad, value=IGNORE_INDEX)
    return sample


def collate_samples(samples: Sequence[Sample]) -> Sample:
    """Stack tensors of equal shape; keep everything else (paths, ids, CRS) as lists."""
    batch: Sample = {}
    for key in samples[0]:
        values = [sample[key] for sample in samples]
        batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return batch


def pair_files(
    images: dict[str, Path], masks: dict[str, Path], require_masks: bool = True
) -> tuple[list[tuple[str, Path, Path | None]], list[str]]:
    """Match images and masks by key.

    Returns:
        ``(key, image, mask)`` triples sorted by key, and one problem line for each image
        without a mask (when ``require_masks``) and each mask without an image.
    """
    pairs: list[tuple[str, Path, Path | None]] = []
    problems = []
    for key in sorted(images):
        mask = masks.get(key)
        if mask is None and require_masks:
            problems.append(f"missing mask: {images[key]} has no mask")
            continue
        pairs.append((key, images[key], mask))
    problems.extend(f"missing image: {masks[key]} has no image" for key in sorted(set(masks) - set(images)))
    return pairs, problems


def require_directory(path: Path, what: str) -> None:
    """Raise a clear error if ``path`` is not a folder.

    Raises:
        PointsegError: naming ``path`` and ``what`` was expected there.
    """
    if not path.is_dir():
        raise PointsegError(f"{path}: no such folder; expected {what}")
