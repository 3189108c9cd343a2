"""Point-label files: write GeoJSON, and import GeoJSON, CSV or GeoPackage onto an image's pixel grid.

Points are written as GeoJSON for GIS software, and imported back from GeoJSON, CSV or
GeoPackage files made by people, reprojected into the image's pixel grid.

Importing never drops a point silently: points outside the image, with an unknown class, or on a
pixel that already has a point are errors unless the caller asks to skip them, and then they are
counted in an :class:`ImportReport`.
"""

from __future__ import annotations

import csv
import json
import math
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pyogrio
import pyogrio.raw
from affine import Affine
from pyogrio.errors import DataLayerError, DataSourceError
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform as warp_transform

from pointseg.errors import PointsegError
from pointseg.points.labels import PointLabels
from pointseg.raster import RasterInfo, atomic_output, raster_info
from pointseg.schema import ClassSchema

PIXEL_COORDINATES = "pixel"
"""Value of ``points_crs`` (and of the GeoJSON ``pointseg.coordinates`` member) for pixel coordinates."""

POINT_FILE_SUFFIXES = (".geojson", ".json", ".csv", ".gpkg")

_WGS84 = CRS.from_epsg(4326)
_MAX_LINES_SHOWN = 10


def write_points_geojson(
    path: str | Path,
    points: PointLabels,
    schema: ClassSchema,
    crs: CRS | None = None,
    transform: Affine | None = None,
) -> None:
    """Write points atomically as a GeoJSON FeatureCollection of pixel-centre Point features.

    Each feature has the properties ``class`` (name) and ``class_index``. With a ``crs`` the
    coordinates are ``transform @ (col + 0.5, row + 0.5)`` in that CRS, named in the legacy
    ``crs`` member; without one they are pixel coordinates ``(col + 0.5, row + 0.5)``, marked by
    ``"pointseg": {"coordinates": "pixel"}`` and ``"crs": null``.

    Args:
        path: Destination ``.geojson`` file.
        points: Points of the image.
        schema: Class names of the labels.
        crs: CRS of the image, or ``None`` for an image without georeferencing.
        transform: Pixel-to-CRS affine transform of the image; required with ``crs``.
    """
    if len(points) and points.classes.max() >= schema.num_classes:
        raise ValueError(
            f"a point has class {points.classes.max()}; schema '{schema.name}' has {schema.num_classes}"
        )
    x, y = points.cols + 0.5, points.rows + 0.5
    collection: dict[str, Any] = {"type": "FeatureCollection"}
    if crs is None:
        collection.update(crs=None, pointseg={"coordinates": PIXEL_COORDINATES})
    else:
        if transform is None:
            raise ValueError("a transform is needed to write points in a CRS")
        x, y = _apply(transform, x, y)
        collection["crs"] = {"type": "name", "properties": {"name": crs.to_string()}}
    collection["features"] = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [float(px), float(py)]},
            "properties": {"class": schema.classes[label], "class_index": int(label)},
        }
        for px, py, label in zip(x, y, points.classes, strict=True)
    ]
    with atomic_output(path) as temporary, temporary.open("w") as handle:
        json.dump(collection, handle)


@dataclass
class _PointRecords:
    """Points as read from a file, before they are placed on the image.

    ``crs`` is the points' CRS, or ``None`` for pixel coordinates of the image. ``names`` and
    ``indices`` hold the raw ``class`` and ``class_index`` values of each point (``None`` if absent).
    ``lines`` is the 1-based CSV line or feature number of each point, for messages.
    """

    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    names: list[Any] = field(default_factory=list)
    indices: list[Any] = field(default_factory=list)
    crs: CRS | None = None
    unit: str = "line"

    def add(self, x: float, y: float, line: int, name: Any, index: Any) -> None:
        self.x.append(x)
        self.y.append(y)
        self.lines.append(line)
        self.names.append(name)
        self.indices.append(index)


# A coordinate system as given by a file or the caller: a CRS, or PIXEL_COORDINATES.
_CoordinateSystem: TypeAlias = "CRS | str"


