"""Sliding-window prediction over images of any size, with smooth blending and bounded memory.

Tiles of ``tile`` pixels step by ``stride = tile * (1 - overlap)``. Each tile's softmax
probabilities are weighted by a cosine-tapered window (flat in the middle, raised-cosine ramps
over the overlap, never zero) and summed; dividing by the summed weights blends neighbours
without seams. Parts of tiles outside the image are filled by reflection, and the grid starts
half an overlap before the image so border pixels also get context on every side. Non-finite
input values (nodata in float rasters) are replaced before the forward pass, and sinks can mark
the pixels without data (see :meth:`RasterSource.valid`) as ``IGNORE_INDEX``.

Memory does not grow with the raster: tile rows are processed from top to bottom and, within a
row, batches of tiles from left to right. Only the ``tile - stride`` rows that the next tile row
will add to are carried over, and finished pixels are handed to a sink block by block. Sources
read windows, so a 20 000 x 20 000 GeoTIFF is never held in memory.

The same predictor serves validation, ``pointseg evaluate``, ``pointseg predict`` and the HTTP
API, so all of them see the same tiling.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rasterio.enums import MaskFlags
from rasterio.windows import Window
from torch import nn

from pointseg.choices import TILE_MULTIPLE, Overlap, Precision, TestTimeAugmentation, check
from pointseg.errors import PointsegError
from pointseg.normalization import BandStats
from pointseg.raster import open_raster, read_pixels
from pointseg.schema import IGNORE_INDEX, ClassSchema

if TYPE_CHECKING:
    from pointseg.checkpoint import TrainedModel

WHOLE_READ_DRIVERS = ("JPEG", "PNG")  # stream-compressed formats: read once, not window by window

Forward = Callable[[torch.Tensor], torch.Tensor]
"""Maps a ``(B, C, H, W)`` float32 batch to ``(B, K, H, W)`` logits (tiles: ``H = W = tile``; the
eight-view averaging also passes the transposed ``W x H`` batch)."""


@dataclass
class InferenceModel:
    """What prediction needs from a model, whichever runtime (torch, ONNX Runtime) executes it."""

    forward: Forward
    schema: ClassSchema
    band_stats: BandStats
    tile: int
    overlap: float
    metadata: dict[str, Any]

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return self.schema.num_classes


class ImageSource(Protocol):
    """Normalised pixels of one image, read by window."""

    @property
    def height(self) -> int:
        """Image height in pixels."""
        ...

    @property
    def width(self) -> int:
        """Image width in pixels."""
        ...

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Return ``(C, height, width)`` float32 normalised pixels of a window inside the image."""
        ...


class BlockSink(Protocol):
    """Receives finished, blended class probabilities block by block, in row-major order of tile rows."""

    def write(self, row: int, col: int, probabilities: torch.Tensor) -> None:
        """Take ``(K, h, w)`` float32 probabilities of image rows ``row..row+h``, columns ``col..col+w``."""
        ...


@dataclass(frozen=True)
class ArraySource:
    """An in-memory ``(C, H, W)`` image (already normalised)."""

    image: np.ndarray

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.image.shape[1])

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.image.shape[2])

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Return a window of the image."""
        return self.image[:, row : row + height, col : col + width]


class RasterSource:
    """Normalised windows of an open raster (optionally of one window of it, e.g. a dataset tile).

    JPEG and PNG files cannot be read by window without decoding from their start, so they are
    read whole once; GeoTIFFs are read window by window.
    """

    def __init__(
        self, dataset: rasterio.io.DatasetReader, band_stats: BandStats, window: Window | None = None
    ):
        self.dataset = dataset
        self.band_stats = band_stats
        self.window = window or Window(0, 0, dataset.width, dataset.height)
        self.height = int(self.window.height)
        self.width = int(self.window.width)
        if dataset.count != band_stats.num_bands:
            raise PointsegError(
                f"{dataset.name}: {dataset.count} band(s), but the model takes {band_stats.num_bands}"
            )
        self._whole = None
        if dataset.driver in WHOLE_READ_DRIVERS:
            self._whole = band_stats.normalize(read_pixels(dataset, self.window), dataset.name)
        self.has_nodata = any(MaskFlags.all_valid not in flags for flags in dataset.mask_flag_enums)
        self.floating = any(np.issubdtype(np.dtype(dtype), np.floating) for dtype in dataset.dtypes)

    def valid(self, row: int, col: int, height: int, width: int) -> np.ndarray | None:
        """``(height, width)`` bool: pixels with data; None if all are.

        A pixel has no data where the nodata value, an alpha band or a mask say so, and, in
        floating-point rasters, where any band is not finite (NaN, +inf or -inf).
        """
        if not self.has_nodata and not self.floating:
            return None
        window = Window(self.window.col_off + col, self.window.row_off + row, width, height)
        valid = np.ones((height, width), dtype=bool)
        if self.has_nodata:
            valid &= self.dataset.dataset_mask(window=window) > 0
        if self.floating:
            valid &= np.isfinite(read_pixels(self.dataset, window)).all(axis=0)
        return valid

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Return ``(C, height, width)`` normalised pixels of a window of the source."""
        if self._whole is not None:
            return self._whole[:, row : row + height, col : col + width]
        window = Window(self.window.col_off + col, self.window.row_off + row, width, height)
        return self.band_stats.normalize(read_pixels(self.dataset, window), self.dataset.name)


