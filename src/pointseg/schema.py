"""Class schemas: the classes of a dataset, how its masks encode them, and what is ignored.

A schema is defined once per dataset (see ``pointseg.datasets``) and can be loaded from a
small YAML or JSON file for any other dataset::

    name: my-dataset
    mask_encoding: rgb            # or "index"
    classes:
      - {name: building, color: [60, 16, 152]}
      - {name: road, color: "#6EC1E4"}
      - {name: water, color: [0, 0, 255], value: 7}   # "value": index masks only
    ignore_colors: ["#9B9B9B"]    # rgb masks: colours that become IGNORE_INDEX
    ignore_values: [0]            # index masks: values that become IGNORE_INDEX
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from pointseg.errors import PointsegError

IGNORE_INDEX = 255
"""Label of pixels that carry no class: ignored in losses and metrics, unlabelled in point maps."""

_UNKNOWN = 254  # internal lookup-table marker for a mask value that the schema does not know

RGB = tuple[int, int, int]
MaskEncoding = Literal["rgb", "index"]


def parse_color(value: Any, where: str) -> RGB:
    """Parse ``"#RRGGBB"`` or ``[r, g, b]`` into an RGB tuple.

    Raises:
        PointsegError: naming ``where`` if the value is neither.
    """
    try:
        return _color(value)
    except ValueError as error:
        raise PointsegError(f"{where}: {error}") from None


def _color(value: Any) -> RGB:
    """Parse ``"#RRGGBB"`` or ``[r, g, b]``; raise ``ValueError`` saying what was found otherwise."""
    if isinstance(value, str) and value.startswith("#") and len(value) == 7:
        try:
            return (int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16))
        except ValueError:
            pass
    elif (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 3
        and all(isinstance(c, int) and 0 <= c <= 255 for c in value)
    ):
        return (int(value[0]), int(value[1]), int(value[2]))
    raise ValueError(f"colour {value!r} is not '#RRGGBB' or [r, g, b] with values 0-255")


Color = Annotated[Any, AfterValidator(_color)]
"""A colour as schema files write it (``"#RRGGBB"`` or ``[r, g, b]``), validated to an RGB tuple."""


class ClassEntry(BaseModel):
    """One entry of a schema file's ``classes`` list."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr
    color: Color
    value: StrictInt | None = None


