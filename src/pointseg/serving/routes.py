"""Every route of the API (``CONTRACT.md`` beside this file describes them for clients).

Bad input is always a 4xx with a JSON ``{"detail": ...}`` that says what was wrong and what was
expected; it is judged in this order:

1. body size and pace, while it arrives (:class:`~pointseg.serving.body_limit.BodyLimits`): 413,
   or 408 for an upload that arrives too slowly;
2. the multipart ``file`` field is there and not empty: 400;
3. magic bytes (PNG, JPEG, TIFF or BigTIFF): 415;
4. PNG chunk structure and CRCs, then GDAL opens the header: 422 if truncated or corrupt;
5. width x height from the header, before any pixel is decoded: 413 (decompression bombs);
6. band count against the model's, then pixel decoding during prediction: 422.

Only a complete upload takes a place in the work queue (:mod:`pointseg.serving.jobs`), so slow
clients cannot fill it; at most ``max_queue`` uploads per process wait or run, one more is
answered 503 with ``Retry-After`` at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from pointseg.serving.jobs import JobBudget, JobError, WorkQueue
from pointseg.serving.openapi import NOT_LOADED, UPLOAD_BODY, UPLOAD_ERRORS, Status
from pointseg.serving.service import ModelService, OutputFormat
from pointseg.serving.uploads import Upload, UploadError, upload_limit_message

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
NOT_READY_RETRY_SECONDS = 5
INTERNAL_ERROR = "internal error; the server log has the details"
NO_MODEL = "no model loaded: the server was started without --checkpoint"
PLACEHOLDER_PAGE = (
    "<!doctype html><meta charset=utf-8><title>pointseg</title>"
    "<p>The pointseg page is not installed yet. The API is documented at <a href=/docs>/docs</a>.</p>"
)
Job = Callable[[ModelService, Upload, JobBudget], Response]

router = APIRouter()


@router.get("/", include_in_schema=False)
async def page(request: Request) -> Response:
    """The browser page (a placeholder until ``static/index.html`` exists); /label's without a model."""
    if request.app.state.settings.checkpoint is None:
        from pointseg.serving.project_routes import label_page

        return label_page()
    index = STATIC_DIR / "index.html"
    return FileResponse(index) if index.is_file() else HTMLResponse(PLACEHOLDER_PAGE)


@router.get("/health")
async def health() -> Status:
    """The process is alive."""
    return Status(status="ok")


@router.get("/ready", responses=NOT_LOADED)
async def ready(request: Request) -> Status:
    """The model is loaded and warmed up (a server without a model is ready at once)."""
    if request.app.state.settings.checkpoint is not None:
        ready_service(request)
    return Status(status="ready")


# Probes often send HEAD: the same answers without a body (left out of the OpenAPI schema).
router.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/ready", ready, methods=["HEAD"], include_in_schema=False)


@router.get("/model", responses=NOT_LOADED)
async def model(request: Request) -> dict[str, Any]:
    """Classes, colours, input bands, training settings, validation mIoU and the server's limits."""
    return ready_service(request).metadata()


@router.post(
    "/predict",
    openapi_extra=UPLOAD_BODY,
    response_class=Response,
    responses={
        200: {
            "content": {"image/png": {}, "image/tiff": {}, "application/json": {}},
            "description": "The class map (see the `format` parameter).",
        },
        **UPLOAD_ERRORS,
    },
)
async def predict(
    request: Request,
    output_format: Annotated[
        OutputFormat,
        Query(
            alias="format",
            description="png: RGBA colour mask with an `X-Pointseg-Shares` header; geotiff: class indices "
            "with a colour table and the input's CRS; json: pixel counts and shares per class.",
        ),
    ] = "png",
) -> Response:
    """Predict the land-cover class of every pixel of an uploaded image."""
    return await process_upload(
        request, lambda service, upload, budget: service.predict(upload, output_format, budget)
    )


@router.post(
    "/preview",
    openapi_extra=UPLOAD_BODY,
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "RGB rendering of the input."},
        **UPLOAD_ERRORS,
    },
)
async def preview(request: Request) -> Response:
    """Render an uploaded image as an RGB PNG (for TIFFs, which browsers cannot show)."""
    return await process_upload(request, ModelService.preview)


async def process_upload(request: Request, job: Job) -> Response:
    """Read the upload, then take a place in the work queue and run ``job`` on it in a worker thread.

    Raises:
        HTTPException: 503 while the model loads; 500 (logged, with the upload's name) for an
            unexpected error in ``job``.
        UploadError: for bad input.
        JobError: 503 when the queue is full or the job was stopped, 504 past ``request_timeout``.
    """
    service = ready_service(request)
    upload = await read_upload(request, service.settings.max_upload_bytes)
    queue: WorkQueue = request.app.state.queue
    async with queue.admit():
        budget = JobBudget(service.settings.request_timeout)
        try:
            return await queue.run(budget, request.is_disconnected, job, service, upload, budget)
        except (UploadError, JobError):
            raise
        except Exception as error:
            logger.exception("%s %s failed on %s", request.method, request.url.path, upload.name)
            raise HTTPException(500, INTERNAL_ERROR) from error


def ready_service(request: Request) -> ModelService:
    """The loaded model.

    Raises:
        HTTPException: 404 when the server has no model (started without ``--checkpoint``), 503
            with ``Retry-After`` while the model is loading.
    """
    service: ModelService | None = request.app.state.service
    if request.app.state.settings.checkpoint is None:
        raise HTTPException(404, NO_MODEL)
    if service is None:
        raise HTTPException(
            503,
            "the model is still loading; try again shortly",
            headers={"Retry-After": str(NOT_READY_RETRY_SECONDS)},
        )
    return service


async def read_upload(request: Request, max_upload_bytes: int) -> Upload:
    """Read the multipart ``file`` field and recognise it by its magic bytes.

    Raises:
        UploadError: 400 for no ``file`` field, a text field or an empty file, 413 for a file over
            ``max_upload_bytes`` (within the framing allowance), 415 for a non-image.
    """
    upload, _ = await read_upload_form(request, max_upload_bytes)
    return upload


async def read_upload_form(request: Request, max_upload_bytes: int) -> tuple[Upload, dict[str, str]]:
    """Read the multipart ``file`` field as :func:`read_upload` does, and the form's text fields.

    Raises:
        UploadError: as :func:`read_upload`.
    """
    try:
        async with request.form(max_files=1, max_fields=16) as form:
            fields = {key: value for key, value in form.items() if isinstance(value, str)}
            file = form.get("file")
            if file is None:
                raise UploadError(
                    400,
                    "no 'file' field: send the image as the multipart/form-data field 'file' "
                    "(e.g. curl -F file=@image.tif)",
                )
            if not isinstance(file, UploadFile):
                raise UploadError(400, "the 'file' field holds text, not a file; send the image as a file")
            data = await file.read()
            filename = file.filename
    except ClientDisconnect as error:
        raise UploadError(400, "the upload ended before it was complete (the client disconnected)") from error
    if len(data) > max_upload_bytes:
        raise UploadError(413, upload_limit_message(max_upload_bytes))
    return Upload.sniff(data, filename), fields
