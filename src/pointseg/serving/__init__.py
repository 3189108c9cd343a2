"""The HTTP API and its browser page, served by ``pointseg serve`` (map: ``CONTRACT.md`` beside this file).

Modules: :mod:`~pointseg.serving.settings` (validated settings), :mod:`~pointseg.serving.service`
(the loaded model and its jobs), :mod:`~pointseg.serving.jobs` (work queue, time budget and
cancellation), :mod:`~pointseg.serving.routes` (every route), :mod:`~pointseg.serving.openapi`
(response models and documented errors), :mod:`~pointseg.serving.app` (builds the app),
:mod:`~pointseg.serving.server` (uvicorn and its connection timeouts), plus the upload checks
(:mod:`~pointseg.serving.uploads`, :mod:`~pointseg.serving.body_limit`) and the encoders
(:mod:`~pointseg.serving.outputs`). The labelling workspace (``--workspace``):
:mod:`~pointseg.serving.workspace` (projects, classes and points on disk),
:mod:`~pointseg.serving.training_queue` and :mod:`~pointseg.serving.training_progress` (one
training at a time, progress, cancel), :mod:`~pointseg.serving.project_training` (a project's
clicks through ``pointseg map`` into a run), :mod:`~pointseg.serving.raster_views` (PNG views of
windows) and :mod:`~pointseg.serving.project_routes` (its routes).

This package module stays light (the command line reads its defaults without importing FastAPI or
torch).
"""

DEFAULT_MAX_UPLOAD_MB = 256
"""Largest upload accepted, in MiB (413 above it, refused while it arrives)."""
DEFAULT_REQUEST_TIMEOUT_S = 120.0
"""Seconds one request may spend waiting for and running its prediction (504 after it)."""
DEFAULT_MAX_PIXELS = 25_000_000
"""5 000 x 5 000 pixels: what one worker on 2 CPU cores predicts within
:data:`DEFAULT_REQUEST_TIMEOUT_S` (``benchmarks/predict_speed``: 0.41 Mpx/s for a ResNet-50
DeepLabV3+ without overlap, so about 0.23 Mpx/s with 25 % overlap, about 110 s), so the pixel
limit refuses from the header what the time budget would cut off after minutes of work. Peak
memory stays near 0.5 GB for a JPEG or PNG (decoded whole) and lower for a GeoTIFF (read window
by window). Raise both together on faster hardware."""
