"""The HTTP API and its browser page: ``pointseg serve`` runs :func:`create_app` under uvicorn."""

from pointseg.serving.app import app_from_environment, create_app

__all__ = ["app_from_environment", "create_app"]
