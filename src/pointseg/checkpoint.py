"""Load a trained model from a training checkpoint, for evaluation, prediction, serving and export.

A checkpoint written by ``pointseg train`` carries everything inference needs: the network's
weights, the class schema (names and colours), the band statistics that normalise inputs, the
model and sliding-window settings, and the best validation mIoU. Loading needs no Lightning and
never downloads anything.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pointseg.choices import TestTimeAugmentation
from pointseg.config import TrainConfig, parse_config
from pointseg.errors import PointsegError
from pointseg.models import build_model
from pointseg.normalization import BandStats
from pointseg.schema import ClassSchema


@dataclass
class TrainedModel:
    """A network in eval mode with what it needs to read images and name its outputs."""

    model: nn.Module
    schema: ClassSchema
    band_stats: BandStats
    config: TrainConfig
    path: Path
    val_miou: float | None
    epoch: int | None

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return self.schema.num_classes

    def with_tta(
        self, tta: TestTimeAugmentation | None, scales: Sequence[float] | None = None
    ) -> TrainedModel:
        """This model predicting with test-time augmentation ``tta`` at ``scales`` (None: the config's)."""
        update: dict[str, Any] = {}
        if tta is not None and tta != self.config.eval.tta:
            update["tta"] = tta
        if scales is not None and tuple(scales) != self.config.eval.scales:
            update["scales"] = tuple(scales)
        if not update:
            return self
        evaluation = self.config.eval.model_copy(update=update)
        return dataclasses.replace(self, config=self.config.model_copy(update={"eval": evaluation}))

    def metadata(self) -> dict[str, Any]:
        """What ``GET /model`` and reports show about the model."""
        model = self.config.model
        return {
            "checkpoint": self.path.name,
            "classes": list(self.schema.classes),
            "colors": ["#{:02X}{:02X}{:02X}".format(*c) for c in self.schema.colors],
            "input_bands": self.band_stats.num_bands,
            "arch": model.arch,
            "encoder": model.encoder,
            "norm": model.norm,
            "supervision": self.config.supervision,
            "points": self.config.points.protocol().describe()
            if self.config.supervision == "points"
            else None,
            "val_miou": self.val_miou,
            "epoch": self.epoch,
            "tile": self.config.eval.tile,
            "overlap": self.config.eval.overlap,
            "tta": self.config.eval.tta,
            "scales": list(self.config.eval.scales),
        }


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a ``pointseg train`` checkpoint as tensors and plain data, never running pickled code.

    ``weights_only=True`` is passed explicitly, so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot turn it off.

    Raises:
        PointsegError: if the file is missing, unreadable, holds other Python objects, or lacks
            the weights, the class schema, the band statistics or the saved config.
    """
    path = Path(path)
    if not path.is_file():
        raise PointsegError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types (KeyError, RuntimeError, ...) for bad files
        if isinstance(error, pickle.UnpicklingError) and str(error).startswith("Weights only load failed"):
            raise PointsegError(
                f"{path}: refused: the checkpoint holds Python objects other than tensors and plain data, "
                "which could run code when loaded; expected a checkpoint written by `pointseg train`"
            ) from error
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise PointsegError(
            f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: {reason}); "
            "expected a checkpoint written by `pointseg train`"
        ) from error
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or not {"config", "schema", "band_stats"} <= hparams.keys():
        raise PointsegError(
            f"{path}: not a pointseg checkpoint (no config, schema and band statistics); "
            "expected a checkpoint written by `pointseg train`"
        )
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise PointsegError(
            f"{path}: the checkpoint has no state_dict (the weights); expected a `pointseg train` checkpoint"
        )
    return checkpoint


def saved_config(checkpoint: dict[str, Any], path: str | Path) -> TrainConfig:
    """The training settings saved in a checkpoint read by :func:`read_checkpoint`.

    Raises:
        PointsegError: naming the file and each invalid field (an unknown key, an empty config).
    """
    return parse_config(checkpoint["hyper_parameters"]["config"], f"{path} (its saved config)")


def check_resumable(path: str | Path) -> None:
    """Check a checkpoint before Lightning loads it to resume (Lightning unpickles it in full).

    Raises:
        PointsegError: as :func:`read_checkpoint` and :func:`saved_config`.
    """
    saved_config(read_checkpoint(path), path)


def load_trained_model(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """Rebuild the network of a ``pointseg train`` checkpoint and load its weights.

    Raises:
        PointsegError: if the file is missing, is not a checkpoint, or was not written by pointseg.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path)
    hparams = checkpoint["hyper_parameters"]
    config = saved_config(checkpoint, path)
    schema = ClassSchema.from_dict(hparams["schema"], source=str(path))
    band_stats = BandStats.from_dict(hparams["band_stats"])
    settings = config.model
    model = build_model(
        schema.num_classes,
        band_stats.num_bands,
        settings.arch,
        settings.encoder,
        settings.norm,
        atrous_rates=settings.atrous_rates,
        output_stride=settings.output_stride,
    )
    weights = {
        k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")
    }
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise PointsegError(
            f"{path}: weights do not fit the {settings.arch}/{settings.encoder} network: {error}"
        ) from error
    model.eval().to(device)
    return TrainedModel(
        model=model,
        schema=schema,
        band_stats=band_stats,
        config=config,
        path=path,
        val_miou=_best_score(checkpoint),
        epoch=checkpoint.get("epoch"),
    )


def _best_score(checkpoint: dict[str, Any]) -> float | None:
    for key, state in checkpoint.get("callbacks", {}).items():
        if key.startswith("ModelCheckpoint") and state.get("best_model_score") is not None:
            return float(state["best_model_score"])
    return None