def _parse_crs(value: Any, where: str) -> _CoordinateSystem:
    if isinstance(value, str) and value.strip().lower() == PIXEL_COORDINATES:
        return PIXEL_COORDINATES
    try:
        return CRS.from_user_input(value)
    except (CRSError, TypeError, ValueError) as error:
        raise PointsegError(
            f"{where}: CRS {value!r} is not recognised; expected e.g. 'EPSG:32633', a WKT string or "
            f"'{PIXEL_COORDINATES}' for image pixel coordinates"
        ) from error


def _choose_crs(
    path: Path,
    declared: _CoordinateSystem | None,
    default: _CoordinateSystem | None,
    points_crs: _CoordinateSystem | None,
) -> CRS | None:
    """Pick the points' CRS: what the file declares, else ``points_crs``, else the format's default."""
    if declared is not None and points_crs is not None and declared != points_crs:
        raise PointsegError(
            f"{path}: the file gives its coordinates in {_crs_name(declared)}, but the points CRS was "
            f"given as {_crs_name(points_crs)}; leave the points CRS out or make them agree"
        )
    chosen = declared if declared is not None else points_crs if points_crs is not None else default
    return chosen if isinstance(chosen, CRS) else None


def _crs_name(crs: _CoordinateSystem | None) -> str:
    if crs is None or crs == PIXEL_COORDINATES:
        return "pixel coordinates"
    return crs.to_string() if isinstance(crs, CRS) else str(crs)


def _read_geojson(path: Path, points_crs: _CoordinateSystem | None, class_field: str) -> _PointRecords:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PointsegError(f"{path}: not readable as GeoJSON ({error})") from error
    if (
        not isinstance(data, dict)
        or data.get("type") != "FeatureCollection"
        or not isinstance(data.get("features"), list)
    ):
        found = data.get("type") if isinstance(data, dict) else type(data).__name__
        raise PointsegError(
            f"{path}: found {found!r}; expected a GeoJSON FeatureCollection of Point features"
        )
    declared: _CoordinateSystem | None = None
    marker = data.get("pointseg")
    if isinstance(marker, dict) and marker.get("coordinates") == PIXEL_COORDINATES:
        declared = PIXEL_COORDINATES
    elif isinstance(data.get("crs"), dict):
        properties = data["crs"].get("properties") or {}
        if not isinstance(properties, dict):
            raise PointsegError(
                f"{path}: crs.properties is {properties!r}; expected an object such as "
                '{"name": "EPSG:32640"}'
            )
        declared = _parse_crs(properties.get("name"), f"{path}: crs.properties.name")
    records = _PointRecords(unit="feature")
    records.crs = _choose_crs(path, declared, _WGS84, points_crs)
    for number, feature in enumerate(data["features"], start=1):
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        positions = _positions(geometry, f"{path}: feature {number}")
        properties = feature.get("properties")
        properties = (
            {str(key).strip().lower(): value for key, value in properties.items()}
            if isinstance(properties, dict)
            else {}
        )
        for x, y, *_ in positions:
            records.add(x, y, number, properties.get(class_field), properties.get("class_index"))
    return records


_CSV_COLUMNS = (("x", "y"), ("lon", "lat"), ("col", "row"))


def _read_csv(
    path: Path, points_crs: _CoordinateSystem | None, image_crs: CRS | None, class_field: str
) -> _PointRecords:
    records = _PointRecords(unit="line")
    try:
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            header = [name.strip().lower() for name in next(reader, [])]
            x_name, y_name = next(((x, y) for x, y in _CSV_COLUMNS if x in header and y in header), ("", ""))
            if not x_name or not ({class_field, "class_index"} & set(header)):
                raise PointsegError(
                    f"{path}: header {header}; expected columns x,y (or lon,lat, or col,row for pixel "
                    f"coordinates) and {class_field} (name) or class_index"
                )
            if x_name == "col":
                records.crs = _choose_crs(path, PIXEL_COORDINATES, None, points_crs)
            else:
                default = _WGS84 if x_name == "lon" else image_crs
                records.crs = _choose_crs(path, None, default, points_crs)
            x_at, y_at = header.index(x_name), header.index(y_name)
            name_at = header.index(class_field) if class_field in header else None
            index_at = header.index("class_index") if "class_index" in header else None
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                row += [""] * (len(header) - len(row))
                try:
                    x, y = float(row[x_at]), float(row[y_at])
                except ValueError as error:
                    raise PointsegError(
                        f"{path}: line {reader.line_num}: {x_name},{y_name} = {row[x_at]!r},{row[y_at]!r}; "
                        "expected numbers"
                    ) from error
                name = (row[name_at].strip() or None) if name_at is not None else None
                index = (row[index_at].strip() or None) if index_at is not None else None
                records.add(x, y, reader.line_num, name, index)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise PointsegError(f"{path}: not readable as CSV ({error})") from error
    return records