@contextlib.contextmanager
def open_source(
    path: str | Path, band_stats: BandStats, window: Window | None = None
) -> Iterator[RasterSource]:
    """Open a raster file as a :class:`RasterSource`."""
    with open_raster(path) as dataset:
        yield RasterSource(dataset, band_stats, window)


def flip_averaged(forward: Forward) -> Forward:
    """Test-time augmentation: average the logits of a batch and of its two mirrors.

    The left-right and the upside-down mirror are each mirrored back before the mean; one forward
    call on three times the batch.
    """

    def averaged(batch: torch.Tensor) -> torch.Tensor:
        count = batch.shape[0]
        logits = forward(torch.cat([batch, batch.flip(-1), batch.flip(-2)])).float()
        return (logits[:count] + logits[count : 2 * count].flip(-1) + logits[2 * count :].flip(-2)) / 3

    return averaged


def dihedral_averaged(forward: Forward) -> Forward:
    """Test-time augmentation: average the logits of a batch over the eight symmetries of the square.

    Overhead imagery has no "up": the tile, its three mirrors (left-right, upside-down, both: the half
    turn) and the same four of its transpose (the quarter turns and the diagonal mirrors) are each
    mapped back before the mean. Two forward calls on four times the batch: the transposed half has
    the tile's width and height swapped, so tiles need not be square.
    """

    def mirrors(batch: torch.Tensor) -> torch.Tensor:
        return torch.cat([batch, batch.flip(-1), batch.flip(-2), batch.flip(-2, -1)])

    def unmirrored_sum(logits: torch.Tensor, count: int) -> torch.Tensor:
        parts = logits.float().split(count)
        return parts[0] + parts[1].flip(-1) + parts[2].flip(-2) + parts[3].flip(-2, -1)

    def averaged(batch: torch.Tensor) -> torch.Tensor:
        count = batch.shape[0]
        upright = unmirrored_sum(forward(mirrors(batch)), count)
        transposed = unmirrored_sum(forward(mirrors(batch.transpose(-2, -1))), count).transpose(-2, -1)
        return (upright + transposed) / 8

    return averaged


def scale_averaged(forward: Forward, scales: Sequence[float]) -> Forward:
    """Multi-scale prediction: the mean of a batch's class probabilities at each of ``scales``.

    As DeepLab evaluates (Chen et al., 2017): at each scale the batch is resized (bilinear, antialiased
    when shrinking, each side rounded to a multiple of :data:`~pointseg.choices.TILE_MULTIPLE`), and
    the logits are resized back. The result is the logarithm of the mean probabilities, so that the
    softmax the sliding window applies gives that mean. ``(1.0,)`` returns ``forward`` itself.
    """
    if tuple(scales) == (1.0,):
        return forward

    def at_scale(batch: torch.Tensor, scale: float) -> torch.Tensor:
        if scale == 1:
            return forward(batch).float()
        height, width = batch.shape[-2:]
        size = [
            max(TILE_MULTIPLE, round(side * scale / TILE_MULTIPLE) * TILE_MULTIPLE)
            for side in (height, width)
        ]
        resized = F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
        logits = forward(resized).float()
        return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)

    def averaged(batch: torch.Tensor) -> torch.Tensor:
        probabilities = torch.stack([torch.softmax(at_scale(batch, scale), dim=1) for scale in scales])
        return torch.log(torch.clamp_min(probabilities.mean(dim=0), torch.finfo(torch.float32).tiny))

    return averaged


