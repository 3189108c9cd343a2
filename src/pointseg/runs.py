"""Run folders: where a training run lives, what it records, and how it is continued.

A run folder ``<output_dir>/<run_name>/`` holds ``config.yaml`` (the settings of the latest
session), ``environment.json`` (versions, git commit, command line, splits),
``checkpoints/{best,last}.ckpt``, ``logs/`` and ``tensorboard/`` (one version per session),
``metrics.csv`` (every session's CSV log merged) and ``summary.json``. This module names run
folders, guards them, records them, reads the settings a run was trained with, and merges the
metrics; it imports no torch, so the command line can check a run folder before it loads the
training stack.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

import pointseg
from pointseg.config import TrainConfig, apply_overrides, dump_config, load_config, parse_config
from pointseg.datasets.registry import dataset_adapter
from pointseg.errors import PointsegError
from pointseg.raster import atomic_output

if TYPE_CHECKING:
    from pointseg.datasets import SampleRef

RUN_DIR_VARIABLE = "POINTSEG_RUN_DIR"
"""Names the run folder for the processes Lightning launches for DDP; set only while they start."""

CONFIG_FILE = "config.yaml"
LAST_CHECKPOINT = "last.ckpt"
SESSION_FILES = ("config.yaml", "environment.json", "metrics.csv", "summary.json", "logs", "tensorboard")
"""What a session writes into a run folder before (or without) its first checkpoint."""


@dataclass(frozen=True)
class ResumePoint:
    """A run folder to continue, and the checkpoint to continue from (None: start it again)."""

    run_dir: Path
    checkpoint: Path | None


def default_run_name(config: TrainConfig) -> str:
    """``<time or job id>-<format>-<labels>``, e.g. ``20261121-101500-deepglobe-density-0.01``.

    Under SLURM or torchrun every process starts on its own, so the job's id replaces the time:
    every rank then names the same folder. (Processes that Lightning launches itself are told
    their parent's folder in :data:`RUN_DIR_VARIABLE` and never get here.)

    Raises:
        PointsegError: for processes started separately (``WORLD_SIZE`` above 1, or
            ``trainer.num_nodes`` above 1) without a job id: each would name its own folder by the
            time it started, so the run needs a ``run_name``.
    """
    if config.supervision == "dense":
        labels = "dense"
    elif config.points.directory is not None:
        labels = "points-" + Path(config.points.directory).name
    elif config.points.file is not None:
        labels = "points-" + Path(config.points.file).stem
    else:
        labels = config.points.protocol().slug
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID")
    if job and job != "none":
        return f"job{job}-{config.data.format}-{labels}"
    world_size = os.environ.get("WORLD_SIZE", "1")
    if config.trainer.num_nodes > 1 or (world_size.isdigit() and int(world_size) > 1):
        raise PointsegError(
            f"run_name is not set and the processes of this run were started separately "
            f"(WORLD_SIZE={world_size}, trainer.num_nodes={config.trainer.num_nodes}) without a SLURM "
            "or torchrun job id, so each would name its own run folder by its start time; "
            "set one name for all of them: --set run_name=NAME"
        )
    return f"{datetime.now():%Y%m%d-%H%M%S}-{config.data.format}-{labels}"


def checkpoints_of(run_dir: Path) -> list[Path]:
    """The checkpoint files of a run folder (none for a run stopped before its first epoch ended).

    Hidden files are left out: they are temporary files of a write that was interrupted.
    """
    return sorted(p for p in (run_dir / "checkpoints").glob("*.ckpt") if not p.name.startswith("."))


def best_checkpoint(run_dir: Path) -> Path:
    """The checkpoint with the best validation mIoU, from the run's ``summary.json``.

    Raises:
        PointsegError: if the run recorded no best checkpoint.
    """
    best = json.loads((run_dir / "summary.json").read_text()).get("best_checkpoint")
    if not best:
        raise PointsegError(f"{run_dir}/summary.json: no best checkpoint (did validation run?)")
    return run_dir / "checkpoints" / Path(best).name  # the run folder may have moved


def is_unfinished_run(run_dir: Path) -> bool:
    """True for a run folder that a session started but left without any checkpoint."""
    return (run_dir / CONFIG_FILE).is_file() and not checkpoints_of(run_dir)


def new_run_dir(config: TrainConfig) -> Path:
    """The folder for a new run: free, empty, or a run stopped before its first checkpoint.

    Raises:
        PointsegError: if the folder holds a run with checkpoints, or files of something else.
    """
    run_dir = Path(config.output_dir) / (config.run_name or default_run_name(config))
    if checkpoints_of(run_dir):
        raise PointsegError(
            f"{run_dir} already holds a run; choose another run_name or continue it with --resume {run_dir}"
        )
    if run_dir.is_dir() and any(run_dir.iterdir()) and not is_unfinished_run(run_dir):
        raise PointsegError(
            f"{run_dir} already holds a run or other files (it has no {CONFIG_FILE} of a pointseg run); "
            "choose another run_name"
        )
    return run_dir


def resolve_resume(path: Path) -> ResumePoint:
    """Check what ``--resume`` names: a run folder, or a checkpoint inside its ``checkpoints/``.

    A run folder resumes from ``checkpoints/last.ckpt``; a run folder without any checkpoint
    (stopped before its first epoch ended) is trained again from scratch.

    Raises:
        PointsegError: if the path is neither, so nothing is written outside a run folder.
    """
    if path.is_dir():
        run_dir, checkpoint = path, path / "checkpoints" / LAST_CHECKPOINT
    elif path.is_file():
        run_dir, checkpoint = path.parent.parent, path
        if path.parent.name != "checkpoints":
            raise PointsegError(
                f"--resume {path}: a checkpoint to resume must lie in the checkpoints/ folder of a run "
                "folder; pass the run folder instead"
            )
    else:
        raise PointsegError(f"--resume {path}: no checkpoint and no run folder there")
    if not (run_dir / CONFIG_FILE).is_file():
        raise PointsegError(
            f"--resume {path}: {run_dir} is not a pointseg run folder (no {CONFIG_FILE}); "
            "expected a folder written by `pointseg train`"
        )
    if checkpoint.is_file():
        return ResumePoint(run_dir, checkpoint)
    if is_unfinished_run(run_dir):
        return ResumePoint(run_dir, None)
    raise PointsegError(
        f"--resume {path}: no checkpoint at {checkpoint}; found {[p.name for p in checkpoints_of(run_dir)]}"
    )


def resume_settings(run_dir: Path, config_path: Path | None, overrides: Sequence[str]) -> TrainConfig:
    """The settings a resumed run continues with: its saved config, changed only by ``--set``.

    Args:
        run_dir: The run folder (see :func:`resolve_resume`).
        config_path: A config given with ``--resume``; it must agree with the saved one except in
            the fields that ``overrides`` name.
        overrides: ``key.path=value`` changes, e.g. ``trainer.max_epochs=80``.

    Raises:
        PointsegError: if the saved config is invalid, or ``config_path`` differs from it in a
            field that no override names.
    """
    saved_path = run_dir / CONFIG_FILE
    saved = load_config(saved_path)
    if config_path is None:
        data = apply_overrides(saved.model_dump(mode="json", by_alias=True), list(overrides))
        return keeping_the_average(saved, parse_config(data, f"{saved_path} with --set"), saved_path)
    given = keeping_the_average(saved, load_config(config_path, list(overrides)), saved_path)
    named = [override.partition("=")[0].strip() for override in overrides]
    differing = [
        field
        for field in differing_fields(saved, given)
        if not any(field == key or field.startswith(key + ".") for key in named)
    ]
    if differing:
        raise PointsegError(
            f"--config {config_path} differs from the run's {saved_path} in {', '.join(differing)}; "
            f"resume with the saved settings (--resume {run_dir} alone) and name each change with "
            "--set key=value"
        )
    return given


def keeping_the_average(saved: TrainConfig, settings: TrainConfig, saved_path: Path) -> TrainConfig:
    """``settings``, unless they switch off the moving average of the weights a run keeps.

    Such a run's checkpoints hold the average as their weights and the weights being trained
    beside them; only the averaging callback reads the latter back, so without it the run would
    go on from the average.

    Raises:
        PointsegError: naming the saved config and the decay.
    """
    if saved.optim.ema_decay and not settings.optim.ema_decay:
        raise PointsegError(
            f"{saved_path}: the run keeps a moving average of its weights (optim.ema_decay "
            f"{saved.optim.ema_decay:g}), so it resumes only with optim.ema_decay above 0; "
            "start a new run to train without it"
        )
    return settings


def differing_fields(first: TrainConfig, second: TrainConfig) -> list[str]:
    """Dotted names of the settings that differ between two configs."""

    def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(data, dict):
            return {prefix: data}
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat

    a = flatten(first.model_dump(mode="json", by_alias=True))
    b = flatten(second.model_dump(mode="json", by_alias=True))
    return sorted(key.rstrip(".") for key in a.keys() | b.keys() if a.get(key) != b.get(key))


def start_run_folder(run_dir: Path, config: TrainConfig, environment: dict[str, Any]) -> None:
    """Write ``config.yaml`` and ``environment.json`` of a new run (rank zero only).

    A run stopped before its first checkpoint is replaced: its session files are removed first.
    """
    if is_unfinished_run(run_dir):
        print(
            f"{run_dir}: a run stopped before its first checkpoint; replacing it with a new one",
            file=sys.stderr,
        )
        for name in (*SESSION_FILES, "checkpoints"):
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(run_dir / CONFIG_FILE) as temporary:
        temporary.write_text(dump_config(config))
    write_json(run_dir / "environment.json", environment)


def continue_run_folder(run_dir: Path, config: TrainConfig, environment: dict[str, Any]) -> None:
    """Record a resumed session (rank zero only): its environment, and its settings if they changed.

    When the settings differ from the saved ``config.yaml``, the earlier file is kept as
    ``config-before-<time>.yaml`` and ``config.yaml`` holds the settings the run continues with.
    """
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    saved = run_dir / CONFIG_FILE
    text = dump_config(config)
    before = saved.read_text()
    if yaml.safe_load(before) != yaml.safe_load(text):
        # Copy, then replace: a run folder never lacks its config.yaml, even if killed in between.
        with atomic_output(run_dir / f"config-before-{stamp}.yaml") as temporary:
            temporary.write_text(before)
        with atomic_output(saved) as temporary:
            temporary.write_text(text)
    write_json(run_dir / f"environment-resume-{stamp}.json", environment)


@contextlib.contextmanager
def shared_run_dir(run_dir: Path) -> Iterator[None]:
    """Name the run folder for the processes launched inside this block (DDP), then restore.

    Lightning launches the other ranks by running the same command line again; they find the
    folder that rank zero chose in :data:`RUN_DIR_VARIABLE`.
    """
    previous = os.environ.get(RUN_DIR_VARIABLE)
    os.environ[RUN_DIR_VARIABLE] = str(run_dir)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUN_DIR_VARIABLE, None)
        else:
            os.environ[RUN_DIR_VARIABLE] = previous


@contextlib.contextmanager
def preserved_environment() -> Iterator[None]:
    """Restore ``os.environ`` as it was when the block ends (Lightning sets seeds and DDP ports)."""
    before = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(before):
            del os.environ[key]
        for key, value in before.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


def run_environment(config: TrainConfig, splits: dict[str, list[SampleRef]]) -> dict[str, Any]:
    """Versions, git commit, command line and data paths recorded in each run folder."""
    import lightning
    import segmentation_models_pytorch
    import timm
    import torch

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
        "points_file": str(config.points.file) if config.points.file else None,
    }


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically."""
    with atomic_output(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, default=str) + "\n")


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


def run_report(run_dir: Path, config: TrainConfig) -> list[str]:
    """What the end of training shows: the best validation mIoU, best.ckpt, and the next command."""
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    lines = [f"run folder: {run_dir}"]
    best = summary.get("best_checkpoint")
    score = summary.get("best_val_miou")
    if score is not None:
        lines.append(f"best val mIoU: {score:.4f}")
    if best:
        data = config.data
        command = [
            "pointseg",
            "evaluate",
            "--checkpoint",
            best,
            "--data",
            str(data.root),
            "--format",
            data.format,
        ]
        if data.schema_file is not None:
            command += ["--schema", str(data.schema_file)]
        if dataset_adapter(data.format).ships_split_lists and not data.test:
            command += ["--split", "test"]
        for selection in data.test:
            command += ["--select", selection]
        lines += [f"best checkpoint: {best}", "next: " + shlex.join(command)]
    return lines
