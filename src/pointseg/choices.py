"""The values that settings and commands accept, each defined once.

A ``Literal`` per choice and a constrained type per range. The command line uses the ``Literal``
types as its choices, ``config.py`` as field types, and the functions behind the commands as
parameter types. The ranges (:data:`Tile`, :data:`Overlap`, :data:`Scale`) are pydantic types: pydantic checks
them in config files, and :func:`check` everywhere else (command-line options, the predictor).
This module imports neither torch nor anything heavy, so the command line validates its options
before the training or inference stack is loaded.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError

from pointseg.errors import PointsegError

T = TypeVar("T")

Precision = Literal["fp32", "bf16"]
"""Inference arithmetic: float32, or bfloat16 autocast (torch models only)."""
Device = Literal["cpu", "cuda"]
"""Where a model runs."""
OutputFormat = Literal["geotiff", "png", "both"]
"""What ``pointseg predict`` writes: a Cloud-Optimised GeoTIFF of classes, a colour PNG, or both."""
DatasetFormat = Literal["deepglobe", "landcoverai", "dubai", "folder"]
"""Dataset formats: :data:`pointseg.datasets.registry.DATASETS` holds one adapter per name (a test
checks they agree)."""
PointStrategy = Literal["density", "per-class", "per-region"]
"""How simulated point labels are placed (see :mod:`pointseg.points.simulate`)."""
TestTimeAugmentation = Literal["none", "flips", "d4"]
"""What a prediction averages: the tile only; the logits of the tile, its left-right mirror and its
upside-down mirror (``flips``: three forward passes; see :func:`pointseg.inference.flip_averaged`); or
the logits of all eight rotations and mirrors of the tile (``d4``, the dihedral group of the square:
eight forward passes; see :func:`pointseg.inference.dihedral_averaged`)."""
Norm = Literal["group", "batch", "frozen"]
"""Normalisation layers of a network: GroupNorm, trained BatchNorm, or pretrained BatchNorm frozen
(see :func:`pointseg.models.build_model`)."""
CropSampling = Literal["uniform", "points", "mixed"]
"""Where training crops fall: anywhere, around a clicked point of a class drawn equally among the
image's clicked classes, or each of the two with probability 1/2 (see :data:`POINT_CROP_SHARE` and
:class:`pointseg.datasets.dataset.SegmentationDataset`)."""
POINT_CROP_SHARE: dict[str, float] = {"uniform": 0.0, "points": 1.0, "mixed": 0.5}
"""The share of training crops placed around a click, per :data:`CropSampling` choice."""

TILE_MULTIPLE = 32
"""Tiles are a multiple of this many pixels: the networks downsample by up to 32."""
MAX_OVERLAP = 0.5
"""Largest fraction of a tile shared with each neighbour (beyond it a pixel is covered 3 times or more)."""
MAX_SCALE = 4.0
"""Largest size factor of multi-scale prediction (a 512-px tile predicted at 2048 px)."""


def _tile(value: int) -> int:
    if value < TILE_MULTIPLE or value % TILE_MULTIPLE:
        raise ValueError(
            f"expected a multiple of {TILE_MULTIPLE} pixels (the networks downsample by up to "
            f"{TILE_MULTIPLE}), e.g. 256 or 512"
        )
    return value


def _overlap(value: float) -> float:
    if not 0 <= value <= MAX_OVERLAP:
        raise ValueError(f"expected a fraction between 0 and {MAX_OVERLAP:g}")
    return value


Tile = Annotated[int, AfterValidator(_tile)]
"""Side of a sliding-window tile in pixels: a positive multiple of :data:`TILE_MULTIPLE`."""
Overlap = Annotated[float, AfterValidator(_overlap)]
"""Fraction of a tile shared with each neighbour, in ``[0, MAX_OVERLAP]``."""
Scale = Annotated[float, Field(gt=0, le=MAX_SCALE)]
"""A size factor of multi-scale prediction, in ``(0, MAX_SCALE]`` (1: the tile as it is; see
:func:`pointseg.inference.scale_averaged`)."""


def check(kind: Any, value: T, name: str) -> T:
    """Return ``value`` if it is one of the ``Literal`` ``kind``'s choices, or of its constrained type.

    Args:
        kind: A type of this module (e.g. :data:`Precision`, :data:`Overlap`).
        value: The value to check.
        name: How the person gave the value (``--overlap``, ``overlap``), for the message.

    Raises:
        PointsegError: ``"<name> <value>: expected ..."``.
    """
    if get_origin(kind) is Literal:
        if value not in get_args(kind):
            raise PointsegError(f"{name} {value!r}: expected one of {', '.join(get_args(kind))}")
        return value
    try:
        TypeAdapter(kind).validate_python(value)
    except ValidationError as error:
        reason = error.errors()[0]["msg"].removeprefix("Value error, ")
        raise PointsegError(f"{name} {value}: {reason}") from None
    return value
