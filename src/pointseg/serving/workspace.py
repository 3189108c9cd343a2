"""The labelling workspace on disk: the images of a folder, and the projects made on them.

``pointseg serve --workspace DIR`` offers the rasters below ``DIR`` and keeps each labelling
project in ``DIR/.pointseg/projects/<id>/``:

- ``project.json``: name, image (a raster below ``DIR``, or an upload kept as ``image.<ext>``),
  classes (name and colour) and creation time;
- ``points.geojson``: the clicked points, a GeoJSON FeatureCollection that ``pointseg points
  import`` and ``pointseg map --points`` read: pixel-centre coordinates in the image's CRS (or, for
  an image without one, pixel coordinates ``(col + 0.5, row + 0.5)`` marked as such), with the
  properties ``id``, ``class``, ``row`` and ``col``;
- ``runs/<n>/``: the finished trainings (see :mod:`pointseg.serving.project_training`).

Every file is written atomically (temporary name, then rename), after every change, and a new
project folder appears whole (built in a hidden staging folder, then renamed). Ids are made
by the server; a name sent by a client never becomes a path (an image is looked up among the
files found below ``DIR``), and nothing is read outside ``DIR``: files whose symbolic links lead
out of it are not offered, and a ``.pointseg`` that is a link is refused. A project folder
deleted underneath is a 404, never a 500, and no write recreates it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from affine import Affine
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from pointseg.errors import PointsegError
from pointseg.points import PIXEL_COORDINATES, class_key
from pointseg.raster import (
    IMAGE_SUFFIXES,
    RasterInfo,
    raster_info,
    remove_stale_work_files,
    work_tag,
)
from pointseg.runs import write_json
from pointseg.schema import ClassSchema, parse_color

STATE_FOLDER = ".pointseg"
"""The workspace's own folder inside ``DIR``; never offered as images."""
PROJECT_ID = re.compile(r"[0-9a-f]{12}")
MAX_IMAGES_LISTED = 1000
MAX_POINTS = 10_000
"""Points per project (a click is one point: far more than a person places)."""
UPLOAD_SUFFIXES = {"GTiff": ".tif", "PNG": ".png", "JPEG": ".jpg"}
RUN_RECORDS = ("report.json", "run.json")
"""The files that make a folder ``runs/<n>`` a finished run (written before its rename into place)."""