def _read_geopackage(
    path: Path, points_crs: _CoordinateSystem | None, image_crs: CRS | None, class_field: str
) -> _PointRecords:
    """Read the one point layer of a GeoPackage through pyogrio (GDAL decodes the geometries)."""
    try:
        layers = [str(name) for name, kind in pyogrio.list_layers(path) if "Point" in str(kind)]
        if len(layers) != 1:
            raise PointsegError(
                f"{path}: {len(layers)} point layers ({', '.join(layers) or 'none'}); expected exactly one "
                "layer of Point or MultiPoint features"
            )
        meta, _, geometries, columns = pyogrio.raw.read(path, layer=layers[0], force_2d=True)
    except (DataSourceError, DataLayerError) as error:
        raise PointsegError(f"{path}: not readable as a GeoPackage ({error})") from error
    fields = [str(name).lower() for name in meta["fields"]]
    if not ({class_field, "class_index"} & set(fields)):
        raise PointsegError(
            f"{path}: layer '{layers[0]}' has fields {fields}; expected {class_field} or class_index"
        )
    names = columns[fields.index(class_field)] if class_field in fields else [None] * len(geometries)
    indices = columns[fields.index("class_index")] if "class_index" in fields else [None] * len(geometries)
    records = _PointRecords(unit="feature")
    declared = _parse_crs(meta["crs"], f"{path}: layer CRS") if meta["crs"] else None
    records.crs = _choose_crs(path, declared, image_crs, points_crs)
    for number, (geometry, name, index) in enumerate(
        zip(_as_geojson_geometries(geometries, meta["geometry_type"]), names, indices, strict=True), start=1
    ):
        for x, y, *_ in _positions(geometry, f"{path}: feature {number}"):
            records.add(x, y, number, name, index)
    return records


def _as_geojson_geometries(geometries: np.ndarray, geometry_type: str) -> list[Any]:
    """Turn WKB geometries, as pyogrio reads them, into GeoJSON geometries, with GDAL's GeoJSON writer.

    The coordinates are copied unchanged (the CRS is the layer's, read separately).
    """
    if not len(geometries):
        return []
    with tempfile.TemporaryDirectory(prefix="pointseg-") as folder, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'crs' was not provided")
        converted = Path(folder) / "layer.geojson"
        pyogrio.raw.write(
            converted,
            geometry=geometries,
            field_data=[],
            fields=[],
            geometry_type=geometry_type,
            driver="GeoJSON",
        )
        return [feature.get("geometry") for feature in json.loads(converted.read_text())["features"]]


def _positions(geometry: Any, where: str) -> list[list[Any]]:
    """The ``[x, y]`` positions of a GeoJSON Point or MultiPoint geometry.

    Raises:
        PointsegError: naming ``where`` for any other geometry, or malformed coordinates.
    """
    kind = geometry.get("type") if isinstance(geometry, dict) else None
    coordinates = geometry.get("coordinates") if isinstance(geometry, dict) else None
    if kind == "Point":
        coordinates = [coordinates]
    elif kind != "MultiPoint":
        raise PointsegError(f"{where} has geometry {kind!r}; expected Point or MultiPoint")
    positions = coordinates or []
    if not isinstance(positions, list):
        raise PointsegError(f"{where} has coordinates {coordinates!r}; expected a list of [x, y]")
    for position in positions:
        if (
            not isinstance(position, list)
            or len(position) < 2
            or not all(isinstance(v, (int, float)) for v in position[:2])
        ):
            raise PointsegError(f"{where} has coordinates {position!r}; expected [x, y]")
    return positions


