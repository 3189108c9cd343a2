"""What ``/docs`` and ``/openapi.json`` say about the routes: response models and documented errors."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


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
    408: {"model": ErrorBody, "description": "The upload arrived too slowly; the connection is closed."},
    413: {"model": ErrorBody, "description": "Upload over the size limit, or more pixels than the limit."},
    415: {"model": ErrorBody, "description": "Not a GeoTIFF, PNG or JPEG by its magic bytes."},
    422: {"model": ErrorBody, "description": "Truncated or undecodable, or bands the model cannot take."},
    503: {
        "model": ErrorBody,
        "description": "Model loading, work queue full, or the job was stopped; see `Retry-After`.",
    },
    504: {"model": ErrorBody, "description": "The prediction ran past `--request-timeout` and was stopped."},
}
NOT_LOADED: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "The model is still loading."}
}
