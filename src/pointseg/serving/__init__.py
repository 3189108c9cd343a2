"""The HTTP API and its browser page, served by ``pointseg serve`` (see :mod:`pointseg.serving.app`).

This package module stays light (the command line reads its defaults without importing FastAPI or
torch); the app lives in :mod:`pointseg.serving.app`.
"""

DEFAULT_MAX_UPLOAD_MB = 256
"""Largest upload accepted, in MiB (413 above it, refused while it arrives)."""
DEFAULT_MAX_PIXELS = 150_000_000
"""About 12 000 x 12 000 pixels: a large orthophoto tile, while one request's peak memory stays near
3 GB for a JPEG or PNG (decoded whole: 3 B/px raw + 12 B/px normalised float32 for RGB, 1 B/px labels,
4 B/px RGBA output) and near 1 GB for a GeoTIFF, which is read window by window."""
