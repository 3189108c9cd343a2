"""Builds the FastAPI app of one server: its lifespan, middleware and error handlers.

Each worker process loads the checkpoint (when given) once, in the lifespan startup, and runs one
tile through the network before it reports ready. With a workspace, the app also keeps the
labelling projects and a training queue, whose worker stops with the app. The routes are in
:mod:`pointseg.serving.routes` and :mod:`pointseg.serving.project_routes`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from pointseg import __version__
from pointseg.errors import PointsegError
from pointseg.serving import project_routes
from pointseg.serving.body_limit import BodyLimits
from pointseg.serving.jobs import JobError, WorkQueue
from pointseg.serving.project_training import TrainingDefaults, train_project
from pointseg.serving.routes import INTERNAL_ERROR, STATIC_DIR, router
from pointseg.serving.service import ModelService
from pointseg.serving.settings import ServeSettings
from pointseg.serving.training_queue import TrainingQueue
from pointseg.serving.uploads import UploadError, upload_limit_message
from pointseg.serving.workspace import Workspace, WorkspaceError

logger = logging.getLogger(__name__)

FORM_OVERHEAD_BYTES = 64 * 1024
"""Room for multipart framing (boundary, part headers) on top of a file of ``max_upload_bytes``."""


def create_app(checkpoint: Path | None = None, **settings: Any) -> FastAPI:
    """Build the API for a checkpoint and/or a workspace; a model is loaded when the app starts (lifespan).

    Args:
        checkpoint: A checkpoint written by ``pointseg train``, or ``None`` with a ``workspace``.
        **settings: Any other field of :class:`~pointseg.serving.settings.ServeSettings`.

    Raises:
        PointsegError: for settings that cannot work.
    """
    return build_app(ServeSettings.checked(checkpoint=checkpoint, **settings))


def app_from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory`` (one call per worker process): settings from the environment."""
    return build_app(ServeSettings.from_environment(os.environ))


def build_app(settings: ServeSettings, training: TrainingDefaults | None = None) -> FastAPI:
    """The FastAPI app for ``settings``.

    Args:
        settings: The server's settings.
        training: What the labelling page's trainings use (default: ``TrainingDefaults()``).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.queue = WorkQueue(settings.max_queue)
        if settings.checkpoint is not None:
            started = time.perf_counter()
            app.state.service = await anyio.to_thread.run_sync(ModelService.load, settings)
            logger.info(
                "model %s loaded on %s and warmed up in %.1f s; ready",
                settings.checkpoint,
                settings.device,
                time.perf_counter() - started,
            )
        try:
            yield
        finally:
            app.state.service = None
            if app.state.training is not None:
                await anyio.to_thread.run_sync(app.state.training.close)

    app = FastAPI(
        title="pointseg",
        version=__version__,
        lifespan=lifespan,
        description="Land-cover segmentation of uploaded images by a model trained from sparse point labels.",
    )
    app.state.service = None
    app.state.settings = settings
    app.state.workspace = app.state.training = None
    if settings.workspace is not None:
        store = app.state.workspace = Workspace(settings.workspace)
        defaults = app.state.training_defaults = training or TrainingDefaults()
        app.state.training = TrainingQueue(
            lambda job, callbacks: train_project(store.project(job.project), job, defaults, callbacks)
        )
    app.add_middleware(
        BodyLimits,
        max_bytes=settings.max_upload_bytes + FORM_OVERHEAD_BYTES,
        message=upload_limit_message(settings.max_upload_bytes),
    )

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, error: UploadError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status_code)

    @app.exception_handler(WorkspaceError)
    async def workspace_error(request: Request, error: WorkspaceError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status_code)

    @app.exception_handler(PointsegError)
    async def input_error(request: Request, error: PointsegError) -> JSONResponse:
        # e.g. a workspace image deleted or damaged underneath: the file is named, it is no crash
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(JobError)
    async def job_error(request: Request, error: JobError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status_code, headers=error.headers)

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
    app.include_router(project_routes.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    return app
