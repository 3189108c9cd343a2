"""``pointseg data check``: read every file of a dataset and report what is there and what is wrong."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rasterio.windows import Window
from rich.console import Console
from rich.table import Table

from pointseg.datasets.samples import Discovery, SampleRef, missing_mask
from pointseg.errors import PointsegError
from pointseg.raster import raster_info, read_mask, read_window
from pointseg.schema import IGNORE_INDEX, ClassSchema

WHOLE_MASK_PIXELS = 64_000_000  # larger masks are decoded in bands of rows to bound memory
ROWS_PER_READ = 2048
OVERVIEW_SIZE = 512


@dataclass
class BandSummary:
    """Running per-band statistics over decimated reads of every image."""

    minimum: list[float] = field(default_factory=list)
    maximum: list[float] = field(default_factory=list)
    sums: list[float] = field(default_factory=list)
    count: int = 0

    def add(self, pixels: np.ndarray) -> None:
        """Add ``(C, H, W)`` pixels; the band count must match earlier images (else ignored)."""
        flat = pixels.reshape(pixels.shape[0], -1).astype(np.float64)
        if not self.sums:
            self.minimum = flat.min(axis=1).tolist()
            self.maximum = flat.max(axis=1).tolist()
            self.sums = flat.sum(axis=1).tolist()
        elif len(self.sums) == flat.shape[0]:
            self.minimum = np.minimum(self.minimum, flat.min(axis=1)).tolist()
            self.maximum = np.maximum(self.maximum, flat.max(axis=1)).tolist()
            self.sums = (np.asarray(self.sums) + flat.sum(axis=1)).tolist()
        else:
            return
        self.count += flat.shape[1]

    @property
    def mean(self) -> list[float]:
        """Per-band mean."""
        return [s / max(self.count, 1) for s in self.sums]


@dataclass
class CheckReport:
    """What ``pointseg data check`` found."""

    dataset: str
    root: Path
    class_names: tuple[str, ...]
    num_images: int = 0
    num_samples: int = 0
    sizes: Counter[tuple[int, int]] = field(default_factory=Counter)
    band_counts: Counter[int] = field(default_factory=Counter)
    dtypes: Counter[str] = field(default_factory=Counter)
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ignored_pixels: int = 0
    bands: BandSummary = field(default_factory=BandSummary)
    problems: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)

    @property
    def class_shares(self) -> dict[str, float]:
        """Share of all mask pixels per class, and ``"(ignored)"`` for ignored pixels."""
        total = int(self.class_pixels.sum()) + self.ignored_pixels
        shares = {
            name: int(n) / total if total else 0.0
            for name, n in zip(self.class_names, self.class_pixels, strict=True)
        }
        shares["(ignored)"] = self.ignored_pixels / total if total else 0.0
        return shares


def check_dataset(discovery: Discovery, points_given: bool = False) -> CheckReport:
    """Read every image header and every mask of a dataset, collecting statistics and problems.

    Never raises for a bad file: each one becomes a problem line that names the file.

    Args:
        discovery: The dataset's files, paired without requiring masks.
        points_given: The images are labelled by points: images without a mask are counted as
            information, not problems.
    """
    schema = discovery.schema
    report = CheckReport(
        dataset=discovery.name,
        root=discovery.root,
        class_names=schema.classes,
        num_samples=len(discovery.refs),
        class_pixels=np.zeros(schema.num_classes, dtype=np.int64),
        problems=list(discovery.problems),
    )
    if not discovery.refs and not discovery.problems:
        report.problems.append(f"{discovery.root}: no image/mask pairs found")
    unmasked = sorted({ref.image_path for ref in discovery.refs if ref.mask_path is None})
    if unmasked and points_given:
        report.info.append(f"{len(unmasked)} image(s) without a mask: their labels are the points")
    elif unmasked:
        report.problems.extend(missing_mask(image) for image in unmasked)
    by_image: dict[Path, list[SampleRef]] = {}
    for ref in discovery.refs:
        by_image.setdefault(ref.image_path, []).append(ref)
    for image_path, refs in by_image.items():
        report.num_images += 1
        try:
            _check_pair(report, schema, image_path, refs[0].mask_path)
        except PointsegError as error:
            report.problems.append(str(error))
    return report


def _check_pair(report: CheckReport, schema: ClassSchema, image_path: Path, mask_path: Path | None) -> None:
    image = raster_info(image_path)
    report.sizes[(image.width, image.height)] += 1
    report.band_counts[image.count] += 1
    report.dtypes[image.dtype] += 1
    scale = max(1.0, max(image.width, image.height) / OVERVIEW_SIZE)
    overview = (max(1, round(image.height / scale)), max(1, round(image.width / scale)))
    report.bands.add(read_window(image_path, out_shape=overview))
    if mask_path is None:
        return
    mask = raster_info(mask_path)
    if (mask.width, mask.height) != (image.width, image.height):
        raise PointsegError(
            f"size mismatch: {mask_path} is {mask.width}x{mask.height} px, "
            f"image {image_path} is {image.width}x{image.height} px"
        )
    rows = mask.height if mask.width * mask.height <= WHOLE_MASK_PIXELS else ROWS_PER_READ
    for row in range(0, mask.height, rows):
        window = Window(0, row, mask.width, min(rows, mask.height - row))
        counts = np.bincount(read_mask(mask_path, schema, window).ravel(), minlength=256)
        report.class_pixels += counts[: schema.num_classes]
        report.ignored_pixels += int(counts[IGNORE_INDEX])


def print_report(report: CheckReport, console: Console) -> None:
    """Print a check report as tables, then the problems."""
    console.print(
        f"[bold]{report.dataset}[/] at {report.root}: "
        f"{report.num_images} image(s), {report.num_samples} sample(s)"
    )
    sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in report.sizes.most_common(8))
    more = f", ... {len(report.sizes) - 8} more" if len(report.sizes) > 8 else ""
    console.print(f"sizes: {sizes or '-'}{more}")
    console.print("bands: " + (", ".join(f"{b} ({n})" for b, n in sorted(report.band_counts.items())) or "-"))
    console.print("dtypes: " + (", ".join(f"{d} ({n})" for d, n in sorted(report.dtypes.items())) or "-"))
    if report.bands.count:
        bands = Table(title="Bands (decimated read)")
        for column in ("band", "min", "max", "mean"):
            bands.add_column(column, justify="right")
        for i, (low, high, mean) in enumerate(
            zip(report.bands.minimum, report.bands.maximum, report.bands.mean, strict=True)
        ):
            bands.add_row(str(i + 1), f"{low:g}", f"{high:g}", f"{mean:.2f}")
        console.print(bands)
    shares = Table(title="Class pixel shares (all mask pixels)")
    shares.add_column("class")
    shares.add_column("pixels", justify="right")
    shares.add_column("share", justify="right")
    counts = [*report.class_pixels.tolist(), report.ignored_pixels]
    for (name, share), count in zip(report.class_shares.items(), counts, strict=True):
        shares.add_row(name, f"{count:,}", f"{100 * share:.1f}%")
    console.print(shares)
    for line in report.info:
        console.print(f"info: {line}", highlight=False, soft_wrap=True)
    if report.problems:
        console.print(f"[bold red]{len(report.problems)} problem(s):[/]")
        for problem in report.problems:
            console.print(f"  - {problem}", highlight=False, soft_wrap=True)
    else:
        console.print("[green]no problems found[/]")