def _read_points_file(
    path: Path, points_crs: _CoordinateSystem | None, image_crs: CRS | None, class_field: str = "class"
) -> _PointRecords:
    if not path.is_file():
        raise PointsegError(f"{path}: no such file")
    suffix = path.suffix.lower()
    class_field = class_field.strip().lower()
    if suffix in (".geojson", ".json"):
        return _read_geojson(path, points_crs, class_field)
    if suffix == ".csv":
        return _read_csv(path, points_crs, image_crs, class_field)
    if suffix == ".gpkg":
        return _read_geopackage(path, points_crs, image_crs, class_field)
    raise PointsegError(f"{path}: unknown points file type {suffix!r}; expected one of {POINT_FILE_SUFFIXES}")


def _class_index(name: Any, index: Any, schema: ClassSchema) -> int:
    """Resolve a point's ``class`` name and/or ``class_index`` to a label.

    Returns:
        The label, or -1 if neither is given, either is not in the schema, or they disagree.
    """
    labels = set()
    if not _is_missing(index):
        try:
            value = int(index) if isinstance(index, str) else index
        except ValueError:
            return -1
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, np.integer))
            or not 0 <= value < schema.num_classes
        ):
            return -1
        labels.add(int(value))
    if not _is_missing(name):
        names = [class_key(known) for known in schema.classes]
        if class_key(name) not in names:
            return -1
        labels.add(names.index(class_key(name)))
    return labels.pop() if len(labels) == 1 else -1


def class_key(name: Any) -> str:
    """The form class names are compared in: text with surrounding spaces trimmed, case folded."""
    return str(name).strip().casefold()


def read_point_classes(path: str | Path, class_field: str = "class") -> list[tuple[Any, Any]]:
    """Return the ``(class name, class_index)`` of each point of a points file, in file order.

    Either value is ``None`` where the point has none.

    Args:
        path: GeoJSON, CSV or GeoPackage file, as :func:`import_points` reads it.
        class_field: Attribute holding the class name (matched case-insensitively).

    Raises:
        PointsegError: if the file cannot be read or has neither the attribute nor ``class_index``.
    """
    records = _read_points_file(Path(path), None, None, class_field)
    return list(zip(records.names, records.indices, strict=True))


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class ImportReport:
    """What happened to each point of an imported file.

    Attributes:
        total: Points read from the file.
        kept: Points in the returned labels.
        lines_outside: Lines (CSV) or features (GeoJSON, GeoPackage) of points outside the image.
        lines_unknown_class: Lines of points whose class is not in the schema.
        lines_duplicate: Lines of points repeating an earlier point (same pixel, same class).
        lines_conflict: Lines of points on a pixel that points of different classes share.
        unit: What the numbers count: ``"line"`` or ``"feature"``.
    """

    total: int
    kept: int
    lines_outside: list[int] = field(default_factory=list)
    lines_unknown_class: list[int] = field(default_factory=list)
    lines_duplicate: list[int] = field(default_factory=list)
    lines_conflict: list[int] = field(default_factory=list)
    unit: str = "line"

    @property
    def problems(self) -> list[tuple[str, list[int]]]:
        """``(description, lines)`` for each kind of problem found, in a fixed order."""
        kinds = [
            ("outside the image", self.lines_outside),
            ("with an unknown class", self.lines_unknown_class),
            ("duplicate (same pixel and class as an earlier point)", self.lines_duplicate),
            ("conflicting (different classes on one pixel)", self.lines_conflict),
        ]
        return [(kind, lines) for kind, lines in kinds if lines]

    def format_lines(self, lines: list[int]) -> str:
        """Return e.g. ``"lines 2, 5, 9"``, showing the first ten numbers and a count of the rest."""
        shown = ", ".join(map(str, lines[:_MAX_LINES_SHOWN]))
        more = f" and {len(lines) - _MAX_LINES_SHOWN} more" if len(lines) > _MAX_LINES_SHOWN else ""
        return f"{self.unit}{'s' if len(lines) > 1 else ''} {shown}{more}"

    def summary(self) -> str:
        """Return one line: points kept, and each kind of point dropped with its count and lines."""
        dropped = "; ".join(
            f"{len(lines)} {kind} ({self.format_lines(lines)})" for kind, lines in self.problems
        )
        return f"kept {self.kept} of {self.total} points" + (f"; dropped {dropped}" if dropped else "")


