"""The settings of one server (a model, a workspace, or both): validated once, given to workers as JSON."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pointseg.errors import PointsegError
from pointseg.inference import Precision
from pointseg.serving import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_MB, DEFAULT_REQUEST_TIMEOUT_S
from pointseg.serving.workspace import state_folder_problem

SETTINGS_VARIABLE = "POINTSEG_SERVE_SETTINGS"
"""The environment variable that carries :class:`ServeSettings` as JSON to each uvicorn worker."""
DEFAULT_MAX_UPLOAD_BYTES = DEFAULT_MAX_UPLOAD_MB * 2**20
AtLeastOne = Annotated[int, Field(ge=1)]


class ServeSettings(BaseModel):
    """What a worker process needs to build the app.

    At least one of ``checkpoint`` and ``workspace`` is given.

    Attributes:
        checkpoint: A checkpoint written by ``pointseg train``, or ``None`` for a labelling
            workspace only (then ``/predict``, ``/preview`` and ``/model`` answer 404).
        workspace: A folder of images where the labelling page keeps its projects (``/label``,
            ``/api/...``), or ``None``.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``, or ``bf16`` autocast.
        max_upload_bytes: Largest image file accepted (413 above it, refused while it arrives).
        max_pixels: Largest width x height accepted (413 above it, judged from the header).
        max_queue: Uploads per worker process waiting or being predicted at once (503 above it).
        batch_size: Tiles per forward pass.
        request_timeout: Seconds one request may wait for and run its job (504 after it); the job
            stops between tiles.
        warmup: Run one tile through the network before reporting ready.
        torch_threads: CPU threads for torch in this process (``None``: torch's default).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    checkpoint: Path | None = None
    workspace: Path | None = None
    device: str = "cpu"
    precision: Precision = "fp32"
    max_upload_bytes: AtLeastOne = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: AtLeastOne = DEFAULT_MAX_PIXELS
    max_queue: AtLeastOne = 4
    batch_size: AtLeastOne = 4
    request_timeout: Annotated[float, Field(gt=0)] = DEFAULT_REQUEST_TIMEOUT_S
    warmup: bool = True
    torch_threads: AtLeastOne | None = None

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_is_a_file(cls, checkpoint: Path | None) -> Path | None:
        if checkpoint is not None and not checkpoint.is_file():
            raise ValueError(f"{checkpoint}: no such checkpoint file")
        return checkpoint

    @field_validator("workspace")
    @classmethod
    def _workspace_is_a_folder(cls, workspace: Path | None) -> Path | None:
        if workspace is not None and not workspace.is_dir():
            raise ValueError(f"--workspace {workspace}: no such folder; expected a folder of images to label")
        problem = None if workspace is None else state_folder_problem(workspace)
        if problem is not None:
            raise ValueError(f"--workspace {workspace}: {problem}")
        return None if workspace is None else workspace.resolve()

    @model_validator(mode="after")
    def _serves_something(self) -> ServeSettings:
        if self.checkpoint is None and self.workspace is None:
            raise ValueError(
                "nothing to serve: give --checkpoint CKPT (a trained model), --workspace DIR (a folder "
                "of images to label and map), or both"
            )
        return self

    @field_validator("device")
    @classmethod
    def _device_exists(cls, device: str) -> str:
        if device != "cpu" and not device.startswith("cuda"):
            raise ValueError(f"device {device!r}: expected cpu or cuda (or cuda:N)")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: this machine has no CUDA GPU that torch can use")
        return device

    @classmethod
    def checked(cls, **values: Any) -> ServeSettings:
        """Validate ``values``.

        Raises:
            PointsegError: naming each field that is wrong and what was expected.
        """
        try:
            return cls(**values)
        except ValidationError as error:
            raise PointsegError(describe(error)) from error

    def to_environment(self) -> dict[str, str]:
        """The settings as ``{SETTINGS_VARIABLE: JSON}``, for :meth:`from_environment` in a worker."""
        return {SETTINGS_VARIABLE: self.model_dump_json()}

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> ServeSettings:
        """Read the settings that :meth:`to_environment` wrote.

        Raises:
            PointsegError: if the variable is missing or does not hold valid settings.
        """
        if SETTINGS_VARIABLE not in environ:
            raise PointsegError(f"environment variable {SETTINGS_VARIABLE} is not set; use pointseg serve")
        try:
            return cls.model_validate_json(environ[SETTINGS_VARIABLE])
        except ValidationError as error:
            raise PointsegError(f"{SETTINGS_VARIABLE}: {describe(error)}") from error


def describe(error: ValidationError) -> str:
    """One line per problem: our own messages as they are, pydantic's with the field and value."""
    problems = []
    for item in error.errors():
        if item["type"] == "value_error":
            problems.append(str(item["ctx"]["error"]))
        else:
            field = ".".join(str(part) for part in item["loc"]) or "settings"
            problems.append(f"{field} {item.get('input')!r}: {item['msg']}")
    return "; ".join(problems)