class SchemaFile(BaseModel):
    """The content of a class schema file (the form :meth:`ClassSchema.to_dict` writes)."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr | None = None
    mask_encoding: MaskEncoding = "rgb"
    classes: list[ClassEntry] = Field(min_length=1)
    ignore_colors: list[Color] = Field(default_factory=list)
    ignore_values: list[StrictInt] = Field(default_factory=list)


def _schema_file_error(error: ValidationError, data: dict[str, Any]) -> str:
    """Say, for the first problem pydantic found, which field is wrong, what it holds and what is expected."""
    item = min(error.errors(), key=lambda e: e["type"] != "extra_forbidden")  # a typo says most
    loc, kind, found = item["loc"], item["type"], item.get("input")
    field = str(loc[0]) if loc else ""
    if kind == "extra_forbidden":
        place = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
        known = ", ".join(ClassEntry.model_fields if len(loc) > 1 else SchemaFile.model_fields)
        return f"unknown key '{place}'; expected only {known}"
    if field == "classes" and len(loc) >= 2:
        where = f"classes[{loc[1]}]"
        entry = data["classes"][loc[1]]
        part = loc[2] if len(loc) > 2 else None
        if part == "color" and kind == "missing":
            return f"{where} ('{entry['name']}'): missing 'color'"
        if part == "color":
            return f"{where}: {item['ctx']['error']}"
        if part == "value":
            return f"{where}: 'value' must be an integer, found {found!r}"
        return f"{where}: expected a mapping with a string 'name', found {entry!r}"
    if field == "classes":
        return "'classes' must be a non-empty list of {name, color} entries"
    if field == "ignore_colors" and len(loc) == 2:
        return f"ignore_colors: {item['ctx']['error']}"
    if field in ("ignore_colors", "ignore_values"):
        kind_of = "colours" if field == "ignore_colors" else "integers"
        return f"'{field}' must be a list of {kind_of}, found {data[field]!r}"
    if field == "mask_encoding":
        return f"mask_encoding {found!r}, expected 'rgb' or 'index'"
    return f"'{field}' must be a string, found {found!r}"


def format_color(color: RGB) -> str:
    """Return ``"#RRGGBB (r, g, b)"`` for messages."""
    red, green, blue = color
    return f"#{red:02X}{green:02X}{blue:02X} ({red}, {green}, {blue})"


@dataclass(frozen=True)
class ClassSchema:
    """Names, display colours and mask encoding of a dataset's classes.

    Attributes:
        name: Dataset name, used in messages.
        classes: Class names; class ``i`` is label ``i`` in every tensor pointseg makes.
        colors: One RGB colour per class. For ``rgb`` masks these are the mask colours; for
            ``index`` masks they are only used to draw maps.
        mask_encoding: ``"rgb"`` (colour-coded masks) or ``"index"`` (single-band class values).
        mask_values: For ``index`` masks, the stored value of each class (default ``0..n-1``).
        ignore_colors: For ``rgb`` masks, colours that mean "no class" (become ``IGNORE_INDEX``).
        ignore_values: For ``index`` masks, values that mean "no class".
    """

    name: str
    classes: tuple[str, ...]
    colors: tuple[RGB, ...]
    mask_encoding: MaskEncoding = "rgb"
    mask_values: tuple[int, ...] = ()
    ignore_colors: tuple[RGB, ...] = ()
    ignore_values: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        where = f"class schema '{self.name}'"
        if not self.classes:
            raise PointsegError(f"{where}: no classes")
        if len(self.classes) >= _UNKNOWN:
            raise PointsegError(f"{where}: {len(self.classes)} classes; at most {_UNKNOWN - 1} are supported")
        if len(set(self.classes)) != len(self.classes):
            raise PointsegError(f"{where}: class names repeat: {list(self.classes)}")
        if len(self.colors) != len(self.classes):
            raise PointsegError(f"{where}: {len(self.colors)} colours for {len(self.classes)} classes")
        if self.mask_encoding not in ("rgb", "index"):
            raise PointsegError(f"{where}: mask_encoding {self.mask_encoding!r}, expected 'rgb' or 'index'")
        if self.mask_encoding == "rgb":
            keys = list(self.colors) + list(self.ignore_colors)
            repeated = sorted({key for key in keys if keys.count(key) > 1})
            if repeated:
                raise PointsegError(
                    f"{where}: mask colour(s) used more than once: {', '.join(map(format_color, repeated))}; "
                    "each class 'color' and each of 'ignore_colors' must differ"
                )
        else:
            values = self.stored_values
            if len(values) != len(self.classes):
                raise PointsegError(f"{where}: {len(values)} mask values for {len(self.classes)} classes")
            keys_i = list(values) + list(self.ignore_values)
            if len(set(keys_i)) != len(keys_i) or any(not 0 <= v < 65536 for v in keys_i):
                raise PointsegError(f"{where}: mask values must be distinct and in 0..65535, got {keys_i}")

    @property
    def num_classes(self) -> int:
        """Number of classes (ignored values excluded)."""
        return len(self.classes)

    @property
    def stored_values(self) -> tuple[int, ...]:
        """Value stored in an index mask for each class."""
        return self.mask_values or tuple(range(len(self.classes)))

    @cached_property
    def _lookup_table(self) -> np.ndarray:
        """Map a packed colour (r<<16|g<<8|b) or an index value to a label."""
        if self.mask_encoding == "rgb":
            table = np.full(1 << 24, _UNKNOWN, dtype=np.uint8)
            for label, color in enumerate(self.colors):
                table[pack_rgb(np.array(color, dtype=np.uint8))] = label
            for color in self.ignore_colors:
                table[pack_rgb(np.array(color, dtype=np.uint8))] = IGNORE_INDEX
        else:
            table = np.full(1 << 16, _UNKNOWN, dtype=np.uint8)
            for label, value in enumerate(self.stored_values):
                table[value] = label
            for value in self.ignore_values:
                table[value] = IGNORE_INDEX
        return table

    def decode_mask(self, raw: np.ndarray, source: str) -> np.ndarray:
        """Turn a stored mask into class labels.

        Args:
            raw: ``(3, H, W)`` uint8 colours for ``rgb`` schemas, ``(H, W)`` or ``(1, H, W)``
                integers for ``index`` schemas.
            source: File name for error messages.

        Returns:
            ``(H, W)`` uint8 labels in ``0..num_classes-1``, or ``IGNORE_INDEX``.

        Raises:
            PointsegError: if the mask holds a colour or value that is neither a class nor ignored;
                the message names the file, each unknown value and its pixel count.
        """
        if self.mask_encoding == "rgb":
            if raw.ndim != 3 or raw.shape[0] != 3:
                raise PointsegError(
                    f"{source}: mask has shape {raw.shape}; schema '{self.name}' expects an RGB "
                    "colour mask (3 bands)"
                )
            keys = pack_rgb(np.moveaxis(raw, 0, -1))
        else:
            if raw.ndim == 3 and raw.shape[0] == 1:
                raw = raw[0]
            if raw.ndim != 2:
                raise PointsegError(
                    f"{source}: mask has shape {raw.shape}; schema '{self.name}' expects a "
                    "single-band class-index mask"
                )
            if raw.dtype not in (np.uint8, np.uint16):
                if (
                    not np.issubdtype(raw.dtype, np.integer)
                    or raw.min(initial=0) < 0
                    or raw.max(initial=0) > 65535
                ):
                    raise PointsegError(
                        f"{source}: mask dtype {raw.dtype} with values {raw.min()}..{raw.max()}; "
                        "expected integer class values in 0..65535"
                    )
                raw = raw.astype(np.uint16)
            keys = raw
        labels = self._lookup_table[keys]
        unknown = labels == _UNKNOWN
        if unknown.any():
            raise PointsegError(f"{source}: {self._describe_unknown(keys[unknown])}")
        return labels

    def _describe_unknown(self, keys: np.ndarray) -> str:
        values, counts = np.unique(keys, return_counts=True)
        order = np.argsort(-counts)
        shown = []
        for i in order[:10]:
            value = int(values[i])
            text = format_color(unpack_rgb(value)) if self.mask_encoding == "rgb" else str(value)
            shown.append(f"{text}: {int(counts[i]):,} px")
        more = f" and {len(values) - 10} more" if len(values) > 10 else ""
        if self.mask_encoding == "rgb":
            expected = ", ".join(
                f"{n} {format_color(c)}" for n, c in zip(self.classes, self.colors, strict=True)
            )
            ignored = ", ".join(format_color(c) for c in self.ignore_colors) or "none"
            kind = "colour"
        else:
            expected = ", ".join(f"{n}={v}" for n, v in zip(self.classes, self.stored_values, strict=True))
            ignored = ", ".join(map(str, self.ignore_values)) or "none"
            kind = "value"
        return (
            f"{len(values)} mask {kind}(s) not in the '{self.name}' schema: {'; '.join(shown)}{more}. "
            f"Expected classes: {expected}; ignored: {ignored}"
        )

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """Return an ``(H, W, 3)`` uint8 colour image of ``labels``; ignored pixels are black."""
        palette = np.zeros((256, 3), dtype=np.uint8)
        palette[: self.num_classes] = np.array(self.colors, dtype=np.uint8)
        return palette[labels]

    def to_dict(self) -> dict[str, Any]:
        """Return the schema as plain data (the file format that :meth:`from_dict` reads)."""
        classes: list[dict[str, Any]] = []
        for i, (name, color) in enumerate(zip(self.classes, self.colors, strict=True)):
            entry: dict[str, Any] = {"name": name, "color": "#{:02X}{:02X}{:02X}".format(*color)}
            if self.mask_encoding == "index":
                entry["value"] = self.stored_values[i]
            classes.append(entry)
        data: dict[str, Any] = {"name": self.name, "mask_encoding": self.mask_encoding, "classes": classes}
        if self.ignore_colors:
            data["ignore_colors"] = ["#{:02X}{:02X}{:02X}".format(*c) for c in self.ignore_colors]
        if self.ignore_values:
            data["ignore_values"] = list(self.ignore_values)
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "schema") -> ClassSchema:
        """Build a schema from plain data, as written by :meth:`to_dict` (validated by :class:`SchemaFile`).

        Raises:
            PointsegError: naming ``source`` and the field for any missing, unknown or malformed entry.
        """
        if not isinstance(data, dict):
            raise PointsegError(f"{source}: expected a mapping with 'classes', found {type(data).__name__}")
        try:
            content = SchemaFile.model_validate(data)
        except ValidationError as error:
            raise PointsegError(f"{source}: {_schema_file_error(error, data)}") from None
        values = [entry.value for entry in content.classes if entry.value is not None]
        if values and len(values) != len(content.classes):
            raise PointsegError(f"{source}: give 'value' for every class or for none")
        try:
            return cls(
                name=content.name if content.name is not None else Path(source).stem,
                classes=tuple(entry.name for entry in content.classes),
                colors=tuple(entry.color for entry in content.classes),
                mask_encoding=content.mask_encoding,
                mask_values=tuple(values),
                ignore_colors=tuple(content.ignore_colors),
                ignore_values=tuple(content.ignore_values),
            )
        except PointsegError as error:
            raise PointsegError(f"{source}: {error}") from error

    @classmethod
    def load(cls, path: str | Path) -> ClassSchema:
        """Read a schema from a ``.yaml``/``.yml``/``.json`` file.

        Raises:
            PointsegError: if the file is missing, unparsable or malformed.
        """
        path = Path(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as error:
            raise PointsegError(f"{path}: cannot read class schema ({error.strerror})") from error
        except UnicodeDecodeError as error:
            raise PointsegError(
                f"{path}: not UTF-8 text (byte {error.start}: {error.reason}); expected a YAML or JSON "
                "class schema"
            ) from None
        try:
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as error:
            raise PointsegError(
                f"{path}: not valid {path.suffix.lstrip('.').upper() or 'YAML'}: {error}"
            ) from error
        return cls.from_dict(data, source=str(path))


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Pack ``(..., 3)`` uint8 colours into ``r << 16 | g << 8 | b`` integers."""
    rgb = rgb.astype(np.uint32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def unpack_rgb(key: int) -> RGB:
    """Inverse of :func:`pack_rgb` for one colour."""
    return ((key >> 16) & 255, (key >> 8) & 255, key & 255)
