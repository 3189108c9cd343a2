"""The progress callback: epochs, loss and point accuracy reported; a cancelled job stops at a batch."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pointseg.serving.training_progress import TrainingProgress
from pointseg.serving.training_queue import TrainingCancelled, TrainingJob


def test_each_epoch_is_reported_and_cancel_stops_the_next_batch() -> None:
    job = TrainingJob("j", "p", epochs=2, warm_start=False, state="running")
    callback = TrainingProgress(job)
    trainer = SimpleNamespace(current_epoch=0, callback_metrics={"train_loss_epoch": torch.tensor(0.75)})
    callback.on_train_epoch_start(trainer, None)  # type: ignore[arg-type]
    assert job.message == "training, epoch 1 of 2"
    callback.on_train_batch_start(trainer, None, {}, 0)  # type: ignore[arg-type]
    callback.on_train_epoch_end(trainer, None)  # type: ignore[arg-type]
    assert (job.epoch, job.loss, job.val_point_accuracy) == (1, 0.75, None)
    assert job.eta_s is not None and job.eta_s >= 0
    trainer.current_epoch = 1
    trainer.callback_metrics["val_point_accuracy"] = torch.tensor(0.5)
    callback.on_train_epoch_end(trainer, None)  # type: ignore[arg-type]
    assert (job.epoch, job.val_point_accuracy, job.message) == (2, 0.5, "mapping the image")
    job.cancel_requested.set()
    with pytest.raises(TrainingCancelled):
        callback.on_train_batch_start(trainer, None, {}, 1)  # type: ignore[arg-type]
    with pytest.raises(TrainingCancelled):
        callback.on_validation_batch_start(trainer, None, {}, 0)  # type: ignore[arg-type]
