"""The HTTP API (``CONTRACT.md`` beside this file is the authoritative description of its routes).

Each worker process loads the checkpoint once, in the lifespan startup, and runs one tile through
the network before it reports ready. Bad input is always a 4xx with a JSON ``{"detail": ...}``
that says what was wrong and what was expected; it is judged in this order:

1. body size, while it arrives (:class:`~pointseg.serving.body_limit.BodySizeLimit`): 413;
2. the multipart ``file`` field is there and not empty: 400;
3. magic bytes (PNG, JPEG, TIFF or BigTIFF): 415;
4. PNG chunk structure and CRCs, then GDAL opens the header: 422 if truncated or corrupt;
5. width x height from the header, before any pixel is decoded: 413 (decompression bombs);
6. band count against the model's, then pixel decoding during prediction: 422.

Predictions run in a worker thread, one at a time per process, so the event loop keeps answering
``/health`` meanwhile. At most ``max_queue`` uploads per process are being read, waiting or
predicted; one more is answered 503 with ``Retry-After`` at once instead of piling up in memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, cast

import anyio
import torch
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from pointseg import __version__
from pointseg.checkpoint import TrainedModel, load_trained_model
from pointseg.errors import PointsegError
from pointseg.inference import LabelSink, Precision, RasterSource, SlidingWindowPredictor, torch_forward
from pointseg.plots import display_rgb
from pointseg.raster import read_pixels
from pointseg.schema import IGNORE_INDEX
from pointseg.serving import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_MB, outputs
from pointseg.serving.body_limit import BodySizeLimit
from pointseg.serving.uploads import Upload, UploadError, open_upload

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
MIB = 2**20
DEFAULT_MAX_UPLOAD_BYTES = DEFAULT_MAX_UPLOAD_MB * MIB
FORM_OVERHEAD_BYTES = 64 * 1024
"""Room for multipart framing (boundary, part headers) on top of a file of ``max_upload_bytes``."""
ENVIRONMENT_PREFIX = "POINTSEG_SERVE_"
OutputFormat = Literal["png", "geotiff", "json"]
PRECISIONS = ("fp32", "bf16")
NOT_READY_RETRY_SECONDS = 5
INTERNAL_ERROR = "internal error; the server log has the details"

T = TypeVar("T")


@dataclass(frozen=True)
class ServeSettings:
    """What a worker process needs to build the app (see :func:`create_app` for each field).

    Raises:
        PointsegError: for a missing checkpoint file, an unknown device or precision, CUDA asked for
            where there is none, or a limit below 1.
    """

    checkpoint: Path
    device: str
    precision: str
    max_upload_bytes: int
    max_pixels: int
    max_queue: int
    batch_size: int
    warmup: bool
    torch_threads: int | None

    def __post_init__(self) -> None:
        if not self.checkpoint.is_file():
            raise PointsegError(f"{self.checkpoint}: no such checkpoint file")
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise PointsegError(f"device {self.device!r}: expected cpu or cuda (or cuda:N)")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise PointsegError(f"device {self.device!r}: this machine has no CUDA GPU that torch can use")
        if self.precision not in PRECISIONS:
            raise PointsegError(f"precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        for name in ("max_upload_bytes", "max_pixels", "max_queue", "batch_size", "torch_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise PointsegError(f"{name} {value}: expected at least 1")

    def to_environment(self) -> dict[str, str]:
        """The settings as ``POINTSEG_SERVE_*`` environment variables, for :func:`app_from_environment`."""
        return {
            ENVIRONMENT_PREFIX + field.name.upper(): "" if value is None else str(value)
            for field in dataclasses.fields(self)
            for value in [getattr(self, field.name)]
        }

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> ServeSettings:
        """Read the settings that :meth:`to_environment` wrote.

        Raises:
            PointsegError: naming a variable that is missing or malformed.
        """
        parsers: dict[str, Callable[[str], Any]] = {
            "checkpoint": Path,
            "device": str,
            "precision": str,
            "warmup": lambda text: text == "True",
            "torch_threads": lambda text: int(text) if text else None,
        }
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            key = ENVIRONMENT_PREFIX + field.name.upper()
            if key not in environ:
                raise PointsegError(f"environment variable {key} is not set; use pointseg serve")
            try:
                values[field.name] = parsers.get(field.name, int)(environ[key])
            except ValueError as error:
                raise PointsegError(f"{key}={environ[key]!r}: expected an integer") from error
        return cls(**values)


@dataclass
class ModelService:
    """A loaded model and its sliding-window predictor; the methods block, so call them in a thread."""

    trained: TrainedModel
    predictor: SlidingWindowPredictor
    settings: ServeSettings

    @classmethod
    def load(cls, settings: ServeSettings) -> ModelService:
        """Load the checkpoint and, if ``settings.warmup``, run one tile through the network."""
        if settings.torch_threads is not None:
            torch.set_num_threads(settings.torch_threads)
        trained = load_trained_model(settings.checkpoint, settings.device)
        evaluation = trained.config.eval
        forward = torch_forward(trained.model, settings.device, cast(Precision, settings.precision))
        predictor = SlidingWindowPredictor(
            forward,
            trained.num_classes,
            evaluation.tile,
            evaluation.overlap,
            settings.batch_size,
            settings.device,
        )
        if settings.warmup:
            predictor.forward(torch.zeros(1, trained.band_stats.num_bands, predictor.tile, predictor.tile))
        return cls(trained, predictor, settings)

    def metadata(self) -> dict[str, Any]:
        """The ``GET /model`` body."""
        limits = {"max_upload_bytes": self.settings.max_upload_bytes, "max_pixels": self.settings.max_pixels}
        return {**self.trained.metadata(), "limits": limits}

    def predict(self, upload: Upload, output_format: OutputFormat) -> Response:
        """Predict every pixel of an upload and encode the class map as ``output_format``.

        Pixels that the input marks as nodata (a nodata value or a mask band) become ``IGNORE_INDEX``:
        transparent in the PNG, nodata in the GeoTIFF, left out of the shares.
        """
        schema = self.trained.schema
        with open_upload(upload, self.settings.max_pixels) as dataset:
            source = RasterSource(dataset, self.trained.band_stats)
            sink = LabelSink(source.height, source.width)
            self.predictor.predict(source, sink)
            labels = sink.labels
            valid = source.valid(0, 0, source.height, source.width)
            if valid is not None:
                labels[~valid] = IGNORE_INDEX
            crs, transform = (dataset.crs, dataset.transform) if dataset.crs is not None else (None, None)
        shares = outputs.class_shares(labels, schema)
        if output_format == "png":
            return Response(
                outputs.encode_mask_png(labels, schema),
                media_type="image/png",
                headers={"X-Pointseg-Shares": outputs.shares_header(shares)},
            )
        if output_format == "geotiff":
            attachment = f'attachment; filename="{upload.stem}_classes.tif"'
            return Response(
                outputs.encode_label_geotiff(labels, schema, crs, transform),
                media_type="image/tiff",
                headers={"Content-Disposition": attachment},
            )
        height, width = labels.shape
        return JSONResponse(
            {
                "width": width,
                "height": height,
                "classes": [dataclasses.asdict(share) for share in shares],
                "model": self.metadata(),
            }
        )

    def preview(self, upload: Upload) -> Response:
        """An RGB PNG of an upload's bands 1-3 (one or two bands: band 1 as grey), 2-98 % stretched."""
        with open_upload(upload, self.settings.max_pixels) as dataset:
            pixels = read_pixels(dataset)
        return Response(outputs.encode_png(display_rgb(pixels)), media_type="image/png")