def import_points(
    points_path: str | Path,
    image_path: str | Path,
    schema: ClassSchema,
    points_crs: str | None = None,
    skip_invalid: bool = False,
    class_field: str = "class",
) -> tuple[PointLabels, ImportReport]:
    """Read point labels made for an image and place them on its pixel grid.

    Supported files: GeoJSON (``.geojson``/``.json``; Point or MultiPoint features with a
    ``class`` name or ``class_index`` property; CRS from the legacy ``crs`` member, pixel
    coordinates if marked ``"pointseg": {"coordinates": "pixel"}``, else EPSG:4326), CSV (columns
    ``x,y``, ``lon,lat`` or ``col,row`` and ``class`` or ``class_index``; ``x,y`` are in the
    image's CRS, ``lon,lat`` in EPSG:4326, ``col,row`` in pixels) and GeoPackage (one point layer).
    Points in another CRS than the image's are reprojected; a coordinate falls in the pixel that
    contains it.

    Args:
        points_path: Points file.
        image_path: Raster the points label.
        schema: Classes the names and indices refer to.
        points_crs: CRS of files that do not declare one (CSV ``x,y`` or ``lon,lat`` columns,
            GeoJSON without a ``crs`` member), e.g. ``"EPSG:32633"``, or ``"pixel"``.
        skip_invalid: Drop points outside the image, with unknown classes or on a shared pixel
            (keeping one of each duplicate, and none of a conflict) instead of failing.
        class_field: Attribute (CSV column, GeoJSON property, GeoPackage field) with the class
            name, matched case-insensitively; names match the schema's with case and surrounding
            spaces ignored.

    Returns:
        The points, and a report of what was kept and dropped, by line or feature number.

    Raises:
        PointsegError: if a file cannot be read; if the points are in a CRS but the image has
            none; and, unless ``skip_invalid``, if any point is invalid. The message names the
            points file, each kind of problem with its count and first line numbers, and what
            was expected.
    """
    points_path = Path(points_path)
    info = raster_info(image_path)
    given_crs = None if points_crs is None else _parse_crs(points_crs, f"{points_path}: points CRS")
    records = _read_points_file(points_path, given_crs, info.crs, class_field)
    x = np.asarray(records.x, dtype=np.float64)
    y = np.asarray(records.y, dtype=np.float64)
    lines = np.asarray(records.lines, dtype=np.int64)
    if records.crs is not None:
        if info.crs is None or info.transform is None:
            raise PointsegError(
                f"{points_path}: points are in {_crs_name(records.crs)}, but {info.path} has no CRS; "
                "expected pixel coordinates (CSV col,row columns, a GeoJSON written by pointseg for "
                f"this image, or points CRS '{PIXEL_COORDINATES}')"
            )
        if len(x) and records.crs != info.crs:
            x, y = (np.asarray(v) for v in warp_transform(records.crs, info.crs, x, y))
        x, y = _apply(~info.transform, x, y)
    with np.errstate(invalid="ignore"):  # NaN coordinates are outside
        outside = ~((x >= 0) & (x < info.width) & (y >= 0) & (y < info.height))
    cols = np.floor(np.where(outside, -1, x)).astype(np.int64)
    rows = np.floor(np.where(outside, -1, y)).astype(np.int64)
    classes = np.array(
        [
            _class_index(name, index, schema)
            for name, index in zip(records.names, records.indices, strict=True)
        ],
        dtype=np.int64,
    )
    unknown = classes < 0
    duplicate, conflict = _shared_pixels(rows * info.width + cols, classes, outside | unknown)

    report = ImportReport(
        total=len(lines),
        kept=int(np.count_nonzero(~(outside | unknown | duplicate | conflict))),
        lines_outside=lines[outside].tolist(),
        lines_unknown_class=lines[unknown].tolist(),
        lines_duplicate=lines[duplicate].tolist(),
        lines_conflict=lines[conflict].tolist(),
        unit=records.unit,
    )
    if report.problems and not skip_invalid:
        details = {
            "outside the image": _expected_bounds(info, records, x, y, outside),
            "with an unknown class": _expected_classes(schema, records, unknown),
            "duplicate (same pixel and class as an earlier point)": "expected at most one point per pixel",
            "conflicting (different classes on one pixel)": "expected one class per pixel",
        }
        found = "; ".join(
            f"{len(lines)} point(s) {kind} ({report.format_lines(lines)}): {details[kind]}"
            for kind, lines in report.problems
        )
        raise PointsegError(
            f"{points_path}: {report.total - report.kept} of {report.total} points are invalid for "
            f"{info.path}: {found}. Fix the file, or skip invalid points (--skip-invalid) to drop them"
        )
    keep = ~(outside | unknown | duplicate | conflict)
    labels = PointLabels(rows[keep], cols[keep], classes[keep], info.height, info.width)
    return labels, report


