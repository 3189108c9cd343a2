"""The routes of the labelling workspace: ``/label`` and the JSON API under ``/api`` (see ``CONTRACT.md``).

Projects, their classes and points (:mod:`pointseg.serving.workspace`), views of the image, map
and confidence (:mod:`pointseg.serving.raster_views`), training jobs
(:mod:`pointseg.serving.training_queue`, :mod:`pointseg.serving.project_training`) and exports.
Every error is a 4xx with ``{"detail": ...}``: 404 for what does not exist (or no workspace),
409 for a conflict with the project's state, 422 for values that cannot be used, 400 for a body
or query that does not parse. Blocking work (files, rasters) runs in FastAPI's thread pool.
"""

from __future__ import annotations

import functools
import io
import json
import zipfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from pointseg.checkpoint import read_checkpoint
from pointseg.datasets.registry import BUILTIN_SCHEMAS
from pointseg.errors import PointsegError
from pointseg.gis_outputs import write_class_polygons
from pointseg.schema import ClassSchema
from pointseg.serving import outputs
from pointseg.serving.openapi import UPLOAD_ERRORS, ErrorBody
from pointseg.serving.project_training import (
    MAX_EPOCHS,
    TrainingDefaults,
    damaged_run,
    last_checkpoint,
    run_files,
    run_summary,
    trainable_counts,
)
from pointseg.serving.raster_views import ViewWindow, confidence_view, image_view, map_view
from pointseg.serving.routes import STATIC_DIR, read_upload_form
from pointseg.serving.settings import ServeSettings
from pointseg.serving.training_queue import TrainingQueue
from pointseg.serving.uploads import open_upload
from pointseg.serving.workspace import (
    ClassesUpdate,
    Name,
    NewPoint,
    NewProject,
    PointChange,
    Project,
    Workspace,
    WorkspaceError,
)

NO_WORKSPACE = "no workspace: this server was started without --workspace DIR"
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "A body or query that does not parse."},
    404: {"model": ErrorBody, "description": "No such project, point, run or job (or no workspace)."},
    409: {"model": ErrorBody, "description": "In conflict with the project's state."},
    422: {
        "model": ErrorBody,
        "description": "Values that cannot be used (outside the image, unknown class).",
    },
}
PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "A PNG of the window."}
}
NEW_PROJECT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": NewProject.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["name", "file"],
                    "properties": {
                        "name": {"type": "string"},
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "A GeoTIFF, PNG or JPEG image (checked as for /predict).",
                        },
                    },
                }
            },
        },
    }
}

router = APIRouter()


class TrainRequest(BaseModel):
    """``POST /api/projects/{id}/train``; both fields are optional."""

    model_config = ConfigDict(extra="forbid")

    epochs: int | None = Field(default=None, ge=1, le=MAX_EPOCHS)
    warm_start: bool | None = Field(
        default=None, description="Start from the last run's network (default: true when a run exists)."
    )


def workspace(request: Request) -> Workspace:
    """The server's workspace.

    Raises:
        WorkspaceError: 404 when the server has none.
    """
    found: Workspace | None = getattr(request.app.state, "workspace", None)
    if found is None:
        raise WorkspaceError(404, NO_WORKSPACE)
    return found


def training_queue(request: Request) -> TrainingQueue:
    """The server's training queue (there is one with every workspace)."""
    workspace(request)
    queue: TrainingQueue = request.app.state.training
    return queue


def project(project_id: str, request: Request) -> Project:
    """The project named in the path.

    Raises:
        WorkspaceError: 404 for an unknown project or a folder deleted underneath.
    """
    return workspace(request).project(project_id)


ProjectDep = Annotated[Project, Depends(project)]


def label_page() -> Response:
    """The labelling page, ``static/label.html``."""
    return FileResponse(STATIC_DIR / "label.html")


@router.get("/label", include_in_schema=False)
def label(request: Request) -> Response:
    """The labelling page, when the server has a workspace."""
    workspace(request)
    return label_page()


router.add_api_route("/label", label, methods=["HEAD"], include_in_schema=False)


@router.get("/api/images", responses=ERRORS)
def images(request: Request) -> dict[str, list[dict[str, Any]]]:
    """The rasters below the workspace folder (not in hidden folders): path, width, height, bands, CRS."""
    return {"images": workspace(request).images()}


@router.get("/api/class-sets", responses=ERRORS)
def class_sets(request: Request) -> dict[str, list[dict[str, Any]]]:
    """Class lists to start a project from: the built-in datasets', and the workspace's checkpoints'."""
    sets = [{"source": name, "classes": classes_of(schema)} for name, schema in BUILTIN_SCHEMAS.items()]
    for relative, path in workspace(request).checkpoints().items():
        try:
            status = path.stat()
        except OSError:
            continue
        classes = checkpoint_classes(path, status.st_size, status.st_mtime_ns)
        if classes is not None:
            sets.append({"source": f"checkpoint:{relative}", "classes": list(classes)})
    return {"class_sets": sets}


