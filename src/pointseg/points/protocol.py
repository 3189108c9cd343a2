"""Point protocols: how points are simulated from a dense mask, each with its parameter and range.

A protocol is a strategy and its parameter: ``density`` (a fraction of the valid pixels),
``per-class`` (N pixels of each class present) or ``per-region`` (one point per connected region
of at least ``min_area`` pixels), plus a seed. :class:`ProtocolSettings` holds the settings with
their ranges, checked here and nowhere else; the training config's ``points`` section extends it.
:class:`PointProtocol` is a validated protocol with the names that tables, file names and
reports use, and :meth:`PointProtocol.from_spec` reads the ``strategy:value`` form of sweeps.

Adding a protocol: a strategy name in :data:`pointseg.choices.PointStrategy`, its parameter in
:data:`STRATEGY_PARAMETERS` (and a field with its range if new), its names in the three
properties below, and its sampler in :mod:`pointseg.points.simulate`.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pointseg.choices import PointStrategy
from pointseg.errors import PointsegError

STRATEGY_PARAMETERS: dict[str, str] = {
    "density": "density",
    "per-class": "per_class",
    "per-region": "min_area",
}
"""The setting that parameterises each strategy."""

SPEC_FORMS = "density:FRACTION (e.g. density:0.01), per-class:N, per-region:MIN_AREA"
"""The ``strategy:value`` forms :meth:`PointProtocol.from_spec` reads."""


class ProtocolSettings(BaseModel):
    """The settings of a point protocol, each with its range.

    Attributes:
        strategy: ``"density"``, ``"per-class"`` or ``"per-region"``.
        density: Fraction of the valid (not ``IGNORE_INDEX``) pixels to label, in ``(0, 1]``;
            for ``"density"``.
        per_class: Points per class present, at least 1; for ``"per-class"``.
        min_area: Smallest region that gets a point, in pixels, at least 1; for ``"per-region"``.
        seed: Seed of the random choice, a non-negative integer. Each image gets its own stream
            derived from the seed and the image id.
    """

    model_config = ConfigDict(extra="forbid")

    strategy: PointStrategy = "density"
    density: float = Field(
        0.01, gt=0, le=1, strict=True, description="fraction of the valid pixels in (0, 1], e.g. 0.01 for 1%"
    )
    per_class: int = Field(10, ge=1, strict=True, description="points per class present")
    min_area: int = Field(100, ge=1, strict=True, description="smallest region that gets a point, in pixels")
    seed: int = Field(0, ge=0, strict=True, description="seed of the random choice")

    def protocol(self) -> PointProtocol:
        """The validated protocol these settings describe."""
        return PointProtocol.model_validate(self.model_dump(include=set(ProtocolSettings.model_fields)))


class PointProtocol(ProtocolSettings):
    """How to simulate point labels from a dense mask (immutable, validated on creation).

    ``PointProtocol("per-class", per_class=7)`` takes the strategy as its only positional argument.

    Raises:
        PointsegError: naming the field, the value found and the range expected when a setting is
            out of range.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, strategy: PointStrategy | None = None, /, **settings: Any) -> None:
        if strategy is not None:
            settings["strategy"] = strategy
        try:
            super().__init__(**settings)
        except ValidationError as error:
            raise PointsegError(_describe_error(error)) from None

    @classmethod
    def from_spec(cls, text: str) -> PointProtocol:
        """Parse ``density:F``, ``per-class:N`` or ``per-region:MIN_AREA`` (other settings at their defaults).

        Raises:
            PointsegError: naming the spec and the accepted forms.
        """
        strategy, _, value = text.strip().partition(":")
        if strategy not in STRATEGY_PARAMETERS or not value:
            raise PointsegError(f"point protocol {text!r}: expected {SPEC_FORMS}")
        parameter = STRATEGY_PARAMETERS[strategy]
        kind = ProtocolSettings.model_fields[parameter].annotation  # float or int
        assert kind is float or kind is int
        try:
            number = kind(value)
        except ValueError:
            raise PointsegError(
                f"point protocol {text!r}: {parameter} {value!r} is not a number; expected {SPEC_FORMS}"
            ) from None
        return cls(strategy, **{parameter: number})  # type: ignore[arg-type]

    @property
    def parameter(self) -> float | int:
        """The value of the strategy's parameter (``density``, ``per_class`` or ``min_area``)."""
        value: float | int = getattr(self, STRATEGY_PARAMETERS[self.strategy])
        return value

    @property
    def slug(self) -> str:
        """For file and run names, e.g. ``density-0.01``, ``per-class-10``, ``per-region-100``."""
        value = self.parameter
        return f"{self.strategy}-{value:g}" if isinstance(value, float) else f"{self.strategy}-{value}"

    @property
    def name(self) -> str:
        """For tables and figures, e.g. ``1%``, ``10 / class``, ``1 / region (min 50 px)``."""
        if self.strategy == "density":
            return f"{self.density * 100:g}%"
        if self.strategy == "per-class":
            return f"{self.per_class} / class"
        default_area = ProtocolSettings.model_fields["min_area"].default
        return "1 / region" + ("" if self.min_area == default_area else f" (min {self.min_area} px)")

    def describe(self) -> str:
        """Return a short description for reports, e.g. ``"density 1%"`` or ``"10 per class"``."""
        if self.strategy == "density":
            return f"density {self.density * 100:g}%"
        if self.strategy == "per-class":
            return f"{self.per_class} per class"
        return f"per region (min area {self.min_area} px)"


def _describe_error(error: ValidationError) -> str:
    """One part per invalid setting, e.g. ``point protocol: per_class 0; expected an integer >= 1 (...)``."""
    parts = []
    for item in error.errors():
        name = ".".join(str(part) for part in item["loc"])
        field = ProtocolSettings.model_fields.get(name)
        if name == "strategy":
            expected = "one of " + ", ".join(get_args(PointStrategy))
        elif field is None:
            expected = item["msg"].lower()
        elif field.annotation is int:
            minimum = next(m.ge for m in field.metadata if hasattr(m, "ge"))
            expected = f"an integer >= {minimum} ({field.description})"
        else:
            expected = f"a {field.description}"
        parts.append(f"point protocol: {name} {item.get('input')!r}; expected {expected}")
    return "; ".join(parts)
