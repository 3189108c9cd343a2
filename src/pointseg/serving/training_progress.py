"""The Lightning callback that reports a labelling job's progress and stops it when it is cancelled."""

from __future__ import annotations

import time
from typing import Any

import pointseg.torchvision_compat  # noqa: F401  # isort: skip  (shim first: torchvision)
import lightning as L
from lightning.pytorch.callbacks import Callback

from pointseg.serving.training_queue import TrainingJob


class TrainingProgress(Callback):
    """Lightning callback: reports a job's epochs, loss and point accuracy, and stops it when cancelled."""

    def __init__(self, job: TrainingJob) -> None:
        self.job = job
        self.epoch_started = time.monotonic()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start the epoch's clock."""
        self.epoch_started = time.monotonic()
        if not self.job.cancel_requested.is_set():  # keep saying "cancelling" once it is
            self.job.message = f"training, epoch {trainer.current_epoch + 1} of {self.job.epochs}"

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        """Stop a cancelled job before its next batch."""
        self.job.check_cancelled()

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        """Stop a cancelled job during validation too."""
        self.job.check_cancelled()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Record the finished epoch (validation, when it ran, has run by now)."""
        metrics = trainer.callback_metrics
        self.job.epoch_seconds.append(time.monotonic() - self.epoch_started)
        self.job.epoch = trainer.current_epoch + 1
        if "train_loss_epoch" in metrics:
            self.job.loss = round(float(metrics["train_loss_epoch"]), 5)
        if "val_point_accuracy" in metrics:
            self.job.val_point_accuracy = round(float(metrics["val_point_accuracy"]), 5)
        if self.job.epoch == self.job.epochs and not self.job.cancel_requested.is_set():
            self.job.message = "mapping the image"