@functools.lru_cache(maxsize=256)
def checkpoint_classes(path: Path, size: int, modified_ns: int) -> tuple[dict[str, str], ...] | None:
    """The classes of a checkpoint (``None`` if it is no pointseg checkpoint), read once per file version."""
    try:
        schema = ClassSchema.from_dict(read_checkpoint(path)["hyper_parameters"]["schema"], str(path))
    except PointsegError:
        return None
    return tuple(classes_of(schema))


def classes_of(schema: ClassSchema) -> list[dict[str, str]]:
    """``[{"name", "color": "#RRGGBB"}]`` of a schema."""
    return [{"name": entry["name"], "color": entry["color"]} for entry in schema.to_dict()["classes"]]


def describe_project(request: Request, found: Project) -> dict[str, Any]:
    """The project's JSON: ``project.json``'s fields, points per class, finished runs and the active job."""
    runs = []
    for number in found.run_numbers():
        try:
            runs.append(run_summary(found.runs_folder / str(number)))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a run folder damaged by hand is left out
    queue = training_queue(request)
    job = queue.active(found.id)
    return {
        **found.record.model_dump(mode="json"),
        "points_per_class": found.points_per_class(),
        "runs": runs,
        "job": None if job is None else queue.describe(job),
    }


@router.get("/api/projects", responses=ERRORS)
def list_projects(request: Request) -> dict[str, list[dict[str, Any]]]:
    """Every project of the workspace, oldest first; one with damaged files is listed with its `error`.

    A project whose ``project.json`` cannot be read, or whose folder goes away during the listing,
    is left out; one whose points or runs cannot be read is listed with ``project.json``'s fields
    and ``"error"``: what is wrong with it. Either way the other projects stay listed.
    """
    listed = []
    for found in workspace(request).projects():
        try:
            listed.append(describe_project(request, found))
        except WorkspaceError as error:
            if error.status_code != 404:
                listed.append({**found.record.model_dump(mode="json"), "error": str(error)})
    return {"projects": listed}


@router.post(
    "/api/projects",
    status_code=201,
    openapi_extra=NEW_PROJECT_BODY,
    responses={**ERRORS, 413: UPLOAD_ERRORS[413], 415: UPLOAD_ERRORS[415]},
)
async def create_project(request: Request) -> dict[str, Any]:
    """A new project: JSON ``{"name", "image"}`` for a workspace image, or a multipart upload (name, file)."""
    store = workspace(request)
    settings: ServeSettings = request.app.state.settings
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        upload, fields = await read_upload_form(request, settings.max_upload_bytes)
        try:
            name = TypeAdapter(Name).validate_python(fields.get("name", ""))
        except ValidationError as error:
            raise WorkspaceError(400, "the form needs a 'name' field of 1 to 100 characters") from error
        with open_upload(upload, settings.max_pixels):
            pass  # the checks of /predict: complete, decodable header, not too many pixels
        created = await run_in_threadpool(store.create_upload_project, name, upload.data, upload.driver)
    else:
        try:
            body = NewProject.model_validate_json(await request.body())
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors()
            )
            raise WorkspaceError(
                400, f'{problems}; expected JSON {{"name", "image"}} or a multipart upload'
            ) from error
        created = await run_in_threadpool(store.create_project, body)
    return describe_project(request, created)


@router.get("/api/projects/{project_id}", responses=ERRORS)
def get_project(request: Request, found: ProjectDep) -> dict[str, Any]:
    """A project: its image, classes, points per class, finished runs and active job."""
    return describe_project(request, found)


@router.put("/api/projects/{project_id}/classes", responses=ERRORS)
def put_classes(request: Request, found: ProjectDep, update: ClassesUpdate) -> dict[str, Any]:
    """Replace the class list; 409 if a class that has points would go (removed or renamed)."""
    found.set_classes(update)
    return describe_project(request, found)


@router.get("/api/projects/{project_id}/points", responses=ERRORS)
def get_points(found: ProjectDep) -> dict[str, Any]:
    """The points as a GeoJSON FeatureCollection (as ``points.geojson``)."""
    return found.collection()


@router.post("/api/projects/{project_id}/points", status_code=201, responses=ERRORS)
def add_point(found: ProjectDep, point: NewPoint) -> dict[str, Any]:
    """Add a point at full-resolution pixel coordinates; the answer is its GeoJSON Feature with its id."""
    return found.feature(found.add_point(point))


@router.patch("/api/projects/{project_id}/points/{point_id}", responses=ERRORS)
def change_point(found: ProjectDep, point_id: str, change: PointChange) -> dict[str, Any]:
    """Move and/or relabel a point."""
    return found.feature(found.change_point(point_id, change))


@router.delete("/api/projects/{project_id}/points/{point_id}", status_code=204, responses=ERRORS)
def delete_point(found: ProjectDep, point_id: str) -> Response:
    """Delete a point."""
    found.delete_point(point_id)
    return Response(status_code=204)


ViewQuery = Annotated[ViewWindow, Depends()]


