"""Training with Lightning: a DataModule for the splits and a LightningModule for the task.

Lightning owns the loop. It also provides checkpoints (best on val mIoU, and last), resume,
early stopping, the progress bar, CSV/TensorBoard logs, seeding, gradient clipping, mixed
precision and DDP. This module holds only what is specific to point-supervised segmentation:
train on the point labels (or dense masks), validate on whole images' dense masks with the
same sliding window as prediction, and log the macro mIoU.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
    Timer,
)
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

import pointseg
from pointseg.config import DataConfig, TrainConfig, dump_config
from pointseg.datasets import (
    BandStats,
    PointsDirectory,
    PointSource,
    SampleRef,
    SegmentationDataset,
    SimulatedPoints,
    collate_samples,
    discover_dataset,
    select_refs,
)
from pointseg.datasets.landcoverai import read_split_lists
from pointseg.errors import PointsegError
from pointseg.inference import ArraySource, LabelSink, SlidingWindowPredictor
from pointseg.losses import build_loss
from pointseg.metrics import SegmentationMetrics
from pointseg.models import build_model
from pointseg.raster import atomic_output
from pointseg.schema import ClassSchema
from pointseg.transforms import BatchAugmentation

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


def split_samples(data: DataConfig) -> tuple[ClassSchema, dict[str, list[SampleRef]]]:
    """Pair the dataset's files and split them into ``train``, ``val`` and ``test``.

    ``val`` and ``test`` select ids or groups (tiles, source images); ``train`` is everything else
    unless given. LandCover.ai uses its ``train/val/test.txt`` lists when no split is given.

    Raises:
        PointsegError: if a pattern matches nothing, splits overlap, or train or val is empty.
    """
    discovery = discover_dataset(
        data.format,
        data.root,
        data.schema_file,
        images_dir=data.images_dir,
        masks_dir=data.masks_dir,
        mask_pattern=data.mask_pattern,
    )
    refs = discovery.require_usable()
    lists = read_split_lists(data.root, {ref.id for ref in refs}) if data.format == "landcoverai" else {}
    if lists and data.train is None and not data.val and not data.test:
        splits = {
            name: [ref for ref in refs if ref.id in lists.get(name, set())]
            for name in ("train", "val", "test")
        }
    else:
        val = select_refs(refs, data.val, "data.val")
        test = select_refs(refs, data.test, "data.test")
        held_out = {ref.id for ref in val + test}
        overlap = {ref.id for ref in val} & {ref.id for ref in test}
        if overlap:
            raise PointsegError(f"data.val and data.test share samples: {sorted(overlap)[:5]}")
        if data.train is not None:
            train = select_refs(refs, data.train, "data.train")
            leaked = {ref.id for ref in train} & held_out
            if leaked:
                raise PointsegError(f"data.train includes held-out samples: {sorted(leaked)[:5]}")
        else:
            train = [ref for ref in refs if ref.id not in held_out]
        splits = {"train": train, "val": val, "test": test}
    if not splits["train"]:
        raise PointsegError(f"{data.root}: no training samples left after taking out val and test")
    if not splits["val"]:
        raise PointsegError("data.val is empty: name the ids or groups to validate on (e.g. data.val=[855])")
    return discovery.schema, splits


def point_source(config: TrainConfig) -> PointSource | None:
    """Where training point labels come from: a points folder, or simulation (None for dense masks)."""
    if config.supervision == "dense":
        return None
    if config.points.directory is not None:
        return PointsDirectory(config.points.directory)
    return SimulatedPoints(config.points.protocol())


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
            BatchAugmentation(augment.flips, augment.rotate90, augment.color_jitter, augment.random_crop)
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
            points=point_source(self.config) if self.samples is None else self.samples.train_points,
            with_masks=self.config.supervision == "dense",
            cache_bytes=data.cache_mb << 20,
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
            self.splits[split], self.schema, self.band_stats, points=held_out, with_masks=held_out is None
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
        )
        loss = self.settings.loss
        self.loss = build_loss(loss.name, loss.gamma, loss.class_weights)
        self.val_metrics = SegmentationMetrics(list(self.schema.classes))
        self.test_metrics = SegmentationMetrics(list(self.schema.classes))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` normalised image -> ``(B, K, H, W)`` logits."""
        return self.model(image)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """One step on the labelled pixels (points, or the dense mask)."""
        target = batch["points"] if self.settings.supervision == "points" else batch["mask"]
        loss = self.loss(self(batch["image"]), target)
        batch_size = target.shape[0]
        self.log(
            "train_loss",
            loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=batch_size,
            sync_dist=True,
        )
        labelled = (target != 255).float().mean()
        self.log(
            "train_labelled_fraction",
            labelled,
            on_step=False,
            on_epoch=True,
            batch_size=batch_size,
            sync_dist=True,
        )
        return loss

    def _predict_whole(self, image: torch.Tensor) -> torch.Tensor:
        evaluation = self.settings.eval
        predictor = SlidingWindowPredictor(
            self.model,
            self.schema.num_classes,
            evaluation.tile,
            evaluation.overlap,
            evaluation.batch_size,
            device=image.device,
        )
        sink = LabelSink(image.shape[-2], image.shape[-1])
        predictor.predict(ArraySource(image[0].float().cpu().numpy()), sink)
        return torch.from_numpy(sink.labels).to(image.device).long()[None]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Predict a whole image by sliding window; add its dense mask (or held-out points) to the matrix."""
        target = batch["mask"] if "mask" in batch else batch["points"]
        self.val_metrics.update(self._predict_whole(batch["image"]), target)

    def on_validation_epoch_end(self) -> None:
        """Log macro mIoU, accuracy and per-class IoU over the whole validation set."""
        self._log_report(self.val_metrics, self.monitor.removesuffix("_miou"))

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Like validation, on the test split."""
        self.test_metrics.update(self._predict_whole(batch["image"]), batch["mask"])

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
        """Adam or AdamW, with an optional cosine, poly or plateau schedule."""
        optim = self.settings.optim
        optimizer_class = torch.optim.AdamW if optim.optimizer == "adamw" else torch.optim.Adam
        optimizer = optimizer_class(self.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
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


def collect_metrics(run_dir: Path) -> Path:
    """Merge ``logs/version_*/metrics.csv`` (in session order) into ``<run>/metrics.csv``."""
    rows: list[dict[str, str]] = []
    fields: list[str] = []
    versions = sorted(
        (run_dir / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1])
    )
    for path in versions:
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            fields += [f for f in reader.fieldnames or [] if f not in fields]
            rows.extend(reader)
    target = run_dir / "metrics.csv"
    with atomic_output(target) as temporary, temporary.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return target