def tta_averaged(forward: Forward, tta: TestTimeAugmentation, scales: Sequence[float] = (1.0,)) -> Forward:
    """``forward`` averaged as ``tta`` says, then over ``scales`` (see :func:`scale_averaged`).

    ``tta``: unchanged (``none``), over the mirrors (``flips``), or over all eight symmetries (``d4``).
    """
    check(TestTimeAugmentation, tta, "test-time augmentation")
    if tta == "flips":
        forward = flip_averaged(forward)
    elif tta == "d4":
        forward = dihedral_averaged(forward)
    return scale_averaged(forward, scales)


def fast_bfloat16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 natively, so that bf16 autocast is faster than float32.

    A CUDA GPU that supports bfloat16, or a CPU whose oneDNN has bfloat16 kernels (AVX-512 or AMX,
    x86; bfloat16 extensions, Arm). Elsewhere, on an AVX2-only CPU for one, bfloat16 is emulated: a
    training step of the Dubai CPU config's network took 8.2x as long as in float32 on such a CPU
    (``python -m benchmarks.training_precision``).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(supported()) if supported is not None else False


def torch_forward(
    model: nn.Module,
    device: torch.device | str = "cpu",
    precision: Precision = "fp32",
    tta: TestTimeAugmentation = "none",
    scales: Sequence[float] = (1.0,),
) -> Forward:
    """The fast inference path: eval mode, ``inference_mode``, channels_last, optional bf16 autocast.

    ``tta`` averages each tile over its mirrors or its eight symmetries, and ``scales`` over sizes
    (see :func:`tta_averaged`).
    ``bf16`` on a device without fast bfloat16 (:func:`fast_bfloat16`) is kept, with a note on stderr.
    """
    device = torch.device(device)
    if precision == "bf16" and not fast_bfloat16(device):
        where = "this GPU" if device.type == "cuda" else "this CPU (no AVX-512 or AMX)"
        print(
            f"--precision bf16: {where} does not compute bfloat16 natively, so prediction runs slower "
            "than with fp32",
            file=sys.stderr,
        )
    model = model.eval().to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
            return model(batch.to(device).contiguous(memory_format=torch.channels_last))

    return tta_averaged(forward, tta, scales)


ValidMask = Callable[[int, int, int, int], np.ndarray | None]
"""``(row, col, height, width) -> (height, width)`` bool, True where a pixel has data (None: all do)."""


def torch_inference_model(
    trained: TrainedModel, device: str = "cpu", precision: Precision = "fp32"
) -> InferenceModel:
    """Wrap a checkpoint's network in the fast torch inference path."""
    return InferenceModel(
        forward=torch_forward(
            trained.model, device, precision, trained.config.eval.tta, trained.config.eval.scales
        ),
        schema=trained.schema,
        band_stats=trained.band_stats,
        tile=trained.config.eval.tile,
        overlap=trained.config.eval.overlap,
        metadata=trained.metadata(),
    )


class LabelSink:
    """Collects ``(H, W)`` uint8 labels (argmax) and optionally the max-softmax confidence, in memory.

    Args:
        height: Image height in pixels.
        width: Image width in pixels.
        with_confidence: Also keep the max softmax probability.
        valid: Where the input has data (e.g. :meth:`RasterSource.valid`); other pixels get
            ``IGNORE_INDEX`` (and NaN confidence).
    """

    def __init__(
        self, height: int, width: int, with_confidence: bool = False, valid: ValidMask | None = None
    ) -> None:
        self.labels = np.zeros((height, width), dtype=np.uint8)
        self.confidence = np.zeros((height, width), dtype=np.float32) if with_confidence else None
        self.valid = valid

    def write(self, row: int, col: int, probabilities: torch.Tensor) -> None:
        """Store argmax labels (and confidence) of a block."""
        confidence, labels = probabilities.max(dim=0)
        height, width = labels.shape
        labels_np, confidence_np = labels.numpy().astype(np.uint8), confidence.numpy()
        valid = None if self.valid is None else self.valid(row, col, height, width)
        if valid is not None:
            labels_np[~valid] = IGNORE_INDEX
            confidence_np = np.where(valid, confidence_np, np.nan)
        self.labels[row : row + height, col : col + width] = labels_np
        if self.confidence is not None:
            self.confidence[row : row + height, col : col + width] = confidence_np


