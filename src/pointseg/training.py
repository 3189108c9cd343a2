"""Training with Lightning: a DataModule for the splits and a LightningModule for the task.

Lightning owns the loop. It also provides checkpoints (best on val mIoU, and last after every
epoch), resume, early stopping, the progress bar, CSV/TensorBoard logs, seeding, gradient
clipping, mixed precision and DDP. This module holds only what is specific to point-supervised
segmentation: train on the point labels (optionally spread over superpixels, optionally with a
propagation loss) or on dense masks, validate on whole images' dense masks
with the same sliding window as prediction, log the macro mIoU, and report each epoch in a line
when no terminal shows a progress bar. The run folder itself is kept by :mod:`pointseg.runs`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pointseg.torchvision_compat  # noqa: F401  # isort: skip  (shim first: torchvision)
import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    EMAWeightAveraging,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
    Timer,
)
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_only
from lightning_utilities.core import rank_zero as lightning_rank_zero
from torch.utils.data import DataLoader

from pointseg.checkpoint import check_resumable
from pointseg.choices import POINT_CROP_SHARE, TestTimeAugmentation
from pointseg.config import TrainConfig, TrainerConfig
from pointseg.datasets import SampleRef, split_samples
from pointseg.datasets.dataset import SegmentationDataset, collate_samples
from pointseg.datasets.point_sources import PointsDirectory, PointsFile, PointSource, SimulatedPoints
from pointseg.errors import PointsegError
from pointseg.inference import ArraySource, LabelSink, SlidingWindowPredictor, fast_bfloat16, tta_averaged
from pointseg.label_expansion import PointExpansion
from pointseg.losses import (
    PropagationLoss,
    batch_class_balance,
    build_loss,
    confident_consistency_loss,
    weighted_partial_cross_entropy,
)
from pointseg.metrics import SegmentationMetrics
from pointseg.models import build_model, running_statistics_kept
from pointseg.normalization import BandStats
from pointseg.raster import atomic_output
from pointseg.runs import (
    RUN_DIR_VARIABLE,
    ResumePoint,
    collect_metrics,
    continue_run_folder,
    new_run_dir,
    preserved_environment,
    resolve_resume,
    run_environment,
    shared_run_dir,
    start_run_folder,
    write_json,
)
from pointseg.schema import IGNORE_INDEX, ClassSchema
from pointseg.transforms import BatchAugmentation, strongly_perturbed

MONITOR = "val_miou"
POINT_MONITOR = "val_point_miou"
"""What checkpoints and early stopping follow when validation is on held-out points, not dense masks."""


@dataclass(frozen=True)
class PreparedSamples:
    """Samples and labels chosen by the caller instead of discovered from ``config.data``.

    ``pointseg map`` trains on images that have only clicked points: it pairs them itself and
    validates on held-out points (logged as ``val_point_*``) instead of dense masks.

    Attributes:
        schema: The classes.
        splits: ``train`` and ``val`` samples (the same images may be in both).
        train_points: Point labels to train on.
        val_points: Held-out point labels to validate on, or ``None`` to validate on dense masks.
    """

    schema: ClassSchema
    splits: dict[str, list[SampleRef]]
    train_points: PointSource
    val_points: PointSource | None = None

    @property
    def monitor(self) -> str:
        """The validation metric checkpoints follow."""
        return MONITOR if self.val_points is None else POINT_MONITOR


def point_expansion(config: TrainConfig) -> PointExpansion | None:
    """The superpixel expansion of the training points, or None (off, or dense supervision)."""
    expansion = config.points.expansion
    if config.supervision == "dense" or expansion.method == "none":
        return None
    return PointExpansion(expansion.method, expansion.weight, expansion.superpixel_size)


def point_source(config: TrainConfig, schema: ClassSchema | None = None) -> PointSource | None:
    """Where training point labels come from: a points folder or file, or simulation (None for dense masks).

    Raises:
        PointsegError: for ``points.file`` without the ``schema`` its class names refer to.
    """
    if config.supervision == "dense":
        return None
    if config.points.directory is not None:
        return PointsDirectory(config.points.directory)
    if config.points.file is not None:
        if schema is None:
            raise PointsegError(f"points.file {config.points.file}: the class schema is needed to read it")
        return PointsFile(config.points.file, schema, config.points.class_field)
    return SimulatedPoints(config.points.protocol())


def given_points_samples(config: TrainConfig) -> PreparedSamples | None:
    """The samples of a config whose points are read (``points.directory`` or ``points.file``).

    Images then need no dense mask. Validation stays on dense masks (``val_miou``) when every
    validation image has one. Otherwise it is on points (``val_point_*``): all the points of the
    ``data.val`` images, or, with ``data.val`` empty, a share of every training image's points
    held out in spatial blocks (``points.holdout``, ``points.block_size``), as ``pointseg map`` does.
    Every image's points are checked here, before training starts.

    Returns:
        The samples, or ``None`` for simulated points and dense supervision (which need masks).

    Raises:
        PointsegError: for bad splits, and images whose points are missing or invalid.
    """
    from pointseg.mapping import ImagePoints, check_class_counts, held_out_samples

    if config.supervision == "dense" or not config.points.given:
        return None
    schema, splits = split_samples(config.data, require_masks=False)
    source = point_source(config, schema)
    assert source is not None
    dense_val = bool(splits["val"]) and all(ref.mask_path is not None for ref in splits["val"])
    checked = splits["train"] if dense_val else splits["train"] + splits["val"]
    if isinstance(source, PointsFile):  # the file's points must each fall in one of the images
        checked = splits["train"] + splits["val"] + splits["test"]
    source.check(list({ref.id: ref for ref in checked}.values()))
    if dense_val:
        return PreparedSamples(schema, splits, train_points=source)
    if splits["val"]:
        held_out = ImagePoints({ref.id: source.points_for(ref, None) for ref in splits["val"]})
        return PreparedSamples(schema, splits, train_points=source, val_points=held_out)
    points = {ref: source.points_for(ref, None) for ref in splits["train"]}
    check_class_counts(points, schema)
    samples, _ = held_out_samples(
        points, schema, config.points.block_size, config.points.holdout, config.seed
    )
    return replace(samples, splits={**samples.splits, "test": splits["test"]})


class SegmentationDataModule(L.LightningDataModule):
    """Training crops with point (or dense) labels; whole images with dense masks for val and test."""

    def __init__(
        self,
        config: TrainConfig,
        schema: ClassSchema,
        splits: dict[str, list[SampleRef]],
        band_stats: BandStats,
        samples: PreparedSamples | None = None,
    ):
        super().__init__()
        self.config = config
        self.samples = samples
        self.schema = schema
        self.splits = splits
        self.band_stats = band_stats
        augment = config.augment
        self.augment = (
            BatchAugmentation(
                augment.flips,
                augment.rotate90,
                augment.color_jitter,
                augment.random_crop,
                augment.random_scale,
            )
            if augment.enabled
            else None
        )

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Augment training batches on the device they will be used on."""
        if self.trainer is not None and self.trainer.training and self.augment is not None:
            batch = self.augment(batch)
        return batch

    def train_dataloader(self) -> DataLoader:
        """Random crops read from disk; labels are points (or masks for dense supervision)."""
        data = self.config.data
        dataset = SegmentationDataset(
            self.splits["train"],
            self.schema,
            self.band_stats,
            crop_size=data.crop_size,
            crops_per_image=data.crops_per_image,
            point_crop_share=POINT_CROP_SHARE[data.crop_sampling],
            points=point_source(self.config) if self.samples is None else self.samples.train_points,
            with_masks=self.config.supervision == "dense",
            cache_bytes=data.cache_mb << 20,
            expansion=point_expansion(self.config),
            padding_mask=self.config.loss.propagation_weight > 0 or self.config.loss.consistency_weight > 0,
        )
        return DataLoader(
            dataset,
            batch_size=data.batch_size,
            shuffle=True,
            num_workers=data.num_workers,
            collate_fn=collate_samples,
            persistent_workers=data.num_workers > 0,
            drop_last=len(dataset) > data.batch_size,
        )

    def _whole_images(self, split: str) -> DataLoader:
        held_out = self.samples.val_points if self.samples is not None and split == "val" else None
        dataset = SegmentationDataset(
            self.splits[split],
            self.schema,
            self.band_stats,
            points=held_out,
            with_masks=held_out is None,
            padding_mask=True,  # "valid": pixels without data are predicted IGNORE_INDEX, not scored
        )
        sampler = None
        if self.trainer is not None and self.trainer.world_size > 1:
            # Every image is evaluated exactly once across processes (no padding duplicates).
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=1,
            sampler=sampler,
            num_workers=min(self.config.data.num_workers, 1),
            collate_fn=collate_samples,
        )

    def val_dataloader(self) -> DataLoader:
        """Whole validation images with their dense masks (or held-out points)."""
        return self._whole_images("val")

    def test_dataloader(self) -> DataLoader:
        """Whole test images with their dense masks."""
        return self._whole_images("test")