class WorkQueue:
    """Admits at most ``max_size`` uploads at once (being read, waiting or running); runs one job at a time.

    ``admit`` and ``run`` are called from the event loop only, so the count needs no lock.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.active = 0
        self.limiter = anyio.CapacityLimiter(1)
        self.last_job_seconds = 1.0

    @property
    def retry_after(self) -> int:
        """Seconds a refused client should wait: how long the last job took, at least 1."""
        return max(1, math.ceil(self.last_job_seconds))

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold a place in the queue for the duration of the block.

        Raises:
            HTTPException: 503 with ``Retry-After`` when ``max_size`` places are taken.
        """
        if self.active >= self.max_size:
            raise HTTPException(
                503,
                f"busy: {self.active} image(s) are already being processed or waiting (the limit is "
                f"{self.max_size}, --max-queue); try again in {self.retry_after} s",
                headers={"Retry-After": str(self.retry_after)},
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

    async def run(self, job: Callable[..., T], *args: Any) -> T:
        """Run ``job(*args)`` in a worker thread once no other job is running."""

        def timed() -> T:
            started = time.perf_counter()
            try:
                return job(*args)
            finally:
                self.last_job_seconds = time.perf_counter() - started

        return await anyio.to_thread.run_sync(timed, limiter=self.limiter)


class ErrorBody(BaseModel):
    """Every error response."""

    detail: str


class Status(BaseModel):
    """``/health`` and ``/ready``."""

    status: str


UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "A GeoTIFF, PNG or JPEG image (judged by content, not name).",
                        }
                    },
                }
            }
        },
    }
}
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "No `file` field, an empty file, or a bad query parameter."},
    413: {"model": ErrorBody, "description": "Upload over the size limit, or more pixels than the limit."},
    415: {"model": ErrorBody, "description": "Not a GeoTIFF, PNG or JPEG by its magic bytes."},
    422: {"model": ErrorBody, "description": "Truncated or undecodable, or bands the model cannot take."},
    503: {"model": ErrorBody, "description": "Model loading or work queue full; see `Retry-After`."},
}
PLACEHOLDER_PAGE = (
    "<!doctype html><meta charset=utf-8><title>pointseg</title>"
    "<p>The pointseg page is not installed yet. The API is documented at <a href=/docs>/docs</a>.</p>"
)