@dataclass(frozen=True)
class TileGrid:
    """Tile origins along one axis: ``start + i * stride`` for ``i < count`` (may begin before 0)."""

    start: int
    stride: int
    count: int
    tile: int

    @classmethod
    def along(cls, length: int, tile: int, stride: int) -> TileGrid:
        """Grid covering ``length`` pixels, starting half an overlap before pixel 0."""
        margin = (tile - stride) // 2
        count = max(1, math.ceil((length + 2 * margin - tile) / stride) + 1)
        return cls(start=-margin, stride=stride, count=count, tile=tile)

    def origin(self, index: int) -> int:
        """Position of tile ``index`` (image coordinates)."""
        return self.start + index * self.stride

    @property
    def end(self) -> int:
        """One past the last pixel that any tile covers."""
        return self.origin(self.count - 1) + self.tile


def blend_window(tile: int, ramp: int) -> torch.Tensor:
    """Return a ``(tile, tile)`` weight window: 1 in the middle, raised-cosine ramps of ``ramp`` px at edges.

    The ramp values are ``sin^2(pi * (i + 0.5) / (2 * ramp))``: strictly positive, so every pixel has
    weight, and two ramps that overlap by ``ramp`` pixels add up to 1.
    """
    profile = torch.ones(tile, dtype=torch.float32)
    if ramp > 0:
        rising = torch.sin(math.pi * (torch.arange(ramp, dtype=torch.float32) + 0.5) / (2 * ramp)) ** 2
        profile[:ramp] = rising
        profile[tile - ramp :] = rising.flip(0)
    return profile[:, None] * profile[None, :]


def read_reflected(source: ImageSource, row: int, col: int, height: int, width: int) -> np.ndarray:
    """Read a window that may reach past the image, filling the outside by reflection.

    Non-finite values (NaN, +inf, -inf: nodata in a float raster) become 0, the band mean after
    normalisation, so one such pixel cannot turn every prediction it touches into NaN.
    """
    top, left = max(row, 0), max(col, 0)
    bottom, right = min(row + height, source.height), min(col + width, source.width)
    inside = np.asarray(source.read(top, left, bottom - top, right - left), dtype=np.float32)
    if not np.isfinite(inside).all():  # nodata in a float raster: never fed to the network
        inside = np.nan_to_num(inside, nan=0.0, posinf=0.0, neginf=0.0)
    pad = ((0, 0), (top - row, row + height - bottom), (left - col, col + width - right))
    if any(before or after for before, after in pad):
        if min(inside.shape[1:]) > 1:
            inside = np.pad(inside, pad, mode="reflect")
        else:  # a 1-px strip cannot reflect
            inside = np.pad(inside, pad, mode="edge")
    return inside


