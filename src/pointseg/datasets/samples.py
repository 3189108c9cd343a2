"""The dataset catalogue: sample refs, what a dataset folder holds, selecting and pairing files.

Each format's adapter (:mod:`pointseg.datasets.deepglobe` and the others) pairs its files into
:class:`SampleRef` objects and returns them in a :class:`Discovery`; :func:`select_refs` picks
samples by id or group for splits.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rasterio.windows import Window

from pointseg.errors import PointsegError
from pointseg.raster import raster_info
from pointseg.schema import ClassSchema


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


def missing_mask(image: Path) -> str:
    """The problem line of an image without a mask."""
    return f"missing mask: {image} has no mask"


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
            problems.append(missing_mask(images[key]))
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