router = APIRouter()


@router.get("/", include_in_schema=False)
async def page() -> Response:
    """The browser page (a placeholder until ``static/index.html`` exists)."""
    index = STATIC_DIR / "index.html"
    return FileResponse(index) if index.is_file() else HTMLResponse(PLACEHOLDER_PAGE)


@router.get("/health")
async def health() -> Status:
    """The process is alive."""
    return Status(status="ok")


@router.get("/ready", responses={503: {"model": ErrorBody, "description": "The model is still loading."}})
async def ready(request: Request) -> Status:
    """The model is loaded and warmed up."""
    ready_service(request)
    return Status(status="ready")


@router.get("/model", responses={503: {"model": ErrorBody, "description": "The model is still loading."}})
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
    return await process_upload(request, lambda service, upload: service.predict(upload, output_format))


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


async def process_upload(request: Request, job: Callable[[ModelService, Upload], Response]) -> Response:
    """Take a place in the work queue, read the upload, and run ``job`` on it in a worker thread.

    Raises:
        HTTPException: 503 while the model loads or the queue is full; 500 (logged, with the
            upload's name) for an unexpected error in ``job``.
        UploadError: for bad input.
    """
    service = ready_service(request)
    queue: WorkQueue = request.app.state.queue
    async with queue.admit():
        upload = await read_upload(request, service.settings.max_upload_bytes)
        try:
            return await queue.run(job, service, upload)
        except UploadError:
            raise
        except Exception as error:
            logger.exception("%s %s failed on %s", request.method, request.url.path, upload.name)
            raise HTTPException(500, INTERNAL_ERROR) from error


def ready_service(request: Request) -> ModelService:
    """The loaded model.

    Raises:
        HTTPException: 503 with ``Retry-After`` while the model is loading.
    """
    service: ModelService | None = request.app.state.service
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
    try:
        async with request.form(max_files=1, max_fields=16) as form:
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
    return Upload.sniff(data, filename)


def upload_limit_message(max_upload_bytes: int) -> str:
    """The 413 message for an upload over the size limit."""
    size = f"{max_upload_bytes // MIB} MiB" if max_upload_bytes % MIB == 0 else f"{max_upload_bytes:,} bytes"
    return (
        f"the upload is larger than this server's limit of {size} (--max-upload-mb); "
        "send a smaller image or cut it into tiles"
    )


