"""Benchmark: the Lightning training loop against a bare loop of forward + backward + step.

Both train the small CPU config's network (DeepLabV3+, ResNet-18, GroupNorm, Adam, partial CE on 1%
points; precision ``auto``: bf16 autocast where the CPU computes bfloat16 natively, else float32) on
the same batches: the Lightning side gets them from pointseg's
DataModule (windowed reads, point labels, kornia augmentation, logging); the bare side gets the
same batches already in memory. The figure is Lightning's images/s divided by the bare loop's,
timed after warm-up steps. Target >= 0.85.

    python -m benchmarks.training_loop [--data ../shared/data/deepglobe/train] [--steps 12]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pointseg.torchvision_compat  # noqa: F401  # isort: skip  (shim first: torchvision)
import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from benchmarks.common import Result, report
from pointseg.config import load_config
from pointseg.datasets import split_samples
from pointseg.losses import build_loss
from pointseg.normalization import BandStats
from pointseg.training import SegmentationDataModule, SegmentationTask, trainer_precision

ROOT = Path(__file__).resolve().parents[1]


class StepTimer(Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = 0.0
        self.end = 0.0
        self.images = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        """Start the clock at the first timed batch."""
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        """Count the batch's images and stop the clock."""
        if batch_idx >= self.warmup:
            self.images += batch["image"].shape[0]
            self.end = time.perf_counter()


def main() -> Result:
    """Time both loops and print the ratio."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "deepglobe" / "train")
    parser.add_argument("--steps", type=int, default=12, help="timed steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    total = args.steps + args.warmup
    config = load_config(
        ROOT / "configs" / "cpu_small.yaml", [f"data.root={args.data}", "trainer.max_epochs=1"]
    )
    schema, splits = split_samples(config.data)
    band_stats = BandStats.estimate([ref.image_path for ref in splits["train"]])
    hparams = (
        config.model_dump(mode="json", by_alias=True),
        schema.to_dict(),
        band_stats.to_dict(),
    )

    precision = trainer_precision(config.trainer)
    L.seed_everything(0, verbose=False)
    datamodule = SegmentationDataModule(config, schema, splits, band_stats)
    task = SegmentationTask(*hparams, load_pretrained=False)
    timer = StepTimer(args.warmup)
    with tempfile.TemporaryDirectory() as work:
        trainer = L.Trainer(
            max_epochs=1,
            limit_train_batches=total,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            precision=precision,  # type: ignore[arg-type]
            accelerator="cpu",
            gradient_clip_val=config.trainer.gradient_clip_val,
            logger=CSVLogger(work),
            callbacks=[timer],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=config.trainer.log_every_n_steps,
        )
        trainer.fit(task, datamodule=datamodule)
    lightning_rate = timer.images / (timer.end - timer.start)

    # The same batches (augmented as Lightning's were), in memory, through a plain loop.
    L.seed_everything(0, verbose=False)
    batches = []
    datamodule.trainer = None
    for index, batch in enumerate(datamodule.train_dataloader()):
        if index == total:
            break
        batches.append(datamodule.augment(batch) if datamodule.augment else batch)
    model = SegmentationTask(*hparams, load_pretrained=False).model.train()
    loss_function = build_loss("pce")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.lr)
    images = 0
    for index, batch in enumerate(batches):
        if index == args.warmup:
            start = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16-mixed"):
            loss = loss_function(model(batch["image"]), batch["points"])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.trainer.gradient_clip_val or float("inf"))
        optimizer.step()
        if index >= args.warmup:
            images += batch["image"].shape[0]
    bare_rate = images / (time.perf_counter() - start)
    ratio = lightning_rate / bare_rate
    return report(
        Result(
            "training loop / bare loop (images/s)",
            ratio,
            ">= 0.85",
            ratio >= 0.85,
            f"{lightning_rate:.2f} vs {bare_rate:.2f} images/s; "
            f"{args.steps} timed steps of {config.data.batch_size} "
            f"{config.data.crop_size}² crops, {config.data.num_workers} loader workers, {precision}",
        )
    )


if __name__ == "__main__":
    main()
