import csv
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch

from fake_data import write_deepglobe, write_folder_dataset
from pointseg.checkpoint import load_trained_model
from pointseg.config import TrainConfig, TrainerConfig, dump_config, load_config
from pointseg.datasets import discover_dataset
from pointseg.errors import PointsegError
from pointseg.inference import fast_bfloat16
from pointseg.normalization import BandStats
from pointseg.runs import RUN_DIR_VARIABLE
from pointseg.schema import IGNORE_INDEX
from pointseg.training import (
    Callback,
    EpochLines,
    SegmentationDataModule,
    SegmentationTask,
    train,
    trainer_precision,
)

Cli = Callable[..., tuple[int, str, str]]  # the `cli` fixture of tests/conftest.py
CPU_SMALL = Path(__file__).resolve().parents[1] / "configs" / "cpu_small.yaml"


def small_overrides(data: Path, out: Path) -> list[str]:
    """``--set`` values that point the shipped small CPU config at tiny fake rasters, shrunk to seconds."""
    return [
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
    ]


def small_config(data: Path, out: Path, *extra: str) -> TrainConfig:
    """The shipped small CPU config, pointed at tiny fake rasters and shrunk to seconds."""
    return load_config(CPU_SMALL, [*small_overrides(data, out), *extra])


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as file:
        return list(csv.DictReader(file))


def epoch_losses(run_dir: Path) -> list[float]:
    return [float(row["train_loss_epoch"]) for row in read_metrics(run_dir) if row.get("train_loss_epoch")]