@router.get("/api/projects/{project_id}/view.png", response_class=Response, responses={**PNG, **ERRORS})
def view(found: ProjectDep, window: ViewQuery) -> Response:
    """RGB rendering of a window of the image (bands 1-3, one 2-98 % stretch per image), `width` px wide."""
    return Response(image_view(found.image_path, window), media_type="image/png")


@router.get("/api/projects/{project_id}/map.png", response_class=Response, responses={**PNG, **ERRORS})
def map_png(found: ProjectDep, window: ViewQuery, run: int | None = None) -> Response:
    """A run's map (default: the last) in class colours, with `X-Pointseg-Shares` of the pixels shown."""
    class_map, _, schema = run_files(found.run_folder(run))
    png, shares = map_view(class_map, window, schema)
    return Response(png, media_type="image/png", headers={"X-Pointseg-Shares": outputs.shares_header(shares)})


@router.get("/api/projects/{project_id}/confidence.png", response_class=Response, responses={**PNG, **ERRORS})
def confidence_png(found: ProjectDep, window: ViewQuery, run: int | None = None) -> Response:
    """A run's confidence: black with alpha 255 * (1 - confidence), dark where the model is unsure."""
    _, confidence, _ = run_files(found.run_folder(run))
    return Response(confidence_view(confidence, window), media_type="image/png")


@router.post("/api/projects/{project_id}/train", status_code=202, responses=ERRORS)
def train(request: Request, found: ProjectDep, body: TrainRequest | None = None) -> dict[str, Any]:
    """Queue a training on the project's points; the answer is the job (poll `GET /api/jobs/{id}`)."""
    body = body or TrainRequest()
    trainable_counts(found)
    has_run = bool(found.run_numbers())
    warm_start = has_run if body.warm_start is None else body.warm_start
    if warm_start and not has_run:
        raise WorkspaceError(422, "warm_start: the project has no finished run to start from yet")
    if warm_start:
        last_checkpoint(found)  # a damaged last run: 409 now, not a failed job later
    defaults: TrainingDefaults = request.app.state.training_defaults
    epochs = body.epochs or (defaults.warm_epochs if warm_start else defaults.settings.epochs)
    queue = training_queue(request)
    return queue.describe(queue.submit(found.id, epochs, warm_start))


@router.get("/api/jobs/{job_id}", responses=ERRORS)
def get_job(request: Request, job_id: str) -> dict[str, Any]:
    """A training job: state, position in the queue, epoch, loss, held-out point accuracy, time left."""
    queue = training_queue(request)
    return queue.describe(queue.get(job_id))


@router.delete("/api/jobs/{job_id}", status_code=202, responses=ERRORS)
def cancel_job(request: Request, job_id: str) -> dict[str, Any]:
    """Cancel a job: a waiting one is removed, a running one stops at its next batch; 409 once finished."""
    queue = training_queue(request)
    return queue.describe(queue.cancel(job_id))


def attachment(name: str) -> dict[str, str]:
    """The ``Content-Disposition`` header of a download."""
    return {"Content-Disposition": f'attachment; filename="{name}"'}


@router.get("/api/projects/{project_id}/export/points.geojson", response_class=Response, responses=ERRORS)
def export_points(found: ProjectDep) -> Response:
    """The points file, for `pointseg points import` and `pointseg map --points`."""
    return Response(
        json.dumps(found.collection()),
        media_type="application/geo+json",
        headers=attachment("points.geojson"),
    )


@router.get("/api/projects/{project_id}/export/map.zip", response_class=Response, responses=ERRORS)
def export_map(
    request: Request, found: ProjectDep, run: int | None = None, polygons: bool = False
) -> Response:
    """A run's map GeoTIFF with its `.aux.xml` class names and `.qml` QGIS style (and `.gpkg` polygons)."""
    class_map, _, schema = run_files(found.run_folder(run))
    files = [class_map, Path(f"{class_map}.aux.xml"), class_map.with_suffix(".qml")]
    if polygons:
        gpkg = class_map.with_suffix(".gpkg")
        if not gpkg.is_file():
            defaults: TrainingDefaults = request.app.state.training_defaults
            write_class_polygons(class_map, gpkg, schema, defaults.settings.min_area)
        files.append(gpkg)
    buffer = io.BytesIO()
    try:
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in files:
                archive.write(path, path.name)
    except OSError as error:
        raise damaged_run(class_map.parent, error) from error
    name = f"{class_map.stem}_run{class_map.parent.name}.zip"
    return Response(buffer.getvalue(), media_type="application/zip", headers=attachment(name))


@router.get("/api/projects/{project_id}/export/checkpoint.ckpt", response_class=Response, responses=ERRORS)
def export_checkpoint(found: ProjectDep, run: int | None = None) -> Response:
    """A run's `last.ckpt`, for `pointseg predict --checkpoint` and `pointseg serve --checkpoint`."""
    path = last_checkpoint(found, run)
    return FileResponse(
        path, media_type="application/octet-stream", filename=f"run{path.parents[2].name}_last.ckpt"
    )