class SegmentationTask(L.LightningModule):
    """DeepLabV3(+) trained with a partial loss on point labels, validated by macro mIoU on dense masks.

    Args:
        config: The run's resolved config, as plain data.
        schema: The class schema, as plain data (``ClassSchema.to_dict``).
        band_stats: Per-band mean/std used to normalise inputs.
        load_pretrained: Load the encoder weights named in the config. Set False when the
            weights come from a checkpoint instead (inference, resume).
        monitor: The validation metric: ``val_miou`` (dense masks) or ``val_point_miou``
            (held-out points); its prefix names every validation metric.
    """

    def __init__(
        self,
        config: dict[str, Any],
        schema: dict[str, Any],
        band_stats: dict[str, Any],
        load_pretrained: bool = True,
        monitor: str = MONITOR,
    ) -> None:
        super().__init__()
        self.monitor = monitor
        self.save_hyperparameters(ignore=["load_pretrained"])
        self.settings = TrainConfig.model_validate(config)
        self.schema = ClassSchema.from_dict(schema)
        self.band_stats = BandStats.from_dict(band_stats)
        model = self.settings.model
        self.model = build_model(
            self.schema.num_classes,
            self.band_stats.num_bands,
            model.arch,
            model.encoder,
            model.norm,
            model.weights if load_pretrained else None,
            model.atrous_rates,
            model.output_stride,
        )
        loss = self.settings.loss
        self.loss = build_loss(loss.name, loss.gamma, loss.class_weights)
        self.propagation = (
            PropagationLoss(loss.propagation_radius, loss.propagation_sigma_colour, loss.propagation_sigma_xy)
            if loss.propagation_weight > 0
            else None
        )
        self.val_metrics = SegmentationMetrics(list(self.schema.classes))
        self.test_metrics = SegmentationMetrics(list(self.schema.classes))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` normalised image -> ``(B, K, H, W)`` logits."""
        return self.model(image)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """One step on the labelled pixels (points, expanded points, or the dense mask).

        With expanded points (``point_weights`` in the batch) the loss is the partial cross-entropy
        weighted per pixel, with the class weights (not the focal variant); with
        ``loss.class_balance`` the class weights are multiplied by the batch's
        :func:`~pointseg.losses.batch_class_balance`; with ``loss.propagation_weight`` above 0,
        that weight times the propagation loss over the not-padded pixels is added; with
        ``loss.consistency_weight`` above 0, that weight times the consistency loss of a strongly
        perturbed copy of the crops against the model's confident labels on the crops themselves
        (a second forward pass that leaves BatchNorm's running statistics to the crops).
        ``train_labelled_fraction`` counts the clicked points only.
        """
        target = batch["points"] if self.settings.supervision == "points" else batch["mask"]
        batch_size = target.shape[0]
        settings = self.settings.loss
        logits = self(batch["image"])
        if settings.consistency_weight > 0:
            # The perturbed copies have their own batch statistics but leave the running ones to the crops.
            with running_statistics_kept(self.model):
                perturbed_logits = self(strongly_perturbed(batch["image"], settings.consistency_strength))
        class_weights = getattr(self.loss, "weight", None)
        expanded = "point_weights" in batch
        if settings.class_balance:
            balance = batch_class_balance(
                batch["expanded_points"] if expanded else target,
                logits.shape[1],
                batch["point_weights"] if expanded else None,
            )
            class_weights = balance if class_weights is None else balance * class_weights
        if expanded:
            loss = weighted_partial_cross_entropy(
                logits, batch["expanded_points"], batch["point_weights"], weight=class_weights
            )
        else:
            loss = self.loss(logits, target, weight=class_weights)
        if self.propagation is not None:
            propagation = self.propagation(logits, batch["image"], batch.get("valid"))
            self._log_epoch_mean("train_propagation_loss", propagation, batch_size)
            loss = loss + settings.propagation_weight * propagation
        if settings.consistency_weight > 0:
            consistency = confident_consistency_loss(
                perturbed_logits, logits, settings.consistency_threshold, batch.get("valid")
            )
            self._log_epoch_mean("train_consistency_loss", consistency, batch_size)
            loss = loss + settings.consistency_weight * consistency
        self.log(
            "train_loss",
            loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=batch_size,
            sync_dist=True,
        )
        labelled = (target != IGNORE_INDEX).float().mean()
        self._log_epoch_mean("train_labelled_fraction", labelled, batch_size)
        return loss

    def _log_epoch_mean(self, name: str, value: torch.Tensor, batch_size: int) -> None:
        """Log a training quantity as its mean over the epoch (across processes)."""
        self.log(name, value, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True)

    def _predict_whole(
        self,
        image: torch.Tensor,
        valid: torch.Tensor | None = None,
        tta: TestTimeAugmentation = "none",
        scales: Sequence[float] = (1.0,),
    ) -> torch.Tensor:
        """Sliding-window labels of a ``(1, C, H, W)`` image; ``IGNORE_INDEX`` where ``valid`` is False."""
        evaluation = self.settings.eval
        predictor = SlidingWindowPredictor(
            tta_averaged(self.model, tta, scales),
            self.schema.num_classes,
            evaluation.tile,
            evaluation.overlap,
            evaluation.batch_size,
            device=image.device,
        )
        has_data = None if valid is None else valid[0].cpu().numpy()
        sink = LabelSink(
            image.shape[-2],
            image.shape[-1],
            valid=None if has_data is None else lambda row, col, h, w: has_data[row : row + h, col : col + w],
        )
        predictor.predict(ArraySource(image[0].float().cpu().numpy()), sink)
        return torch.from_numpy(sink.labels).to(image.device).long()[None]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Predict a whole image by sliding window; add its dense mask (or held-out points) to the matrix."""
        target = batch["mask"] if "mask" in batch else batch["points"]
        self.val_metrics.update(self._predict_whole(batch["image"], batch.get("valid")), target)

    def on_validation_epoch_end(self) -> None:
        """Log macro mIoU, accuracy and per-class IoU over the whole validation set."""
        self._log_report(self.val_metrics, self.monitor.removesuffix("_miou"))

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Like validation, on the test split, averaged as ``eval.tta`` and ``eval.scales`` say."""
        evaluation = self.settings.eval
        labels = self._predict_whole(batch["image"], batch.get("valid"), evaluation.tta, evaluation.scales)
        self.test_metrics.update(labels, batch["mask"])

    def on_test_epoch_end(self) -> None:
        """Log test metrics."""
        self._log_report(self.test_metrics, "test")

    def _log_report(self, metrics: SegmentationMetrics, prefix: str) -> None:
        report = metrics.report()
        values = {f"{prefix}_accuracy": report.accuracy}
        for name, iou in report.per_class_iou.items():
            if iou is not None:
                values[f"{prefix}_iou_{name}"] = iou
        self.log_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()})
        self.log(f"{prefix}_miou", torch.tensor(report.miou, dtype=torch.float32), prog_bar=True)
        metrics.reset()

    def configure_optimizers(self) -> Any:
        """Adam or AdamW, with an optional cosine, poly or plateau schedule.

        With ``optim.encoder_lr_scale`` below 1 the encoder is a parameter group of its own, learning at
        ``optim.lr * optim.encoder_lr_scale``; at 1 there is one group, as in runs that predate the
        setting, so their checkpoints still resume.
        """
        optim = self.settings.optim
        optimizer_class = torch.optim.AdamW if optim.optimizer == "adamw" else torch.optim.Adam
        groups: Any = self.parameters()
        if optim.encoder_lr_scale != 1:
            encoder = self.model.encoder
            assert isinstance(encoder, torch.nn.Module)  # every smp model has one
            encoder_ids = {id(parameter) for parameter in encoder.parameters()}
            groups = [
                {
                    "name": "encoder",
                    "params": list(encoder.parameters()),
                    "lr": optim.lr * optim.encoder_lr_scale,
                },
                {
                    "name": "decoder",
                    "params": [p for p in self.parameters() if id(p) not in encoder_ids],
                    "lr": optim.lr,
                },
            ]
        optimizer = optimizer_class(groups, lr=optim.lr, weight_decay=optim.weight_decay)
        if optim.schedule == "none":
            return optimizer
        if optim.schedule == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=0.5, patience=optim.plateau_patience
            )
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor}}
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        if optim.schedule == "cosine":
            step_scheduler: Any = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
        else:
            power = optim.poly_power
            step_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: max(0.0, 1 - step / total_steps) ** power
            )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": step_scheduler, "interval": "step"}}


class MetricsFileCallback(Callback):
    """Keeps ``<run>/metrics.csv`` as the union of every session's CSV log (resumes included)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Refresh after each validation, so a killed run still has its history."""
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.save()
            collect_metrics(self.run_dir)

    on_train_end = on_validation_epoch_end


class EpochLines(Callback):
    """One plain line per epoch, for logs and pipes, where a progress bar shows nothing.

    ``epoch 3/50  train_loss 0.8123  val_miou 0.4210  val_accuracy 0.7712  elapsed 2m10s  left ~34m``:
    the time left is this session's mean epoch time times the epochs still to train. A run that
    validates on held-out points shows ``val_point_miou`` and ``val_point_accuracy`` instead.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.first_epoch = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start the clock (a resumed run starts counting at its first new epoch)."""
        self.started = time.monotonic()
        self.first_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Print the line of the epoch that ended (validation has run by now)."""
        if not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch + 1
        elapsed = time.monotonic() - self.started
        left = elapsed / max(1, epoch - self.first_epoch) * max(0, (trainer.max_epochs or epoch) - epoch)
        parts = [f"epoch {epoch}/{trainer.max_epochs}"]
        for name in ("train_loss_epoch", MONITOR, "val_accuracy", POINT_MONITOR, "val_point_accuracy"):
            if name in trainer.callback_metrics:
                parts.append(f"{name.removesuffix('_epoch')} {float(trainer.callback_metrics[name]):.4f}")
        parts += [f"elapsed {format_duration(elapsed)}", f"left ~{format_duration(left)}"]
        print("  ".join(parts), flush=True)


def format_duration(seconds: float) -> str:
    """``45s``, ``2m10s`` or ``1h05m``."""
    minutes, second = divmod(round(seconds), 60)
    hours, minute = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minute:02d}m"
    return f"{minute}m{second:02d}s" if minute else f"{second}s"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, through a temporary file renamed into place.

    A process killed while it writes ``last.ckpt`` leaves the previous ``last.ckpt`` whole.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` beside ``path``, then rename it to ``path``."""
        with atomic_output(path) as temporary:
            super().save_checkpoint(checkpoint, temporary, storage_options)


class _HideTips(logging.Filter):
    """Drops Lightning's advertising ("💡 Tip: ... try installing litlogger ...")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("💡 Tip")


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Hide Lightning's tips and two known, harmless warnings; restore both filters afterwards."""
    log = lightning_rank_zero.log
    tips = _HideTips()
    log.addFilter(tips)
    try:
        with warnings.catch_warnings():
            # Lightning's own use of a deprecated torch API, and a resumed run's checkpoint folder.
            warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            yield
    finally:
        log.removeFilter(tips)


