import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pointseg.checkpoint import load_trained_model
from pointseg.config import TrainConfig, load_config
from pointseg.errors import PointsegError
from pointseg.training import RUN_DIR_VARIABLE, split_samples, train

CPU_SMALL = Path(__file__).resolve().parents[1] / "configs" / "cpu_small.yaml"


def small_config(data: Path, out: Path, *extra: str) -> TrainConfig:
    """The shipped small CPU config, pointed at tiny fake rasters and shrunk to seconds."""
    return load_config(
        CPU_SMALL,
        [
            f"data.root={data}",
            "data.val=['102']",
            "data.test=['103']",
            "data.crop_size=64",
            "data.crops_per_image=4",
            "data.batch_size=4",
            "data.num_workers=0",
            "points.density=0.2",
            "eval.tile=64",
            "trainer.log_every_n_steps=1",
            f"output_dir={out}",
            *extra,
        ],
    )


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as file:
        return list(csv.DictReader(file))


def epoch_losses(run_dir: Path) -> list[float]:
    return [float(row["train_loss_epoch"]) for row in read_metrics(run_dir) if row.get("train_loss_epoch")]


@pytest.mark.integration
def test_small_config_trains_on_points_loss_falls_and_checkpoints(
    fake_deepglobe: Path, tmp_path: Path
) -> None:
    config = small_config(
        fake_deepglobe, tmp_path, "trainer.max_epochs=5", "run_name=fast", "optim.schedule=none"
    )
    run_dir = train(config, progress=False)
    losses = epoch_losses(run_dir)
    assert len(losses) == 5
    assert losses[-1] < 0.8 * losses[0], losses
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and (
        run_dir / "checkpoints" / "last.ckpt"
    ).is_file()
    for name in ("config.yaml", "environment.json", "summary.json", "metrics.csv"):
        assert (run_dir / name).is_file(), name
    environment = json.loads((run_dir / "environment.json").read_text())
    assert environment["splits"]["val"] == ["102_sat"] and environment["splits"]["test"] == ["103_sat"]
    assert set(environment["splits"]["train"]) == {"100_sat", "101_sat"}
    assert "torch" in environment["versions"]
    # Trained on points only: the labelled fraction of the training crops is the points' density.
    fractions = [
        float(r["train_labelled_fraction"]) for r in read_metrics(run_dir) if r.get("train_labelled_fraction")
    ]
    assert all(0.1 < f < 0.3 for f in fractions), fractions
    summary = json.loads((run_dir / "summary.json").read_text())
    trained = load_trained_model(run_dir / "checkpoints" / "best.ckpt")
    assert trained.val_miou == pytest.approx(summary["best_val_miou"])
    assert 0 < trained.val_miou <= 1


@pytest.mark.integration
def test_resume_continues_the_epoch_count(fake_deepglobe: Path, tmp_path: Path) -> None:
    first = train(
        small_config(fake_deepglobe, tmp_path, "trainer.max_epochs=2", "run_name=resumed"), progress=False
    )
    first_summary = json.loads((first / "summary.json").read_text())
    assert first_summary["epochs"] == 2
    (first / "summary.json").unlink()  # as in a run killed before it could write its summary
    again = train(
        small_config(fake_deepglobe, tmp_path, "trainer.max_epochs=3"), resume=first, progress=False
    )
    assert again == first
    summary = json.loads((first / "summary.json").read_text())
    assert summary["epochs"] == 3
    # the training time of the first session travels in the checkpoint and is added to the second one's
    assert summary["train_seconds"] > first_summary["train_seconds"]
    epochs = sorted({int(row["epoch"]) for row in read_metrics(first) if row.get("val_miou")})
    assert epochs == [0, 1, 2]  # history of both sessions is kept in metrics.csv


def test_existing_run_folder_is_not_overwritten(fake_deepglobe: Path, tmp_path: Path) -> None:
    (tmp_path / "taken" / "checkpoints").mkdir(parents=True)
    with pytest.raises(PointsegError, match="already holds a run"):
        train(small_config(fake_deepglobe, tmp_path, "run_name=taken"), progress=False)


def test_resume_from_missing_checkpoint_is_an_error(fake_deepglobe: Path, tmp_path: Path) -> None:
    with pytest.raises(PointsegError, match="no checkpoint"):
        train(small_config(fake_deepglobe, tmp_path), resume=tmp_path / "nothing-here", progress=False)