def create_app(
    checkpoint: Path,
    *,
    device: str = "cpu",
    precision: Precision = "fp32",
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_queue: int = 4,
    batch_size: int = 4,
    warmup: bool = True,
    torch_threads: int | None = None,
) -> FastAPI:
    """Build the API for one checkpoint. The model is loaded when the app starts (its lifespan), not here.

    Args:
        checkpoint: A checkpoint written by ``pointseg train``.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``, or ``bf16`` autocast.
        max_upload_bytes: Largest image file accepted (413 above it, refused while it arrives).
        max_pixels: Largest width x height accepted (413 above it, judged from the header); see
            :data:`pointseg.serving.DEFAULT_MAX_PIXELS`.
        max_queue: Uploads per worker process being read, waiting or predicted at once (503 above it).
        batch_size: Tiles per forward pass.
        warmup: Run one tile through the network before reporting ready.
        torch_threads: CPU threads for torch in this process (``None``: torch's default).

    Raises:
        PointsegError: for settings that cannot work (see :class:`ServeSettings`).
    """
    settings = ServeSettings(
        checkpoint=Path(checkpoint),
        device=device,
        precision=precision,
        max_upload_bytes=max_upload_bytes,
        max_pixels=max_pixels,
        max_queue=max_queue,
        batch_size=batch_size,
        warmup=warmup,
        torch_threads=torch_threads,
    )
    return build_app(settings)


def serve(
    checkpoint: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int = 1,
    device: str = "cpu",
    precision: str = "fp32",
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_queue: int = 4,
    batch_size: int = 4,
) -> None:
    """Run the API under uvicorn until interrupted (``pointseg serve``).

    The settings are checked, and the checkpoint loaded once, before the server starts, so a bad
    checkpoint is one clear error rather than a failure in every worker. Workers are separate
    processes that each build the app with :func:`app_from_environment` from ``POINTSEG_SERVE_*``
    variables; on the CPU they share the cores (``torch_threads`` = cores // workers).

    Raises:
        PointsegError: for a bad checkpoint or setting.
    """
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    if workers < 1:
        raise PointsegError(f"--workers {workers}: expected at least 1")
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 and device == "cpu" else None
    settings = ServeSettings(
        checkpoint=Path(checkpoint),
        device=device,
        precision=precision,
        max_upload_bytes=max_upload_bytes,
        max_pixels=max_pixels,
        max_queue=max_queue,
        batch_size=batch_size,
        warmup=True,
        torch_threads=threads,
    )
    load_trained_model(settings.checkpoint)
    os.environ.update(settings.to_environment())
    pointseg_logger = {"handlers": ["default"], "level": "INFO", "propagate": False}
    log_config = {**LOGGING_CONFIG, "loggers": {**LOGGING_CONFIG["loggers"], "pointseg": pointseg_logger}}
    uvicorn.run(
        f"{__name__}:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=log_config,
    )


def app_from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory`` (one call per worker process): settings from ``POINTSEG_SERVE_*``."""
    return build_app(ServeSettings.from_environment(os.environ))


def build_app(settings: ServeSettings) -> FastAPI:
    """The FastAPI app for ``settings``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = time.perf_counter()
        service = await anyio.to_thread.run_sync(ModelService.load, settings)
        app.state.queue = WorkQueue(settings.max_queue)
        app.state.service = service
        logger.info(
            "model %s loaded on %s and warmed up in %.1f s; ready",
            settings.checkpoint,
            settings.device,
            time.perf_counter() - started,
        )
        yield
        app.state.service = None

    app = FastAPI(
        title="pointseg",
        version=__version__,
        lifespan=lifespan,
        description="Land-cover segmentation of uploaded images by a model trained from sparse point labels.",
    )
    app.state.service = None
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_upload_bytes + FORM_OVERHEAD_BYTES,
        message=upload_limit_message(settings.max_upload_bytes),
    )

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, error: UploadError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{item['loc'][-1]} {item.get('input')!r}: {item['msg']}" for item in error.errors()
        )
        return JSONResponse({"detail": problems}, status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        # The server logs the traceback: Starlette re-raises the error after this response.
        return JSONResponse({"detail": INTERNAL_ERROR}, status_code=500)

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    return app