ClassName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]
HexColor = Annotated[str, StringConstraints(pattern=r"^#[0-9A-Fa-f]{6}$")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class WorkspaceError(PointsegError):
    """A request the workspace refuses, with the HTTP status that says why (404, 409, 422)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


class ClassSpec(BaseModel):
    """One class of a project: a name and a ``#RRGGBB`` colour."""

    model_config = ConfigDict(extra="forbid")

    name: ClassName
    color: HexColor


class ImageRecord(BaseModel):
    """The image of a project, as its header says.

    ``path`` is relative to the workspace folder (``source`` ``workspace``) or to the project
    folder (``upload``); ``transform`` is the pixel-to-CRS affine ``(a, b, c, d, e, f)`` when the
    image has a CRS.
    """

    source: Literal["workspace", "upload"]
    path: str
    width: int
    height: int
    bands: int
    crs: str | None
    transform: tuple[float, float, float, float, float, float] | None = None

    @classmethod
    def from_info(cls, source: Literal["workspace", "upload"], path: str, info: RasterInfo) -> ImageRecord:
        """The record of a raster read by :func:`pointseg.raster.raster_info`."""
        georeferenced = info.crs is not None and info.transform is not None
        return cls(
            source=source,
            path=path,
            width=info.width,
            height=info.height,
            bands=info.count,
            crs=info.crs.to_string() if georeferenced and info.crs is not None else None,
            transform=tuple(info.transform[:6]) if georeferenced and info.transform is not None else None,
        )


class ProjectRecord(BaseModel):
    """The content of ``project.json``."""

    id: str
    name: str
    image: ImageRecord
    classes: list[ClassSpec]
    created: str


class NewProject(BaseModel):
    """``POST /api/projects`` with JSON: a project on an image of the workspace."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    image: str = Field(description="A `path` listed by `GET /api/images`.")


class ClassesUpdate(BaseModel):
    """``PUT /api/projects/{id}/classes``: the whole class list, in order."""

    model_config = ConfigDict(extra="forbid")

    classes: list[ClassSpec] = Field(max_length=64)


class NewPoint(BaseModel):
    """``POST /api/projects/{id}/points``: a click at full-resolution pixel coordinates."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    row: float = Field(description="Row, in pixels from the top; the point labels the pixel floor(row).")
    col: float = Field(description="Column, in pixels from the left.")
    class_name: str = Field(alias="class", description="A class name of the project (case-insensitive).")


class PointChange(BaseModel):
    """``PATCH /api/projects/{id}/points/{pid}``: move and/or relabel a point."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    row: float | None = None
    col: float | None = None
    class_name: str | None = Field(default=None, alias="class")


@dataclass(frozen=True)
class Point:
    """One clicked pixel of a project's image."""

    id: str
    row: int
    col: int
    class_name: str


def class_schema(name: str, classes: list[ClassSpec]) -> ClassSchema:
    """A class schema (index masks) of a list of classes."""
    return ClassSchema(
        name=name,
        classes=tuple(c.name for c in classes),
        colors=tuple(parse_color(c.color, f"class {c.name!r}") for c in classes),
        mask_encoding="index",
    )


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_id(taken: set[str] | frozenset[str] = frozenset(), length: int = 12) -> str:
    """``length`` random hex digits not in ``taken``."""
    while (candidate := secrets.token_hex(length // 2)) in taken:
        continue
    return candidate


def state_folder_problem(root: Path) -> str | None:
    """Why ``root/.pointseg`` cannot keep the projects (it or its ``projects`` is a link), or ``None``.

    A link would put the projects, and every write, outside the workspace folder.
    """
    for folder in (root / STATE_FOLDER, root / STATE_FOLDER / "projects"):
        if folder.is_symlink():
            return (
                f"{folder} is a symbolic link (to {folder.resolve()}); the workspace keeps its projects "
                "inside its folder only: make it a real folder, or remove it"
            )
    return None


class Project:
    """One project folder; the workspace's lock guards every change."""

    def __init__(self, workspace: Workspace, folder: Path, record: ProjectRecord) -> None:
        self.workspace = workspace
        self.folder = folder
        self.record = record

    @property
    def id(self) -> str:
        """The project id (its folder's name)."""
        return self.record.id

    @property
    def image_path(self) -> Path:
        """The image file (symbolic links resolved).

        Raises:
            WorkspaceError: 422 when ``project.json``'s image path (edited by hand) leads outside the
                workspace folder (or, for an upload, outside the project folder).
        """
        base = self.workspace.root if self.record.image.source == "workspace" else self.folder.resolve()
        path = (base / self.record.image.path).resolve()
        if not path.is_relative_to(base):
            raise WorkspaceError(
                422,
                f"project {self.id}: project.json's image path {self.record.image.path!r} leads to {path}, "
                f"outside {base}; expected a file below it",
            )
        return path

    @property
    def points_path(self) -> Path:
        """``points.geojson``."""
        return self.folder / "points.geojson"

    @property
    def runs_folder(self) -> Path:
        """``runs/``, one numbered folder per finished training."""
        return self.folder / "runs"

    def require_folder(self) -> None:
        """Raise a 404 if the project folder was deleted underneath."""
        if not (self.folder / "project.json").is_file():
            raise WorkspaceError(
                404, f"project {self.id}: its folder {self.folder} was deleted or moved; it is gone"
            )

    def schema(self, classes: list[str] | None = None) -> ClassSchema:
        """The project's classes (or those of ``classes``, in project order) as a class schema."""
        chosen = [c for c in self.record.classes if classes is None or c.name in classes]
        return class_schema(f"project {self.record.name}", chosen)

    def points(self) -> list[Point]:
        """The points, read from ``points.geojson`` (none before the first click)."""
        self.require_folder()
        if not self.points_path.is_file():
            return []
        try:
            features = json.loads(self.points_path.read_text())["features"]
            return [
                Point(str(p["id"]), int(p["row"]), int(p["col"]), str(p["class"]))
                for p in (feature["properties"] for feature in features)
            ]
        except (OSError, ValueError, KeyError, TypeError, OverflowError) as error:  # Infinity: OverflowError
            self.require_folder()  # a folder deleted while reading is a 404, not a damaged file
            raise WorkspaceError(
                422,
                f"{self.points_path}: unreadable ({type(error).__name__}: {error}); expected the "
                "FeatureCollection the server writes, with the properties id, class, row and col",
            ) from error

    def points_per_class(self, points: list[Point] | None = None) -> dict[str, int]:
        """Points of each class, in class order."""
        points = self.points() if points is None else points
        return {c.name: sum(p.class_name == c.name for p in points) for c in self.record.classes}

    def feature(self, point: Point) -> dict[str, Any]:
        """A point as a GeoJSON Feature at its pixel centre, in the image's CRS (or pixels)."""
        x, y = point.col + 0.5, point.row + 0.5
        if self.record.image.transform is not None:
            x, y = Affine(*self.record.image.transform) @ (x, y)
        return {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [x, y]},
            "properties": {"id": point.id, "class": point.class_name, "row": point.row, "col": point.col},
        }

    def collection(self, points: list[Point] | None = None) -> dict[str, Any]:
        """The points as the FeatureCollection written to ``points.geojson``."""
        points = self.points() if points is None else points
        collection: dict[str, Any] = {"type": "FeatureCollection"}
        if self.record.image.crs is None:
            collection.update(crs=None, pointseg={"coordinates": PIXEL_COORDINATES})
        else:
            collection["crs"] = {"type": "name", "properties": {"name": self.record.image.crs}}
        collection["features"] = [self.feature(point) for point in points]
        return collection

    def _write_points(self, points: list[Point]) -> None:
        self.require_folder()
        write_json(self.points_path, self.collection(points))

    def _pixel(self, row: float, col: float) -> tuple[int, int]:
        image = self.record.image
        if not (
            math.isfinite(row) and math.isfinite(col) and 0 <= row < image.height and 0 <= col < image.width
        ):
            raise WorkspaceError(
                422,
                f"point at row {row:g}, col {col:g} is outside the image; expected rows 0 to "
                f"{image.height} and columns 0 to {image.width} (exclusive)",
            )
        return math.floor(row), math.floor(col)

    def _class_name(self, name: str) -> str:
        known = {class_key(c.name): c.name for c in self.record.classes}
        if class_key(name) not in known:
            listed = ", ".join(c.name for c in self.record.classes) or "none yet"
            raise WorkspaceError(
                422, f"class {name!r} is not a class of this project; expected one of: {listed}"
            )
        return known[class_key(name)]

    @staticmethod
    def _check_free(points: list[Point], row: int, col: int, moving: str | None = None) -> None:
        taken = next((p for p in points if (p.row, p.col) == (row, col) and p.id != moving), None)
        if taken is not None:
            raise WorkspaceError(
                409,
                f"pixel row {row}, col {col} already has point {taken.id} ({taken.class_name}); "
                "move or delete that point instead",
            )

    def add_point(self, request: NewPoint) -> Point:
        """Add a point and rewrite ``points.geojson``.

        Raises:
            WorkspaceError: 422 outside the image or for an unknown class, 409 on a pixel that
                already has a point, 404 if the project is gone.
        """
        with self.workspace.lock:
            self._reload()
            points = self.points()
            if len(points) >= MAX_POINTS:
                raise WorkspaceError(422, f"the project has {len(points)} points, the most one can hold")
            row, col = self._pixel(request.row, request.col)
            point = Point(new_id({p.id for p in points}, 8), row, col, self._class_name(request.class_name))
            self._check_free(points, row, col)
            self._write_points([*points, point])
            return point

    def change_point(self, point_id: str, change: PointChange) -> Point:
        """Move and/or relabel a point and rewrite ``points.geojson``.

        Raises:
            WorkspaceError: 404 for an unknown point, else as :meth:`add_point`.
        """
        with self.workspace.lock:
            self._reload()
            points = self.points()
            old = self._find(points, point_id)
            row, col = self._pixel(
                old.row + 0.5 if change.row is None else change.row,
                old.col + 0.5 if change.col is None else change.col,
            )
            name = old.class_name if change.class_name is None else self._class_name(change.class_name)
            self._check_free(points, row, col, moving=point_id)
            point = Point(point_id, row, col, name)
            self._write_points([point if p.id == point_id else p for p in points])
            return point

    def delete_point(self, point_id: str) -> None:
        """Remove a point and rewrite ``points.geojson``.

        Raises:
            WorkspaceError: 404 for an unknown point or a project that is gone.
        """
        with self.workspace.lock:
            points = self.points()
            self._find(points, point_id)
            self._write_points([p for p in points if p.id != point_id])

    def _find(self, points: list[Point], point_id: str) -> Point:
        found = next((p for p in points if p.id == point_id), None)
        if found is None:
            raise WorkspaceError(404, f"project {self.id} has no point {point_id!r}")
        return found

    def set_classes(self, update: ClassesUpdate) -> None:
        """Replace the class list and rewrite ``project.json``.

        Raises:
            WorkspaceError: 422 for names that repeat (case-insensitive), 409 when a class that
                has points would disappear (removed or renamed).
        """
        with self.workspace.lock:
            self._reload()
            keys = [class_key(c.name) for c in update.classes]
            repeated = sorted({c.name for c in update.classes if keys.count(class_key(c.name)) > 1})
            if repeated:
                raise WorkspaceError(
                    422, f"class names repeat (case is ignored): {', '.join(repeated)}; expected unique names"
                )
            counts = self.points_per_class()
            kept = {c.name for c in update.classes}
            lost = {name: n for name, n in counts.items() if n and name not in kept}
            if lost:
                listed = ", ".join(f"{name} ({n} points)" for name, n in lost.items())
                raise WorkspaceError(
                    409,
                    f"class(es) {listed} would be removed or renamed but have points; delete or relabel "
                    "their points first",
                )
            self.record = self.record.model_copy(update={"classes": list(update.classes)})
            self.save()

    def _reload(self) -> None:
        """Re-read ``project.json``, under the lock: another request may have changed the classes."""
        self.require_folder()
        self.record = self.workspace.project(self.id).record

    def save(self) -> None:
        """Rewrite ``project.json``."""
        self.require_folder()
        write_json(self.folder / "project.json", self.record.model_dump(mode="json"))

    def run_numbers(self) -> list[int]:
        """The numbers of the finished runs (folders ``runs/<n>`` with the run's records), in order.

        Raises:
            WorkspaceError: 404 when the project folder is gone.
        """
        try:
            folders = list(self.runs_folder.iterdir()) if self.runs_folder.is_dir() else []
        except OSError:
            self.require_folder()
            return []
        return sorted(
            int(folder.name)
            for folder in folders
            if folder.name.isdigit() and all((folder / name).is_file() for name in RUN_RECORDS)
        )

    def run_folder(self, number: int | None) -> Path:
        """The folder of run ``number`` (default: the last run).

        Raises:
            WorkspaceError: 404 when the project has no such run (or none yet).
        """
        numbers = self.run_numbers()
        if not numbers:
            raise WorkspaceError(404, f"project {self.id} has no map yet: train it first")
        chosen = numbers[-1] if number is None else number
        if chosen not in numbers:
            raise WorkspaceError(404, f"project {self.id} has no run {chosen}; its runs are {numbers}")
        return self.runs_folder / str(chosen)


class Workspace:
    """The images below a folder and the projects kept in its ``.pointseg/projects``."""

    def __init__(self, root: Path) -> None:
        """Open the workspace of ``root``.

        Raises:
            PointsegError: when its state folder is a symbolic link (see :func:`state_folder_problem`).
        """
        self.root = root.resolve()
        problem = state_folder_problem(self.root)
        if problem is not None:
            raise PointsegError(problem)
        self.projects_folder = self.root / STATE_FOLDER / "projects"
        self.lock = threading.RLock()

    def inside(self, path: Path) -> bool:
        """Whether ``path``, its symbolic links resolved, lies below the workspace folder."""
        return path.resolve().is_relative_to(self.root)

    def _files(self, suffixes: Collection[str]) -> dict[str, Path]:
        """Files below the folder with one of ``suffixes`` (lower case), by relative path, sorted.

        Hidden files and folders (``.pointseg`` among them) are left out, and files whose symbolic
        links lead outside the folder; the walk stops at :data:`MAX_IMAGES_LISTED` files.
        """
        found: dict[str, Path] = {}
        for folder, subfolders, files in os.walk(self.root):
            subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
            for name in sorted(files):
                path = Path(folder) / name
                if (
                    not name.startswith(".")
                    and path.suffix.lower() in suffixes
                    and path.is_file()
                    and self.inside(path)
                ):
                    found[path.relative_to(self.root).as_posix()] = path
                    if len(found) >= MAX_IMAGES_LISTED:
                        return dict(sorted(found.items()))
        return dict(sorted(found.items()))

    def _image_files(self) -> dict[str, Path]:
        """Rasters below the folder by their path relative to it (see :meth:`_files`)."""
        return self._files(IMAGE_SUFFIXES)

    def images(self) -> list[dict[str, Any]]:
        """The readable rasters below the folder: path, width, height, bands and CRS."""
        listed = []
        for relative, path in self._image_files().items():
            try:
                info = raster_info(path)
            except PointsegError:
                continue
            listed.append(
                ImageRecord.from_info("workspace", relative, info).model_dump(exclude={"source", "transform"})
            )
        return listed

    def checkpoints(self) -> dict[str, Path]:
        """``.ckpt`` files below the folder by relative path (see :meth:`_files`)."""
        return self._files((".ckpt",))

    def project(self, project_id: str) -> Project:
        """The project with this id.

        Raises:
            WorkspaceError: 404 for an unknown id or a folder deleted underneath.
        """
        folder = self.projects_folder / project_id
        if (
            not PROJECT_ID.fullmatch(project_id)
            or folder.is_symlink()
            or not (folder / "project.json").is_file()
        ):
            raise WorkspaceError(404, f"no project {project_id!r} in this workspace")
        try:
            record = ProjectRecord.model_validate_json((folder / "project.json").read_text())
        except (OSError, ValueError) as error:  # ValidationError and UnicodeDecodeError are ValueErrors
            raise WorkspaceError(
                404, f"project {project_id}: project.json is unreadable ({error})"
            ) from error
        return Project(self, folder, record)

    def projects(self) -> Iterator[Project]:
        """Every readable project, oldest first."""
        folders = sorted(self.projects_folder.iterdir()) if self.projects_folder.is_dir() else []
        found = []
        for folder in folders:
            try:
                found.append(self.project(folder.name))
            except WorkspaceError:
                continue
        yield from sorted(found, key=lambda project: project.record.created)

    @contextlib.contextmanager
    def _staged_project(self) -> Iterator[tuple[str, Path]]:
        """A new id and an empty staging folder that becomes the project folder by one rename.

        The rename happens only if the block succeeds, so a failed or killed creation leaves no
        project folder; left-over staging folders of dead processes are removed first.
        """
        with self.lock:
            self.projects_folder.mkdir(parents=True, exist_ok=True)
            remove_stale_work_files(self.projects_folder)
            project_id = new_id(self._taken_ids())
            staging = self.projects_folder / f".{project_id}.{work_tag()}.staging"
            staging.mkdir()
            try:
                yield project_id, staging
                os.replace(staging, self.projects_folder / project_id)
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _write_record(folder: Path, project_id: str, name: str, image: ImageRecord) -> ProjectRecord:
        record = ProjectRecord(id=project_id, name=name, image=image, classes=[], created=now())
        write_json(folder / "project.json", record.model_dump(mode="json"))
        return record

    def create_project(self, request: NewProject) -> Project:
        """A project on a workspace image.

        Raises:
            WorkspaceError: 422 when ``request.image`` is not one of :meth:`images`.
        """
        path = self._image_files().get(request.image)
        if path is None:
            raise WorkspaceError(
                422,
                f"image {request.image!r} is not a raster of this workspace; expected a path listed by "
                "/api/images",
            )
        try:
            info = raster_info(path)
        except PointsegError as error:
            raise WorkspaceError(422, str(error)) from error
        image = ImageRecord.from_info("workspace", request.image, info)
        with self._staged_project() as (project_id, staging):
            record = self._write_record(staging, project_id, request.name, image)
        return Project(self, self.projects_folder / project_id, record)

    def create_upload_project(self, name: str, data: bytes, driver: str) -> Project:
        """A project on an uploaded image (already checked), kept as ``image.<ext>`` in the project folder."""
        with self._staged_project() as (project_id, staging):
            image = staging / f"image{UPLOAD_SUFFIXES[driver]}"
            image.write_bytes(data)
            try:
                info = raster_info(image)
            except PointsegError as error:
                raise WorkspaceError(422, str(error).replace(str(image), "the upload")) from error
            record = self._write_record(
                staging, project_id, name, ImageRecord.from_info("upload", image.name, info)
            )
        return Project(self, self.projects_folder / project_id, record)

    def _taken_ids(self) -> set[str]:
        return {p.name for p in self.projects_folder.iterdir()} if self.projects_folder.is_dir() else set()