class SlidingWindowPredictor:
    """Blend tiled model outputs over an image of any size (see the module docstring).

    Args:
        forward: The model: ``(B, C, tile, tile)`` float32 -> ``(B, K, tile, tile)`` logits.
        num_classes: K.
        tile: Tile side in pixels.
        overlap: Fraction of a tile shared with each neighbour, in ``[0, 0.5]``.
        batch_size: Tiles per forward call.
        device: Where tiles are sent for ``forward``; blending happens on the CPU.
    """

    def __init__(
        self,
        forward: Forward,
        num_classes: int,
        tile: int = 512,
        overlap: float = 0.25,
        batch_size: int = 4,
        device: torch.device | str = "cpu",
    ):
        check(Overlap, overlap, "overlap")
        if tile < 16:
            raise PointsegError(f"tile {tile}: expected at least 16 pixels")
        if batch_size < 1:
            raise PointsegError(f"batch size {batch_size}: expected at least 1")
        self.forward = forward
        self.num_classes = num_classes
        self.tile = tile
        self.stride = max(1, tile - round(tile * overlap))
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.window = blend_window(tile, tile - self.stride)
        self._device_window = self.window.to(self.device)
        self.uniform_weights = self.stride == tile

    def count_tiles(self, height: int, width: int) -> int:
        """Number of tiles (forward passes of one tile) for an image of this size."""
        return (
            TileGrid.along(height, self.tile, self.stride).count
            * TileGrid.along(width, self.tile, self.stride).count
        )

    def predict(
        self, source: ImageSource, sink: BlockSink, on_tiles: Callable[[int], None] | None = None
    ) -> None:
        """Predict ``source`` and hand every pixel's blended class probabilities to ``sink`` exactly once.

        Args:
            source: The normalised image.
            sink: Receives ``(K, h, w)`` probability blocks.
            on_tiles: Called with the number of tiles just processed (for progress bars).
        """
        tile, stride, classes = self.tile, self.stride, self.num_classes
        rows = TileGrid.along(source.height, tile, stride)
        cols = TileGrid.along(source.width, tile, stride)
        carry_rows = tile - stride
        col_offset = -cols.start  # accumulator column = image column + col_offset
        padded_width = cols.end + col_offset
        # Channels 0..K-1 hold weighted probabilities, channel K the summed weights.
        carry = torch.zeros(classes + 1, carry_rows, padded_width) if carry_rows and rows.count > 1 else None
        for row_index in range(rows.count):
            y0 = rows.origin(row_index)
            last_row = row_index == rows.count - 1
            final_rows = tile if last_row else stride
            pending = torch.zeros(classes + 1, tile, 0)
            pending_start = 0  # accumulator column of pending[..., 0]
            new_carry = torch.zeros_like(carry) if carry is not None and not last_row else None
            for first in range(0, cols.count, self.batch_size):
                indices = range(first, min(first + self.batch_size, cols.count))
                x_first, x_last = cols.origin(indices[0]), cols.origin(indices[-1])
                span = read_reflected(source, y0, x_first, tile, x_last + tile - x_first)
                batch = np.stack(
                    [span[:, :, x - x_first : x - x_first + tile] for x in (cols.origin(i) for i in indices)]
                )
                logits = self.forward(torch.from_numpy(batch).to(self.device, non_blocking=True))
                probabilities = torch.softmax(logits.float(), dim=1)
                if not self.uniform_weights:
                    probabilities = probabilities * self._device_window
                probabilities = probabilities.cpu()
                end = x_last + tile + col_offset
                grown = torch.zeros(classes + 1, tile, end - pending_start)
                grown[:, :, : pending.shape[2]] = pending
                for k, i in enumerate(indices):
                    a = cols.origin(i) + col_offset - pending_start
                    grown[:classes, :, a : a + tile] += probabilities[k]
                    grown[classes, :, a : a + tile] += self.window
                pending = grown
                # Columns left of the next tile are final for this tile row.
                done = (
                    cols.origin(indices[-1] + 1) + col_offset if indices[-1] + 1 < cols.count else end
                ) - pending_start
                block = pending[:, :, :done]
                a, b = pending_start, pending_start + done
                if carry is not None:
                    block[:, :carry_rows] += carry[:, :, a:b]
                if new_carry is not None:
                    new_carry[:, :, a:b] = block[:, stride:]
                self._emit(sink, source, block[:, :final_rows], y0, a - col_offset)
                pending = pending[:, :, done:]
                pending_start = b
                if on_tiles is not None:
                    on_tiles(len(indices))
            carry = new_carry

    def _emit(self, sink: BlockSink, source: ImageSource, block: torch.Tensor, y0: int, x0: int) -> None:
        top, left = max(y0, 0), max(x0, 0)
        bottom = min(y0 + block.shape[1], source.height)
        right = min(x0 + block.shape[2], source.width)
        if bottom <= top or right <= left:
            return
        inside = block[:, top - y0 : bottom - y0, left - x0 : right - x0]
        sink.write(top, left, inside[: self.num_classes] / inside[self.num_classes])


def predict_labels(
    forward: Forward,
    image: np.ndarray,
    num_classes: int,
    tile: int = 512,
    overlap: float = 0.25,
    batch_size: int = 4,
) -> np.ndarray:
    """Predict ``(H, W)`` uint8 labels for an in-memory ``(C, H, W)`` normalised image."""
    sink = LabelSink(image.shape[1], image.shape[2])
    SlidingWindowPredictor(forward, num_classes, tile, overlap, batch_size).predict(ArraySource(image), sink)
    return sink.labels