def _shared_pixels(
    keys: np.ndarray, classes: np.ndarray, excluded: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Find points sharing a pixel: repeats of an earlier point of the same class, and conflicts.

    Returns:
        ``(duplicate, conflict)`` boolean ``(N,)`` arrays. On a pixel whose points all have one
        class, all but the first are duplicates; on a pixel with several classes all are conflicts.
    """
    duplicate = np.zeros(len(keys), dtype=bool)
    conflict = np.zeros(len(keys), dtype=bool)
    candidates = np.flatnonzero(~excluded)
    order = candidates[np.argsort(keys[candidates], kind="stable")]
    if len(order) == 0:
        return duplicate, conflict
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    sorted_classes = classes[order]
    mixed = np.minimum.reduceat(sorted_classes, starts) != np.maximum.reduceat(sorted_classes, starts)
    group_of = np.cumsum(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]) - 1
    first = np.zeros(len(order), dtype=bool)
    first[starts] = True
    conflict[order] = mixed[group_of]
    duplicate[order] = ~mixed[group_of] & ~first
    return duplicate, conflict


def _apply(transform: Affine, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply an affine transform to ``(N,)`` coordinate arrays."""
    a, b, c, d, e, f = transform[:6]
    return a * x + b * y + c, d * x + e * y + f


def _expected_bounds(
    info: RasterInfo, records: _PointRecords, col: np.ndarray, row: np.ndarray, outside: np.ndarray
) -> str:
    """Say where points were expected, and where the first point outside the image fell."""
    expected = f"expected pixel columns 0..{info.width - 1} and rows 0..{info.height - 1}"
    if info.transform is not None and info.crs is not None:
        (left, right), (top, bottom) = _apply(
            info.transform, np.array([0, info.width]), np.array([0, info.height])
        )
        expected += (
            f" (in {info.crs.to_string()}: x {min(left, right):.10g}..{max(left, right):.10g}, "
            f"y {min(top, bottom):.10g}..{max(top, bottom):.10g})"
        )
    for at in np.flatnonzero(outside)[:1]:
        expected += (
            f"; {records.unit} {records.lines[at]} at ({records.x[at]:.10g}, {records.y[at]:.10g}) in "
            f"{_crs_name(records.crs)} falls at pixel column {col[at]:.6g}, row {row[at]:.6g}"
        )
    return expected


def _expected_classes(schema: ClassSchema, records: _PointRecords, unknown: np.ndarray) -> str:
    found = []
    for at in np.flatnonzero(unknown):
        text = ", ".join(
            f"{key} {value!r}"
            for key, value in (("class", records.names[at]), ("class_index", records.indices[at]))
            if value is not None
        )
        text = text or "neither class nor class_index"
        if text not in found:
            found.append(text)
        if len(found) > _MAX_LINES_SHOWN:
            break
    shown = "; ".join(found[:_MAX_LINES_SHOWN]) + (" ..." if len(found) > _MAX_LINES_SHOWN else "")
    known = ", ".join(f"{i}={name}" for i, name in enumerate(schema.classes))
    return f"found {shown}; expected a class name or class_index of schema '{schema.name}': {known}"