def test_splits_are_disjoint_and_val_is_required(fake_deepglobe: Path, tmp_path: Path) -> None:
    config = small_config(fake_deepglobe, tmp_path)
    _, splits = split_samples(config.data)
    assert [r.id for r in splits["val"]] == ["102_sat"]
    with pytest.raises(PointsegError, match=r"data\.val is empty"):
        split_samples(small_config(fake_deepglobe, tmp_path, "data.val=[]").data)
    with pytest.raises(PointsegError, match="matches no sample"):
        split_samples(small_config(fake_deepglobe, tmp_path, "data.val=['999']").data)
    with pytest.raises(PointsegError, match="held-out"):
        split_samples(small_config(fake_deepglobe, tmp_path, "data.train=['102']").data)


@pytest.mark.integration
def test_dense_supervision_trains_on_masks(fake_deepglobe: Path, tmp_path: Path) -> None:
    config = small_config(
        fake_deepglobe,
        tmp_path,
        "supervision=dense",
        "loss.name=ce",
        "trainer.max_epochs=1",
        "run_name=dense",
    )
    run_dir = train(config, progress=False)
    fractions = [
        float(r["train_labelled_fraction"]) for r in read_metrics(run_dir) if r.get("train_labelled_fraction")
    ]
    assert fractions and all(f > 0.9 for f in fractions)


@pytest.mark.integration
def test_ddp_two_processes_on_cpu(fake_deepglobe: Path, tmp_path: Path) -> None:
    """Two DDP processes (gloo) launched by Lightning from the real command line."""
    command = [
        sys.executable,
        "-m",
        "pointseg",
        "train",
        "--config",
        str(CPU_SMALL),
        "--no-progress",
        "--set",
        f"data.root={fake_deepglobe}",
        "--set",
        "data.val=['102', '103']",
        "--set",
        "data.test=[]",
        "--set",
        "data.crop_size=64",
        "--set",
        "data.crops_per_image=4",
        "--set",
        "data.batch_size=2",
        "--set",
        "data.num_workers=0",
        "--set",
        "eval.tile=64",
        "--set",
        "trainer.max_epochs=1",
        "--set",
        "trainer.accelerator=cpu",
        "--set",
        "trainer.devices=2",
        "--set",
        "trainer.strategy=ddp",
        "--set",
        "trainer.precision=32-true",
        "--set",
        f"output_dir={tmp_path}",
        "--set",
        "run_name=ddp",
    ]
    environment = {k: v for k, v in os.environ.items() if k != RUN_DIR_VARIABLE}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "distributed_backend=gloo" in done.stderr + done.stdout
    assert "All distributed processes registered" in done.stderr + done.stdout
    run_dir = tmp_path / "ddp"
    summary = json.loads((run_dir / "summary.json").read_text())
    # 2 training images x 4 crops = 8 samples, 2 per batch, split over 2 processes: 2 steps per epoch.
    assert summary["global_step"] == 2
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 0 and checkpoint["global_step"] == 2


@pytest.mark.parametrize("schedule", ["none", "cosine", "poly", "plateau"])
@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_optimisers_and_schedules(schedule: str, optimizer: str, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from pointseg.datasets import deepglobe
    from pointseg.training import SegmentationTask

    overrides = [f"optim.schedule={schedule}", f"optim.optimizer={optimizer}", "optim.lr=0.01"]
    config = load_config(CPU_SMALL, [*overrides, "optim.weight_decay=0.001"])
    task = SegmentationTask(
        config.model_dump(mode="json", by_alias=True),
        deepglobe.SCHEMA.to_dict(),
        {"mean": [0.0] * 3, "std": [1.0] * 3},
        load_pretrained=False,
    )
    # configure_optimizers asks Lightning's trainer for the number of steps
    task._trainer = SimpleNamespace(estimated_stepping_batches=10)
    configured = task.configure_optimizers()
    optim = configured if isinstance(configured, torch.optim.Optimizer) else configured["optimizer"]
    assert type(optim) is {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optimizer]
    assert optim.param_groups[0]["weight_decay"] == 0.001
    if schedule == "none":
        assert isinstance(configured, torch.optim.Optimizer)
        return
    scheduler = configured["lr_scheduler"]
    if schedule == "plateau":
        assert scheduler["monitor"] == "val_miou" and scheduler["scheduler"].mode == "max"
        return
    assert scheduler["interval"] == "step"
    rates = []
    for _ in range(10):
        rates.append(optim.param_groups[0]["lr"])
        optim.step()
        scheduler["scheduler"].step()
    assert rates[0] == pytest.approx(0.01) and rates[-1] < 0.002  # decays to near zero over the 10 steps
    assert all(a >= b for a, b in itertools.pairwise(rates))