def run_environment(config: TrainConfig, splits: dict[str, list[SampleRef]]) -> dict[str, Any]:
    """Versions, git commit, command line and data paths recorded in each run folder."""
    import lightning
    import segmentation_models_pytorch
    import timm

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain"],
                capture_output=True,
                text=True,
                cwd=Path(__file__).resolve().parent,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {
        "command": sys.argv,
        "started": datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "versions": {
            "pointseg": pointseg.__version__,
            "torch": torch.__version__,
            "lightning": lightning.__version__,
            "segmentation_models_pytorch": segmentation_models_pytorch.__version__,
            "timm": timm.__version__,
        },
        "git_commit": commit,
        "git_dirty": dirty,
        "data_root": str(Path(config.data.root).resolve()),
        "splits": {name: [ref.id for ref in refs] for name, refs in splits.items()},
        "points_directory": str(config.points.directory) if config.points.directory else None,
    }


RUN_DIR_VARIABLE = "POINTSEG_RUN_DIR"
"""Set by the first process so that the processes Lightning launches for DDP share its run folder."""


def default_run_name(config: TrainConfig) -> str:
    """``<time or job id>-<format>-<labels>``, e.g. ``20261121-101500-deepglobe-density-0.01``.

    Under SLURM or torchrun every process starts on its own, so the job's id replaces the time.
    """
    if config.supervision == "dense":
        labels = "dense"
    elif config.points.directory is not None:
        labels = "points-" + Path(config.points.directory).name
    else:
        p = config.points
        labels = {
            "density": f"density-{p.density:g}",
            "per-class": f"per-class-{p.per_class}",
            "per-region": f"per-region-{p.min_area}",
        }[p.strategy]
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID")
    stamp = f"job{job}" if job and job != "none" else f"{datetime.now():%Y%m%d-%H%M%S}"
    return f"{stamp}-{config.data.format}-{labels}"


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically."""
    with atomic_output(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, default=str) + "\n")


def train(
    config: TrainConfig,
    resume: Path | None = None,
    progress: bool = True,
    samples: PreparedSamples | None = None,
) -> Path:
    """Train a model as configured and return its run folder.

    Args:
        config: Validated settings.
        resume: A run folder or checkpoint to continue from (epoch count, optimizer and all).
        progress: Show Lightning's rich progress bar.
        samples: Samples and point labels prepared by the caller; ``config.data``'s folder and
            splits are then not read (``pointseg map``).

    Returns:
        The run folder with ``config.yaml``, ``environment.json``, ``checkpoints/{best,last}.ckpt``,
        ``metrics.csv``, ``logs/`` and ``summary.json``.
    """
    checkpoint: Path | None = None
    if resume is not None:
        checkpoint = resume / "checkpoints" / "last.ckpt" if resume.is_dir() else resume
        if not checkpoint.is_file():
            raise PointsegError(f"--resume {resume}: no checkpoint at {checkpoint}")
        run_dir = checkpoint.parent.parent
    elif os.environ.get(RUN_DIR_VARIABLE):
        run_dir = Path(os.environ[RUN_DIR_VARIABLE])  # a DDP process launched by the first one
    else:
        run_dir = Path(config.output_dir) / (config.run_name or default_run_name(config))
        if (run_dir / "checkpoints").exists():
            raise PointsegError(
                f"{run_dir} already holds a run; choose another run_name or use --resume {run_dir}"
            )
        os.environ[RUN_DIR_VARIABLE] = str(run_dir)
    # Known, harmless: Lightning's own use of a deprecated torch API, and a resumed run's checkpoint folder.
    warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    L.seed_everything(config.seed, workers=True, verbose=False)
    schema, splits = split_samples(config.data) if samples is None else (samples.schema, samples.splits)
    monitor = MONITOR if samples is None else samples.monitor
    band_stats = BandStats.estimate(
        [ref.image_path for ref in splits["train"]], max_images=config.data.band_stats_images
    )
    is_global_zero = int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0
    if is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_output(run_dir / "config.yaml") as temporary:
            temporary.write_text(dump_config(config))
        write_json(
            run_dir
            / ("environment.json" if checkpoint is None else f"environment-resume-{int(time.time())}.json"),
            run_environment(config, splits),
        )
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
        save_last=True,
        auto_insert_metric_name=False,
    )
    # Lightning's Timer keeps the elapsed training time in every checkpoint, so a resumed run
    # reports the time of all its sessions, not only the last one.
    timer = Timer(duration=None, verbose=False)
    callbacks: list[Callback] = [best, timer, LearningRateMonitor(), MetricsFileCallback(run_dir)]
    if progress:
        callbacks.append(RichProgressBar())
    trainer_config = config.trainer
    if trainer_config.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor, mode="max", patience=trainer_config.early_stopping_patience))
    trainer = L.Trainer(
        default_root_dir=run_dir,
        max_epochs=trainer_config.max_epochs,
        max_steps=trainer_config.max_steps,
        precision=trainer_config.precision,
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
        enable_progress_bar=progress,
        enable_model_summary=False,
    )
    trainer.fit(task, datamodule=datamodule, ckpt_path=checkpoint)
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