def recorded_training_batches(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Make every ``SegmentationTask.training_step`` append its batch to the returned list."""
    batches: list[dict] = []
    step = SegmentationTask.training_step

    def recording_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        batches.append(batch)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(SegmentationTask, "training_step", recording_step)
    return batches


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
    # The small config's precision is auto: what this CPU computes fast.
    assert environment["precision"] == ("bf16-mixed" if fast_bfloat16("cpu") else "32-true")
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
def test_atrous_rates_and_output_stride_are_trained_with_and_rebuilt_from_the_checkpoint(
    fake_deepglobe: Path, tmp_path: Path
) -> None:
    config = small_config(
        fake_deepglobe,
        tmp_path,
        "trainer.max_epochs=1",
        "model.atrous_rates=[2, 4, 6]",
        "model.output_stride=8",
        "run_name=rates",
    )
    run_dir = train(config, progress=False)
    # dilation leaves the weights' shapes alone: only the rebuilt network shows whether the settings came back
    model = load_trained_model(run_dir / "checkpoints" / "best.ckpt").model
    separable = [model.decoder.aspp[0].convs[i][0][0] for i in (1, 2, 3)]
    assert [conv.dilation for conv in separable] == [(2, 2), (4, 4), (6, 6)]
    assert model.encoder.output_stride == 8


@pytest.mark.integration
def test_resume_continues_the_epoch_count(fake_deepglobe: Path, tmp_path: Path) -> None:
    first = train(
        small_config(fake_deepglobe, tmp_path, "trainer.max_epochs=2", "run_name=resumed"), progress=False
    )
    first_summary = json.loads((first / "summary.json").read_text())
    assert first_summary["epochs"] == 2
    saved = read_checkpoint_file(first / "checkpoints" / "last.ckpt")["callbacks"]["Timer"]
    first_session_seconds = saved["time_elapsed"]["train"]
    assert first_session_seconds > 0
    (first / "summary.json").unlink()  # as in a run killed before it could write its summary
    again = train(
        small_config(fake_deepglobe, tmp_path, "trainer.max_epochs=3"), resume=first, progress=False
    )
    assert again == first
    summary = json.loads((first / "summary.json").read_text())
    assert summary["epochs"] == 3
    # The training time of the first session travels in the checkpoint and is added to the second one's.
    # (Compared with the checkpoint's time, not the first summary's: that one also counts what ran after
    # the last checkpoint was written, which can outlast the third epoch on a busy machine.)
    assert summary["train_seconds"] > first_session_seconds
    epochs = sorted({int(row["epoch"]) for row in read_metrics(first) if row.get("val_miou")})
    assert epochs == [0, 1, 2]  # history of both sessions is kept in metrics.csv


class WeightRecorder(Callback):
    """Keeps a copy of one parameter of the network after every optimiser step."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.values: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.values.append(dict(pl_module.named_parameters())[self.name].detach().clone())


def read_checkpoint_file(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.mark.integration
def test_ema_decay_saves_the_moving_average_and_a_resumed_run_continues_it(
    fake_deepglobe: Path, tmp_path: Path
) -> None:
    head = "model.segmentation_head.0.weight"
    recorder = WeightRecorder(head)
    config = small_config(
        fake_deepglobe, tmp_path, "trainer.max_epochs=2", "optim.ema_decay=0.6", "run_name=averaged"
    )
    run_dir = train(config, progress=False, callbacks=[recorder])
    average = recorder.values[0]  # the first step copies the weights, every later one blends them in
    for value in recorder.values[1:]:
        average = 0.6 * average + 0.4 * value
    last = read_checkpoint_file(run_dir / "checkpoints" / "last.ckpt")
    torch.testing.assert_close(last["state_dict"][head], average)
    assert int(last["averaging_state"]["n_averaged"]) == len(recorder.values)
    # the weights being trained travel beside the average, so a resumed run goes on from them
    torch.testing.assert_close(last["current_model_state"][head], recorder.values[-1])
    assert not torch.allclose(average, recorder.values[-1])
    trained = load_trained_model(run_dir / "checkpoints" / "last.ckpt")
    torch.testing.assert_close(trained.model.state_dict()["segmentation_head.0.weight"], average)
    # resumed: the average goes on from the saved one, not from the weights of the third epoch
    resumed = WeightRecorder(head)
    again = train(
        small_config(fake_deepglobe, tmp_path, "trainer.max_epochs=3", "optim.ema_decay=0.6"),
        resume=run_dir,
        progress=False,
        callbacks=[resumed],
    )
    assert json.loads((again / "summary.json").read_text())["epochs"] == 3
    for value in resumed.values:
        average = 0.6 * average + 0.4 * value
    last = read_checkpoint_file(run_dir / "checkpoints" / "last.ckpt")
    torch.testing.assert_close(last["state_dict"][head], average)
    assert int(last["averaging_state"]["n_averaged"]) == len(recorder.values) + len(resumed.values)
    plain = train(
        small_config(fake_deepglobe, tmp_path, "trainer.max_epochs=1", "run_name=plain"), progress=False
    )
    assert "current_model_state" not in read_checkpoint_file(plain / "checkpoints" / "last.ckpt")


def test_existing_run_folder_is_not_overwritten(fake_deepglobe: Path, tmp_path: Path) -> None:
    (tmp_path / "taken" / "checkpoints").mkdir(parents=True)
    with pytest.raises(PointsegError, match="already holds a run"):
        train(small_config(fake_deepglobe, tmp_path, "run_name=taken"), progress=False)


def test_resume_from_missing_checkpoint_is_an_error(fake_deepglobe: Path, tmp_path: Path) -> None:
    with pytest.raises(PointsegError, match="no checkpoint"):
        train(small_config(fake_deepglobe, tmp_path), resume=tmp_path / "nothing-here", progress=False)


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


@pytest.mark.integration
def test_expansion_and_propagation_train_with_weights_and_count_only_clicked_points(
    fake_deepglobe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = recorded_training_batches(monkeypatch)
    config = small_config(
        fake_deepglobe,
        tmp_path,
        "points.expansion.method=slic",
        "points.expansion.superpixel_size=50",
        "points.expansion.weight=0.3",
        "loss.propagation_weight=0.5",
        "augment.random_crop=0.25",
        "trainer.max_epochs=1",
        "run_name=spread",
    )
    run_dir = train(config, progress=False)
    assert batches
    for batch in batches:
        weights, clicked = batch["point_weights"], batch["points"] != 255
        expanded = batch["expanded_points"] != 255
        assert weights.dtype == torch.float32 and weights.shape == batch["points"].shape
        assert (weights[clicked] == 1).all() and (weights[expanded & ~clicked] == pytest.approx(0.3))
        assert (weights[~expanded] == 0).all() and expanded.sum() > clicked.sum()
        assert batch["valid"].dtype == torch.bool
    rows = read_metrics(run_dir)
    # The labelled fraction still counts the clicked points only (density 0.2), not the expanded pixels.
    fractions = [float(r["train_labelled_fraction"]) for r in rows if r.get("train_labelled_fraction")]
    assert fractions and all(0.1 < f < 0.3 for f in fractions), fractions
    expanded_fraction = sum(float((b["expanded_points"] != 255).float().mean()) for b in batches) / len(
        batches
    )
    assert expanded_fraction > 0.3
    propagation = [float(r["train_propagation_loss"]) for r in rows if r.get("train_propagation_loss")]
    assert propagation and all(math.isfinite(v) and v > 0 for v in propagation)
    loss = [float(r["train_loss_epoch"]) for r in rows if r.get("train_loss_epoch")]
    assert loss and all(math.isfinite(v) for v in loss)


@pytest.mark.integration
def test_expansion_and_propagation_are_off_by_default(
    fake_deepglobe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = recorded_training_batches(monkeypatch)
    config = small_config(
        fake_deepglobe, tmp_path, "trainer.max_epochs=1", "trainer.limit_train_batches=1", "run_name=plain"
    )
    assert config.points.expansion.method == "none" and config.loss.propagation_weight == 0
    run_dir = train(config, progress=False)
    assert batches and not set(batches[0]) & {"point_weights", "expanded_points", "valid"}
    assert not any(r.get("train_propagation_loss") for r in read_metrics(run_dir))


def cpu_small_task(*overrides: str) -> SegmentationTask:
    """An untrained task of the small CPU config: DeepGlobe's classes, 3 bands, no pretrained weights."""
    from pointseg.datasets import deepglobe

    config = load_config(CPU_SMALL, list(overrides))
    return SegmentationTask(
        config.model_dump(mode="json", by_alias=True),
        deepglobe.SCHEMA.to_dict(),
        {"mean": [0.0] * 3, "std": [1.0] * 3},
        load_pretrained=False,
    )


@pytest.mark.parametrize("schedule", ["none", "cosine", "poly", "plateau"])
@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_optimisers_and_schedules(schedule: str, optimizer: str, tmp_path: Path) -> None:
    overrides = [f"optim.schedule={schedule}", f"optim.optimizer={optimizer}", "optim.lr=0.01"]
    task = cpu_small_task(*overrides, "optim.weight_decay=0.001")
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


def test_class_balance_weighs_each_class_of_a_batch_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    from pointseg.losses import batch_class_balance, partial_cross_entropy

    def make_task(balance: bool) -> SegmentationTask:
        task = cpu_small_task(f"loss.class_balance={str(balance).lower()}")
        monkeypatch.setattr(task, "log", lambda *args, **kwargs: None)
        return task

    torch.manual_seed(0)
    image = torch.randn(2, 3, 64, 64)
    points = torch.full((2, 64, 64), 255)
    points[0, :3, 0] = 1  # three points of class 1, one of class 4
    points[1, 5, 5] = 4
    batch = {"image": image, "points": points}
    balanced, plain = make_task(True), make_task(False)
    plain.load_state_dict(balanced.state_dict())
    balanced.eval(), plain.eval()
    with torch.no_grad():
        logits = balanced(image)
        expected = partial_cross_entropy(logits, points, weight=batch_class_balance(points, logits.shape[1]))
        assert balanced.training_step(batch, 0).item() == pytest.approx(expected.item(), rel=1e-5)
        assert plain.training_step(batch, 0).item() == pytest.approx(
            partial_cross_entropy(logits, points).item(), rel=1e-5
        )
        assert expected.item() != pytest.approx(partial_cross_entropy(logits, points).item(), rel=1e-5)


def test_consistency_adds_the_perturbed_copy_loss_and_keeps_running_statistics_of_the_crops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pointseg import training
    from pointseg.losses import confident_consistency_loss, partial_cross_entropy

    perturbed = torch.randn(2, 3, 64, 64)
    calls: list[tuple[torch.Tensor, float]] = []

    def perturb(image: torch.Tensor, strength: float) -> torch.Tensor:
        calls.append((image, strength))
        return perturbed

    monkeypatch.setattr(training, "strongly_perturbed", perturb)
    task = cpu_small_task(
        "model.norm=batch",
        "loss.consistency_weight=0.5",
        "loss.consistency_threshold=0.2",
        "loss.consistency_strength=0.3",
    )
    logged: dict[str, float] = {}
    monkeypatch.setattr(
        task,
        "log",
        lambda name, value, **kwargs: logged.setdefault(name, float(torch.as_tensor(value).detach())),
    )
    torch.manual_seed(0)
    image = torch.randn(2, 3, 64, 64)
    points = torch.full((2, 64, 64), 255)
    points[:, 10, 10], points[:, 40, 20] = 1, 3
    valid = torch.ones(2, 64, 64, dtype=torch.bool)
    valid[:, :, :8] = False
    state = {name: value.clone() for name, value in task.state_dict().items()}
    task.train()
    torch.manual_seed(1)  # the same dropout in the decoder for the task and the references
    loss = task.training_step({"image": image, "points": points, "valid": valid}, 0)
    assert len(calls) == 1 and calls[0][0] is image and calls[0][1] == 0.3  # the crops, at the set strength
    # The running statistics are those of one training-mode pass over the crops alone.
    crops_only = cpu_small_task("model.norm=batch")
    crops_only.load_state_dict(state)
    crops_only.train()
    torch.manual_seed(1)
    crops_only(image)
    for name, buffer in crops_only.state_dict().items():
        if "running" in name:
            assert torch.allclose(task.state_dict()[name], buffer), name
    # The logits of both views, recomputed by hand in the same order.
    reference = cpu_small_task("model.norm=batch")
    reference.load_state_dict(state)
    reference.train()
    torch.manual_seed(1)
    with torch.no_grad():
        logits = reference(image)
        for module in reference.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.momentum = 0.0
        perturbed_logits = reference(perturbed)
    consistency = confident_consistency_loss(perturbed_logits, logits, 0.2, valid)
    assert consistency.item() > 0
    assert logged["train_consistency_loss"] == pytest.approx(consistency.item(), rel=1e-4)
    expected = partial_cross_entropy(logits, points) + 0.5 * consistency
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


@pytest.mark.integration
def test_consistency_training_gets_the_valid_mask_and_logs_its_loss(
    fake_deepglobe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = recorded_training_batches(monkeypatch)
    config = small_config(
        fake_deepglobe,
        tmp_path,
        "loss.consistency_weight=1",
        "loss.consistency_threshold=0",
        "trainer.max_epochs=1",
        "run_name=consistent",
    )
    run_dir = train(config, progress=False)
    assert batches and all("valid" in batch for batch in batches)
    rows = read_metrics(run_dir)
    values = [float(r["train_consistency_loss"]) for r in rows if r.get("train_consistency_loss")]
    assert values and all(math.isfinite(v) and v > 0 for v in values)


def test_one_parameter_group_at_the_default_encoder_learning_rate() -> None:
    task = cpu_small_task()
    task._trainer = SimpleNamespace(estimated_stepping_batches=10)
    configured = task.configure_optimizers()
    optim = configured if isinstance(configured, torch.optim.Optimizer) else configured["optimizer"]
    # as before the setting existed, so older checkpoints' optimizer states still load on resume
    assert len(optim.param_groups) == 1


def test_encoder_learning_rate_scale() -> None:
    task = cpu_small_task("optim.lr=0.01", "optim.encoder_lr_scale=0.1")
    task._trainer = SimpleNamespace(estimated_stepping_batches=10)
    optim = task.configure_optimizers()["optimizer"]
    encoder, decoder = optim.param_groups
    assert (encoder["name"], decoder["name"]) == ("encoder", "decoder")
    assert encoder["lr"] == pytest.approx(0.001) and decoder["lr"] == pytest.approx(0.01)
    assert {id(p) for p in encoder["params"]} == {id(p) for p in task.model.encoder.parameters()}
    # every parameter is in exactly one group
    grouped = [id(p) for group in optim.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in task.parameters())


@pytest.mark.integration
def test_train_twice_in_one_process_keeps_runs_apart_and_the_process_unchanged(
    fake_deepglobe: Path, tmp_path: Path
) -> None:
    from lightning_utilities.core import rank_zero

    environment, filters = dict(os.environ), list(warnings.filters)
    first = train(
        small_config(fake_deepglobe, tmp_path, "trainer.max_epochs=1", "run_name=first"), progress=False
    )
    assert dict(os.environ) == environment and warnings.filters == filters and not rank_zero.log.filters
    second = train(
        small_config(fake_deepglobe, tmp_path, "trainer.max_epochs=1", "run_name=second"), progress=False
    )
    assert (first, second) == (tmp_path / "first", tmp_path / "second")
    assert load_config(first / "config.yaml").run_name == "first"
    assert (second / "checkpoints" / "last.ckpt").is_file() and (second / "summary.json").is_file()


@pytest.mark.integration
def test_a_run_stopped_before_its_first_checkpoint_resumes_from_scratch(
    fake_deepglobe: Path, tmp_path: Path
) -> None:
    config = small_config(fake_deepglobe, tmp_path, "trainer.max_epochs=1", "run_name=early")
    run_dir = tmp_path / "early"
    (run_dir / "logs" / "version_0").mkdir(parents=True)
    (run_dir / "logs" / "version_0" / "metrics.csv").write_text("epoch,val_miou\n7,0.99\n")
    (run_dir / "config.yaml").write_text(dump_config(config))
    assert train(config, resume=run_dir, progress=False) == run_dir
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert {row["epoch"] for row in read_metrics(run_dir) if row.get("val_miou")} == {"0"}


@pytest.mark.integration
def test_kill_9_loses_at_most_the_epoch_in_progress_and_resume_needs_only_the_run_folder(
    fake_deepglobe: Path, tmp_path: Path, cli
) -> None:
    """A training killed with SIGKILL resumes from the epoch before the kill, from its saved config."""
    settings = [*small_overrides(fake_deepglobe, tmp_path), "trainer.max_epochs=40", "run_name=killed"]
    # With a learning rate this small validation never improves: best.ckpt stays at epoch 0.
    settings.append("optim.lr=1e-9")
    command = [sys.executable, "-m", "pointseg", "train", "--config", str(CPU_SMALL)]
    command += [part for value in settings for part in ("--set", value)]
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:  # stdout is a pipe: one plain line per epoch
        lines.append(line)
        if line.startswith("epoch 3/40"):
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    process.stdout.close()
    assert process.returncode == -signal.SIGKILL, lines
    assert (
        "GPU available" in log.read_text() and "litlogger" not in log.read_text()
    )  # Lightning's tip is hidden
    assert "train_loss" in lines[-1] and "val_miou" in lines[-1] and "left ~" in lines[-1]
    run_dir = tmp_path / "killed"
    done = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    assert done >= 1  # epochs 0-2 had ended; the third may have been saving when it was killed
    target = done + 3
    code, out, err = cli("train", "--resume", run_dir, "--set", f"trainer.max_epochs={target}")
    assert code == 0, err
    assert f"epoch {done + 2}/{target}" in out and f"epoch {target}/{target}" in out
    assert "best val mIoU: " in out and f"best checkpoint: {run_dir / 'checkpoints' / 'best.ckpt'}" in out
    assert f"next: pointseg evaluate --checkpoint {run_dir / 'checkpoints' / 'best.ckpt'}" in out
    assert "litlogger" not in out + err and "Tip" not in out + err
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] == target
    validated = {int(row["epoch"]) for row in read_metrics(run_dir) if row.get("val_miou")}
    assert validated == set(range(target))
    # the run keeps both the settings it started with and the ones it continued with
    assert load_config(run_dir / "config.yaml").trainer.max_epochs == target
    (before,) = run_dir.glob("config-before-*.yaml")
    assert load_config(before).trainer.max_epochs == 40


class RunsCode:
    """Unpickling this creates a file: a stand-in for a checkpoint that runs code when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return Path.touch, (self.marker,)


def resumable_run(root: Path, name: str, checkpoint: object, config: TrainConfig) -> Path:
    run_dir = root / name
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(dump_config(config))
    if isinstance(checkpoint, bytes):
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(checkpoint)
    else:
        torch.save(checkpoint, run_dir / "checkpoints" / "last.ckpt")
    return run_dir


def test_a_bad_checkpoint_fails_the_resume_with_one_line_and_writes_nothing(
    fake_deepglobe: Path, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    config = small_config(fake_deepglobe, tmp_path)
    saved = config.model_dump(mode="json", by_alias=True)
    hparams = {"config": saved, "schema": {}, "band_stats": {}}
    marker = tmp_path / "code-was-run"
    cases = {
        "pickle": ({"state_dict": {}, "hyper_parameters": hparams, "x": RunsCode(marker)}, "refused"),
        "text": (b"hello", "not a readable PyTorch checkpoint"),
        "no-weights": ({"hyper_parameters": hparams}, "has no state_dict"),
        "unknown-key": (
            {"state_dict": {}, "hyper_parameters": {**hparams, "config": {**saved, "colour": 1}}},
            "colour: Extra inputs are not permitted",
        ),
        "empty-config": (
            {"state_dict": {}, "hyper_parameters": {**hparams, "config": {}}},
            "data: Field required",
        ),
    }
    for name, (checkpoint, expected) in cases.items():
        run_dir = resumable_run(tmp_path / "runs", name, checkpoint, config)
        files = sorted(run_dir.rglob("*"))
        code, _, err = cli("train", "--resume", run_dir)
        assert code == 1 and err.startswith("error: ") and expected in err, (name, err)
        assert str(run_dir / "checkpoints" / "last.ckpt") in err and "Traceback" not in err, name
        assert sorted(run_dir.rglob("*")) == files, name
    assert not marker.exists()


def test_resume_refuses_another_config_unless_the_changes_are_named(
    fake_deepglobe: Path, tmp_path: Path, cli
) -> None:
    config = small_config(fake_deepglobe, tmp_path, "run_name=run")
    run_dir = resumable_run(tmp_path, "run", b"never read", config)
    other = tmp_path / "other.yaml"
    other.write_text(dump_config(small_config(fake_deepglobe, tmp_path, "run_name=run", "optim.lr=0.5")))
    code, _, err = cli("train", "--resume", run_dir, "--config", other)
    assert code == 1 and "optim.lr" in err and "--set" in err
    code, _, err = cli("train")
    assert code == 1 and "--config is required" in err


def test_a_config_typo_is_reported_before_the_training_stack_is_imported(tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text(f"extends: {CPU_SMALL}\noptim:\n  lrr: 0.1\n")
    script = textwrap.dedent(
        """
        import sys
        from pointseg.cli import main
        before = set(sys.modules)
        sys.argv = ["pointseg", "train", "--config", sys.argv[1]]
        try:
            main()
        except SystemExit as done:
            print(done.code)
        heavy = {"torch", "lightning", "segmentation_models_pytorch", "timm", "kornia", "pointseg.training"}
        print(sorted(m for m in set(sys.modules) - before if m in heavy or m.split(".")[0] in heavy))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(typo)], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split("\n")[:2] == ["1", "[]"], done.stdout + done.stderr
    assert "optim.lrr" in done.stderr and "Traceback" not in done.stderr


def test_checkpoints_are_written_beside_and_renamed_into_place(tmp_path: Path, monkeypatch) -> None:
    from lightning.fabric.plugins import TorchCheckpointIO

    from pointseg.training import AtomicCheckpointIO

    target = tmp_path / "checkpoints" / "last.ckpt"
    written: list[Path] = []
    save = TorchCheckpointIO.save_checkpoint

    def record(self, checkpoint, path, storage_options=None) -> None:
        written.append(Path(path))
        assert not target.exists() or torch.load(target, weights_only=True) == {"epoch": 0}
        save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", record)
    AtomicCheckpointIO().save_checkpoint({"epoch": 0}, target)
    AtomicCheckpointIO().save_checkpoint({"epoch": 1}, target)
    assert target not in written and all(path.parent == target.parent for path in written)
    assert torch.load(target, weights_only=True) == {"epoch": 1}
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_validation_predicts_nothing_on_a_nan_pixel_and_scores_only_the_finite_pixels(tmp_path: Path) -> None:
    root, schema_path = write_folder_dataset(tmp_path / "scenes", bands=3, dtype="float32", count=1)
    image_path = root / "images" / "scene_0.tif"
    with rasterio.open(image_path) as source:
        pixels, profile = source.read(), source.profile
    pixels[1, 10, 10] = np.nan
    with rasterio.open(image_path, "w", **profile) as target:
        target.write(pixels)
    data = discover_dataset("folder", root, schema_path)
    stats = BandStats((100.0,) * 3, (50.0,) * 3)
    config = small_config(root, tmp_path, "data.num_workers=0", "eval.tile=32")
    task = SegmentationTask(
        config.model_dump(), data.schema.to_dict(), stats.to_dict(), load_pretrained=False
    )
    task.model = torch.nn.Identity()  # 3 bands -> 3 class scores
    [batch] = SegmentationDataModule(config, data.schema, {"val": data.refs}, stats).val_dataloader()

    assert not batch["valid"][0, 10, 10] and int(batch["valid"].sum()) == 40 * 40 - 1
    assert task._predict_whole(batch["image"], batch["valid"])[0, 10, 10] == IGNORE_INDEX
    task.validation_step(batch, 0)
    assert int(task.val_metrics.compute().sum()) == 40 * 40 - 4 - 1  # the ignored 2x2 corner, the NaN pixel


@pytest.mark.parametrize("prefix", ["val", "val_point"])
def test_epoch_lines_show_the_validation_metrics_of_masks_or_held_out_points(prefix: str, capsys) -> None:
    metrics = {"train_loss_epoch": 0.5, f"{prefix}_miou": 0.25, f"{prefix}_accuracy": 0.75}
    trainer = SimpleNamespace(
        is_global_zero=True,
        current_epoch=2,
        max_epochs=5,
        callback_metrics={name: torch.tensor(value) for name, value in metrics.items()},
    )
    lines = EpochLines()
    lines.on_train_start(trainer, None)  # type: ignore[arg-type]
    lines.on_train_epoch_end(trainer, None)  # type: ignore[arg-type]
    line = capsys.readouterr().out
    assert line.startswith(
        f"epoch 3/5  train_loss 0.5000  {prefix}_miou 0.2500  {prefix}_accuracy 0.7500  elapsed "
    )


def clicked_folder(tmp_path: Path, count: int = 3) -> tuple[Path, Path]:
    """A folder dataset of ``count`` GeoTIFFs whose masks are removed, and one GeoJSON of points on all
    of them (a mixed-case ``landcover`` field, the masks' classes every 4 pixels) in the images' CRS."""
    from rasterio.transform import from_origin

    from fake_data import UTM, folder_labels, write_folder_dataset

    root, _ = write_folder_dataset(tmp_path / "data", bands=3, dtype="uint8", count=count)
    features = []
    for i in range(count):
        (root / "masks" / f"scene_{i}.tif").unlink()
        labels = folder_labels(i)
        transform = from_origin(300000, 5000000 + 1000 * i, 10, 10)
        for row in range(2, 40, 4):
            for col in range(2, 40, 4):
                x, y = transform @ (col + 0.5, row + 0.5)
                name = "abc"[int(labels[row, col])]
                features.append(
                    {
                        "type": "Feature",
                        "geometry": {"type": "Point", "coordinates": [x, y]},
                        "properties": {"landcover": name.upper() if (row + col) % 8 else name},
                    }
                )
    (root / "masks").rmdir()
    points = tmp_path / "clicks.geojson"
    crs = {"type": "name", "properties": {"name": UTM.to_string()}}
    points.write_text(json.dumps({"type": "FeatureCollection", "crs": crs, "features": features}))
    return root, points


def points_file_config(root: Path, points: Path, out: Path, *extra: str) -> TrainConfig:
    return small_config(
        root,
        out,
        "data.format=folder",
        f"data.schema={root / 'schema.yaml'}",
        "data.val=[]",
        "data.test=[]",
        "points.strategy=density",
        f"points.file={points}",
        "points.class_field=landcover",
        "points.block_size=8",
        "trainer.max_epochs=1",
        "trainer.precision=32-true",
        *extra,
    )


def test_points_file_without_masks_validates_on_held_out_points(tmp_path: Path) -> None:
    from pointseg.training import POINT_MONITOR, given_points_samples

    root, points = clicked_folder(tmp_path)
    samples = given_points_samples(points_file_config(root, points, tmp_path / "runs"))
    assert samples is not None and samples.monitor == POINT_MONITOR
    assert {ref.id for ref in samples.splits["val"]} <= {"scene_0", "scene_1", "scene_2"}
    assert samples.val_points is not None and samples.splits["test"] == []
    # held-out images of data.val: all their points validate, none of them trains
    config = points_file_config(root, points, tmp_path / "runs", "data.val=['scene_2']")
    samples = given_points_samples(config)
    assert samples is not None and samples.monitor == POINT_MONITOR
    assert [ref.id for ref in samples.splits["val"]] == ["scene_2"]
    assert "scene_2" not in {ref.id for ref in samples.splits["train"]}
    assert samples.val_points is not None
    assert len(samples.val_points.points_for(samples.splits["val"][0], None)) == 100


def test_points_file_errors_name_the_image_before_training(tmp_path: Path) -> None:
    from pointseg.training import given_points_samples

    root, points = clicked_folder(tmp_path)
    data = json.loads(points.read_text())
    data["features"] = data["features"][:100]  # only the first image keeps its points
    points.write_text(json.dumps(data))
    with pytest.raises(PointsegError, match=r"no points on 2 image\(s\).*scene_1"):
        given_points_samples(points_file_config(root, points, tmp_path / "runs"))
    with pytest.raises(PointsegError, match="no such points file"):
        given_points_samples(points_file_config(root, tmp_path / "none.geojson", tmp_path / "runs"))


def test_dense_validation_masks_stay_the_measure(tmp_path: Path) -> None:
    from fake_data import write_folder_dataset
    from pointseg.training import MONITOR, given_points_samples

    root, points = clicked_folder(tmp_path)
    dense, _ = write_folder_dataset(tmp_path / "dense", bands=3, dtype="uint8", count=3)
    (root / "masks").mkdir()
    (dense / "masks" / "scene_2.tif").rename(root / "masks" / "scene_2.tif")
    config = points_file_config(root, points, tmp_path / "runs", "data.val=['scene_2']")
    samples = given_points_samples(config)
    assert samples is not None and samples.monitor == MONITOR and samples.val_points is None


@pytest.mark.integration
def test_train_config_on_points_file_without_masks_logs_val_point_miou(tmp_path: Path, cli: Cli) -> None:
    root, points = clicked_folder(tmp_path, count=2)
    config = tmp_path / "points.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            data:
              format: folder
              root: {root}
              schema: {root / "schema.yaml"}
              crop_size: 32
              crops_per_image: 2
              batch_size: 2
              num_workers: 0
            supervision: points
            points:
              file: {points}
              class_field: landcover
              block_size: 8
            model: {{encoder: resnet18, norm: group}}
            trainer: {{max_epochs: 1, accelerator: cpu, log_every_n_steps: 1}}
            eval: {{tile: 64}}
            output_dir: {tmp_path / "runs"}
            run_name: clicks
            """
        )
    )
    code, out, err = cli("train", "--config", config, "--no-progress")
    assert code == 0, out + err
    columns = set(read_metrics(tmp_path / "runs" / "clicks")[0])
    assert "val_point_miou" in columns and "val_miou" not in columns
    summary = json.loads((tmp_path / "runs" / "clicks" / "summary.json").read_text())
    assert "best_val_point_miou" in summary
    environment = json.loads((tmp_path / "runs" / "clicks" / "environment.json").read_text())
    assert environment["points_file"] == str(points)


def test_default_run_name_names_the_points_file(tmp_path: Path) -> None:
    from pointseg.runs import default_run_name

    root, points = clicked_folder(tmp_path, count=1)
    assert default_run_name(points_file_config(root, points, tmp_path)).endswith("-folder-points-clicks")


@pytest.mark.parametrize(("sampling", "share"), [("uniform", 0.0), ("points", 1.0), ("mixed", 0.5)])
def test_crop_sampling_reaches_the_training_crops(sampling: str, share: float, tmp_path: Path) -> None:
    root, schema_path = write_folder_dataset(tmp_path / "scenes", bands=3, count=1)
    data = discover_dataset("folder", root, schema_path)
    config = small_config(root, tmp_path, "data.num_workers=0", f"data.crop_sampling={sampling}")
    stats = BandStats((100.0,) * 3, (50.0,) * 3)
    loader = SegmentationDataModule(config, data.schema, {"train": data.refs}, stats).train_dataloader()
    assert loader.dataset.point_crop_share == share


def test_augmentation_settings_reach_the_batch_augmentation(fake_deepglobe: Path, tmp_path: Path) -> None:
    data = discover_dataset("deepglobe", fake_deepglobe)
    stats = BandStats((100.0,) * 3, (50.0,) * 3)
    config = small_config(
        fake_deepglobe,
        tmp_path,
        "augment.color_jitter=0.3",
        "augment.random_crop=0.1",
        "augment.random_scale=0.4",
    )
    augment = SegmentationDataModule(config, data.schema, {"train": data.refs}, stats).augment
    assert augment is not None
    assert (augment.color_jitter, augment.random_crop, augment.random_scale) == (0.3, 0.1, 0.4)
    off = small_config(fake_deepglobe, tmp_path, "augment.enabled=false")
    assert SegmentationDataModule(off, data.schema, {"train": data.refs}, stats).augment is None


@pytest.mark.integration
def test_a_bad_mask_found_by_a_loader_worker_is_one_error_line(tmp_path: Path, cli: Cli) -> None:
    # the points come from the masks inside the loader's worker processes, so a colour outside the
    # schema surfaces there, re-raised by PyTorch with the worker's traceback as its message
    data = write_deepglobe(tmp_path / "data", count=4, size=96)
    mask_path = data / "101_mask.png"
    with rasterio.open(mask_path) as source:
        profile, mask = source.profile, source.read()
    mask[:, 10, 10] = (12, 34, 56)
    with rasterio.open(mask_path, "w", **profile) as target:
        target.write(mask)
    overrides = [*small_overrides(data, tmp_path / "runs"), "data.num_workers=1", "trainer.max_epochs=1"]
    code, _, err = cli("train", "--config", CPU_SMALL, *[a for o in overrides for a in ("--set", o)])
    assert code == 1
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "101_mask.png" in err and "(12, 34, 56)" in err
    assert "Traceback" not in err and "worker" not in err


@pytest.mark.parametrize(
    ("asked", "fast", "resolved"),
    [
        ("auto", True, "bf16-mixed"),
        ("auto", False, "32-true"),
        ("32-true", True, "32-true"),
        ("bf16-mixed", True, "bf16-mixed"),
        ("16-mixed", False, "16-mixed"),
    ],
)
def test_auto_precision_is_bf16_only_where_the_device_computes_it_fast(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], asked: str, fast: bool, resolved: str
) -> None:
    monkeypatch.setattr("pointseg.training.fast_bfloat16", lambda device: fast)
    assert trainer_precision(TrainerConfig(precision=asked, accelerator="cpu")) == resolved
    assert capsys.readouterr().err == ""


def test_bf16_asked_for_on_a_cpu_without_it_is_kept_with_a_note(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("pointseg.training.fast_bfloat16", lambda device: False)
    assert trainer_precision(TrainerConfig(precision="bf16-mixed", accelerator="cpu")) == "bf16-mixed"
    note = capsys.readouterr().err
    assert "this CPU (no AVX-512 or AMX) does not compute bfloat16 natively" in note
    assert "trainer.precision: auto or 32-true" in note and note.count("\n") == 1
