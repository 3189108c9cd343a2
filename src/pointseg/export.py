"""ONNX export of a trained model, and running it with ONNX Runtime.

The exported graph takes ``image``: ``(batch, bands, height, width)`` float32 normalised pixels and
returns ``logits``: ``(batch, classes, height, width)``, with batch, height and width dynamic
(height and width multiples of 32). The model's classes, colours, band statistics and
sliding-window settings travel in the ONNX metadata, so ``pointseg predict --onnx`` needs nothing
else.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pointseg.checkpoint import TrainedModel
from pointseg.choices import TestTimeAugmentation
from pointseg.errors import PointsegError
from pointseg.inference import InferenceModel, tta_averaged
from pointseg.normalization import BandStats
from pointseg.raster import atomic_output
from pointseg.schema import ClassSchema

METADATA_KEY = "pointseg"


def export_onnx(trained: TrainedModel, out: str | Path, sample_size: int = 256) -> Path:
    """Export ``trained`` to ONNX with dynamic batch, height and width; write atomically.

    Returns:
        The written path.
    """
    model = trained.model.eval().cpu()
    example = torch.zeros(1, trained.band_stats.num_bands, sample_size, sample_size)
    size_range = dict(min=32, max=32768)
    dynamic_shapes = (
        {
            0: torch.export.Dim("batch", max=4096),
            2: torch.export.Dim("height", **size_range),
            3: torch.export.Dim("width", **size_range),
        },
    )
    metadata = {
        "schema": trained.schema.to_dict(),
        "band_stats": trained.band_stats.to_dict(),
        "tile": trained.config.eval.tile,
        "overlap": trained.config.eval.overlap,
        "model": trained.metadata(),
    }
    out = Path(out)
    with atomic_output(out) as temporary, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            input_names=["image"],
            output_names=["logits"],
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
        if program is None:
            raise PointsegError("torch.onnx.export returned no program")
        program.model.metadata_props[METADATA_KEY] = json.dumps(metadata)
        program.save(str(temporary))
    return out


def load_onnx_model(
    path: str | Path,
    providers: list[str] | None = None,
    tta: TestTimeAugmentation | None = None,
    scales: Sequence[float] | None = None,
) -> InferenceModel:
    """Open an ONNX file written by :func:`export_onnx` with ONNX Runtime.

    ``tta`` and ``scales``: the test-time augmentation and the sizes to predict with (None: those
    recorded at export).

    Raises:
        PointsegError: if the file is missing, not ONNX, or has no pointseg metadata.
    """
    import onnxruntime

    path = Path(path)
    if not path.is_file():
        raise PointsegError(f"{path}: no such ONNX file")
    try:
        session = onnxruntime.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for unreadable models
        raise PointsegError(f"{path}: not a readable ONNX model ({str(error).splitlines()[0]})") from error
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise PointsegError(
            f"{path}: no '{METADATA_KEY}' metadata; expected a model from `pointseg export onnx`"
        )
    metadata = json.loads(raw)
    input_name = session.get_inputs()[0].name

    def forward(batch: torch.Tensor) -> torch.Tensor:
        logits = session.run(None, {input_name: np.ascontiguousarray(batch.cpu().numpy(), dtype=np.float32)})[
            0
        ]
        return torch.from_numpy(logits)

    tta = tta or metadata["model"].get("tta", "none")  # exports before eval.tta have none
    scales = list(scales or metadata["model"].get("scales", [1.0]))  # nor before eval.scales
    return InferenceModel(
        forward=tta_averaged(forward, tta, scales),
        schema=ClassSchema.from_dict(metadata["schema"], source=str(path)),
        band_stats=BandStats.from_dict(metadata["band_stats"]),
        tile=int(metadata["tile"]),
        overlap=float(metadata["overlap"]),
        metadata={
            **metadata["model"],
            "tta": tta,
            "scales": scales,
            "runtime": "onnxruntime",
            "onnx": path.name,
        },
    )
