"""One training of a labelling project: its clicks through ``pointseg map`` into ``runs/<n>``.

The same code as ``pointseg map`` (:func:`pointseg.mapping.map_images`) trains on a snapshot of
the project's points, with the classes that have points as the schema (in project order), holds
out points in spatial blocks, and writes the map GeoTIFF (``.aux.xml``, ``.qml``), the confidence
GeoTIFF, ``run/checkpoints/last.ckpt`` and ``report.json``. A warm start sets the encoder weights
to the last run's ``last.ckpt`` and trains fewer epochs. Everything goes into a hidden work folder
in the project (named with the server's process id), which becomes ``runs/<n>`` by one rename when
the run succeeded, with ``points.geojson`` (what it was trained on) and ``run.json`` (epochs, warm
start, classes, seconds) added; a failed or cancelled run leaves nothing.

The page's defaults (:data:`PAGE_SETTINGS`, :data:`WARM_EPOCHS`) are sized to give the first map
of a 1-2 megapixel image within 2 minutes and a retrained one within 1 minute on 2 CPU cores;
``benchmarks/click_to_map.py`` measures both.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pointseg.errors import PointsegError
from pointseg.mapping import MapSettings, map_images
from pointseg.raster import remove_stale_work_files, work_tag
from pointseg.runs import write_json
from pointseg.schema import ClassSchema
from pointseg.serving.workspace import ClassSpec, Project, WorkspaceError, class_schema, now

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import Callback

    from pointseg.serving.training_queue import TrainingJob

PAGE_SETTINGS = MapSettings(epochs=10, crop_size=256, crops_per_image=32, batch_size=4)
"""The labelling page's first training: ``pointseg map``'s network (pretrained EfficientNet-Lite0,
frozen BatchNorm), 10 epochs of 8 steps of 4 random 256-pixel crops, validated every 2 epochs.
Batches of 4 rather than 8 give twice the steps for the same crops: on a 1.2 megapixel Dubai tile
the first map scored 43.3 % mIoU in 63 s against 15.8 % in 81 s (``benchmarks/click_to_map.py``)."""
WARM_EPOCHS = 3
"""Epochs of a warm-started retraining (a third of the first run's steps)."""
MAX_EPOCHS = 100


@dataclass(frozen=True)
class TrainingDefaults:
    """What the page's trainings use unless a request says otherwise.

    Attributes:
        settings: ``pointseg map`` settings (``epochs`` is the first run's).
        warm_epochs: Epochs of a warm-started run.
    """

    settings: MapSettings = PAGE_SETTINGS
    warm_epochs: int = WARM_EPOCHS


def trainable_counts(project: Project) -> dict[str, int]:
    """The points per class, after checking there is something to train on.

    Raises:
        WorkspaceError: 422 when fewer than 2 classes have at least 2 points, or a class has one
            point (naming the counts).
    """
    counts = project.points_per_class()
    described = ", ".join(f"{name} {n}" for name, n in counts.items()) or "no classes"
    if sum(n >= 2 for n in counts.values()) < 2:
        raise WorkspaceError(
            422,
            f"not enough points to train (points per class: {described}); click at least 2 points of "
            "each of at least 2 classes",
        )
    single = [name for name, n in counts.items() if n == 1]
    if single:
        raise WorkspaceError(
            422,
            f"class(es) {', '.join(single)} have a single point (points per class: {described}); click "
            "a second point of each, or delete the point",
        )
    return counts


def train_project(
    project: Project, job: TrainingJob, defaults: TrainingDefaults, callbacks: Sequence[Callback]
) -> int:
    """Train on the project's points and write run ``n`` (the next number); return ``n``.

    Raises:
        PointsegError: for points ``pointseg map`` refuses (e.g. none left to hold out) and a
            project deleted underneath.
        TrainingCancelled: from ``callbacks`` or after the mapping, when the job was cancelled.
    """
    started = time.monotonic()
    work = project.folder / f".train.{work_tag()}.staging"
    try:
        with project.workspace.lock:
            remove_stale_work_files(project.folder)
            counts = trainable_counts(project)
            classes = [name for name, n in counts.items() if n]
            snapshot = project.collection()
            weights = str(last_checkpoint(project)) if job.warm_start else defaults.settings.weights
            work.mkdir()
        points = work / "points.geojson"
        points.write_text(json.dumps(snapshot))
        out = work / "out"
        settings = replace(
            defaults.settings, schema=project.schema(classes), epochs=job.epochs, weights=weights
        )
        report = map_images(
            [project.image_path],
            points,
            out,
            settings,
            progress=False,
            callbacks=callbacks,
            on_tiles=lambda tiles: job.check_cancelled(),  # a cancel stops the mapping too
        )
        job.check_cancelled()
        shutil.copy(points, out / "points.geojson")
        run_info: dict[str, Any] = {
            "job": job.id,
            "epochs": job.epochs,
            "warm_start": job.warm_start,
            "classes": [c.model_dump() for c in project.record.classes if c.name in classes],
            "points": sum(counts.values()),
            "seconds": round(time.monotonic() - started, 1),
            "train_seconds": report.seconds["train"],
            "finished": now(),
        }
        write_json(out / "run.json", run_info)
        with project.workspace.lock:
            project.require_folder()
            number = max(project.run_numbers(), default=0) + 1
            while (project.runs_folder / str(number)).exists():  # a damaged run folder left by hand
                number += 1
            project.runs_folder.mkdir(exist_ok=True)
            os.replace(out, project.runs_folder / str(number))
        return number
    except OSError as error:
        if not (project.folder / "project.json").is_file():
            raise PointsegError(
                f"project {project.id}: its folder was deleted during the training"
            ) from error
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def damaged_run(folder: Path, error: Exception) -> WorkspaceError:
    """The 409 of a run folder damaged (or emptied) by hand, naming the run and what is wrong."""
    return WorkspaceError(
        409,
        f"run {folder.name} ({folder}) is damaged ({type(error).__name__}: {error}); expected the files "
        "a training writes; delete that folder or train again",
    )


def run_file(folder: Path, relative: str) -> Path:
    """A file of a run named in its ``report.json``, refused unless it is an existing file in the run."""
    path = (folder / relative).resolve()
    if not path.is_relative_to(folder.resolve()) or not path.is_file():
        raise FileNotFoundError(f"{relative} is not a file of the run")
    return path


def last_checkpoint(project: Project, number: int | None = None) -> Path:
    """The ``last.ckpt`` of run ``number`` (default: the last run).

    Raises:
        WorkspaceError: 404 when there is no such run, 409 when its files are damaged.
    """
    folder = project.run_folder(number)
    try:
        return run_file(folder, str(json.loads((folder / "report.json").read_text())["checkpoint"]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise damaged_run(folder, error) from error


def run_summary(folder: Path) -> dict[str, Any]:
    """What ``GET /api/projects/{id}`` says about a finished run."""
    report = json.loads((folder / "report.json").read_text())
    info = json.loads((folder / "run.json").read_text())
    return {
        "n": int(folder.name),
        "val_point_accuracy": report["held_out"]["val_point_accuracy"],
        "val_point_miou": report["held_out"]["val_point_miou"],
        "seconds": info["seconds"],
        "train_seconds": info["train_seconds"],
        "epochs": info["epochs"],
        "warm_start": info["warm_start"],
        "points": info["points"],
        "classes": info["classes"],
    }


def run_files(folder: Path) -> tuple[Path, Path, ClassSchema]:
    """A run's class map, its confidence raster, and the classes it was trained on.

    Raises:
        WorkspaceError: 409 when the run's files are missing or damaged.
    """
    try:
        report = json.loads((folder / "report.json").read_text())
        name = next((str(name) for name in report["maps"] if str(name).endswith("_classes.tif")), None)
        if name is None:
            raise KeyError("no *_classes.tif among the maps of report.json")
        class_map = run_file(folder, name)
        confidence = run_file(folder, name.removesuffix("_classes.tif") + "_confidence.tif")
        run_info = json.loads((folder / "run.json").read_text())
        classes = [ClassSpec.model_validate(c) for c in run_info["classes"]]
        return class_map, confidence, class_schema(f"run {folder.name}", classes)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise damaged_run(folder, error) from error