def trainer_device(trainer: TrainerConfig) -> str:
    """``cuda`` where a GPU is available and ``trainer.accelerator`` is not ``cpu``, else ``cpu``."""
    return "cuda" if trainer.accelerator != "cpu" and torch.cuda.is_available() else "cpu"


def trainer_precision(trainer: TrainerConfig) -> str:
    """Lightning's precision for ``trainer.precision``, with ``auto`` resolved for this machine.

    ``auto`` is ``bf16-mixed`` where the device computes bfloat16 fast
    (:func:`pointseg.inference.fast_bfloat16`), ``32-true`` elsewhere. ``bf16-mixed`` asked for on a
    CPU without fast bfloat16 is kept, with a note on stderr.
    """
    device = trainer_device(trainer)
    fast = fast_bfloat16(device)
    if trainer.precision == "auto":
        return "bf16-mixed" if fast else "32-true"
    if trainer.precision == "bf16-mixed" and not fast:
        where = "this GPU" if device == "cuda" else "this CPU (no AVX-512 or AMX)"
        print(
            f"trainer.precision bf16-mixed: {where} does not compute bfloat16 natively, so training runs "
            "several times slower than in float32; set trainer.precision: auto or 32-true",
            file=sys.stderr,
        )
    return trainer.precision


def train(
    config: TrainConfig,
    resume: Path | None = None,
    progress: bool = True,
    samples: PreparedSamples | None = None,
    callbacks: Sequence[Callback] = (),
) -> Path:
    """Train a model as configured and return its run folder.

    The process is left as it was found: environment variables and warning filters are restored,
    so ``train()`` can be called again in the same process.

    Args:
        config: Validated settings (for a resumed run: the settings it continues with, see
            :func:`pointseg.runs.resume_settings`).
        resume: A run folder, or a checkpoint in its ``checkpoints/`` folder, to continue from
            (epoch count, optimizer and all); a run folder without a checkpoint starts again.
        progress: Show progress: a progress bar on a terminal, one line per epoch otherwise.
        samples: Samples and point labels prepared by the caller; ``config.data``'s folder and
            splits are then not read (``pointseg map``).
        callbacks: More Lightning callbacks, after pointseg's own (the labelling page's progress
            and cancel: an exception raised in one stops the run).

    Returns:
        The run folder with ``config.yaml``, ``environment.json``, ``checkpoints/{best,last}.ckpt``,
        ``metrics.csv``, ``logs/`` and ``summary.json``.

    Raises:
        PointsegError: for a resume target that is not a run folder or an unsafe or invalid
            checkpoint (checked before anything is written), or a taken run folder.
    """
    with preserved_environment(), quiet_lightning():
        point = resolve_resume(resume) if resume is not None else None
        if point is not None and point.checkpoint is not None:
            check_resumable(point.checkpoint)
        return _fit(config, point, progress, samples, callbacks)


def _fit(
    config: TrainConfig,
    point: ResumePoint | None,
    progress: bool,
    samples: PreparedSamples | None,
    extra_callbacks: Sequence[Callback] = (),
) -> Path:
    checkpoint = point.checkpoint if point is not None else None
    if os.environ.get(RUN_DIR_VARIABLE):
        run_dir = Path(os.environ[RUN_DIR_VARIABLE])  # a DDP process launched by rank zero
    elif point is not None:
        run_dir = point.run_dir
    else:
        run_dir = new_run_dir(config)
    L.seed_everything(config.seed, workers=True, verbose=False)
    if samples is None:
        samples = given_points_samples(config)
    schema, splits = split_samples(config.data) if samples is None else (samples.schema, samples.splits)
    monitor = MONITOR if samples is None else samples.monitor
    band_stats = BandStats.estimate(
        [ref.image_path for ref in splits["train"]], max_images=config.data.band_stats_images
    )

    precision = trainer_precision(config.trainer)

    @rank_zero_only
    def record_session() -> None:
        record = start_run_folder if checkpoint is None else continue_run_folder
        record(run_dir, config, {**run_environment(config, splits), "precision": precision})

    record_session()
    datamodule = SegmentationDataModule(config, schema, splits, band_stats, samples)
    task = SegmentationTask(
        config.model_dump(mode="json", by_alias=True),
        schema.to_dict(),
        band_stats.to_dict(),
        load_pretrained=checkpoint is None,
        monitor=monitor,
    )
    best = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor=monitor,
        mode="max",
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    # Unmonitored: rewritten after every epoch, so a crash loses at most the epoch in progress.
    last = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="last",
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    # Lightning's Timer keeps the elapsed training time in every checkpoint, so a resumed run
    # reports the time of all its sessions, not only the last one.
    timer = Timer(duration=None, verbose=False)
    callbacks: list[Callback] = [best, last, timer, LearningRateMonitor(), MetricsFileCallback(run_dir)]
    interactive = progress and sys.stdout.isatty()
    if interactive:
        callbacks.append(RichProgressBar())
    elif progress:
        callbacks.append(EpochLines())
    trainer_config = config.trainer
    if trainer_config.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor, mode="max", patience=trainer_config.early_stopping_patience))
    if config.optim.ema_decay:
        # The average replaces the weights for validation and in every checkpoint's state_dict
        # (the weights being trained stay under "current_model_state", so a resumed run goes on).
        callbacks.append(EMAWeightAveraging(decay=config.optim.ema_decay))
    callbacks.extend(extra_callbacks)
    trainer = L.Trainer(
        default_root_dir=run_dir,
        max_epochs=trainer_config.max_epochs,
        max_steps=trainer_config.max_steps,
        precision=precision,  # type: ignore[arg-type]
        accelerator=trainer_config.accelerator,
        devices=trainer_config.devices,
        num_nodes=trainer_config.num_nodes,
        strategy=trainer_config.strategy,
        gradient_clip_val=trainer_config.gradient_clip_val,
        check_val_every_n_epoch=trainer_config.check_val_every_n_epoch,
        log_every_n_steps=trainer_config.log_every_n_steps,
        deterministic=trainer_config.deterministic,
        limit_train_batches=trainer_config.limit_train_batches,
        callbacks=callbacks,
        logger=[CSVLogger(run_dir, name="logs"), TensorBoardLogger(run_dir, name="tensorboard")],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=interactive,
        enable_model_summary=False,
    )
    with shared_run_dir(run_dir):
        trainer.fit(task, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
    if trainer.is_global_zero:
        write_json(
            run_dir / "summary.json",
            {
                "best_checkpoint": str(best.best_model_path) if best.best_model_path else None,
                f"best_{monitor}": None if best.best_model_score is None else float(best.best_model_score),
                "epochs": trainer.current_epoch,
                "global_step": trainer.global_step,
                "train_seconds": timer.time_elapsed("train"),
            },
        )
        collect_metrics(run_dir)
    return run_dir
