"""``pointseg map``: from images and the points a person clicked on them to GIS-ready class maps.

No dense mask is needed. One run:

1. finds each image's points: one points file for all images (GeoJSON, CSV or GeoPackage, as
   ``pointseg points import`` reads them), or a folder with ``<image stem>.geojson|.csv|.gpkg``
   or a label raster ``<image stem>.tif|.png`` per image (as ``pointseg points`` writes them);
2. takes the classes from the points (the distinct values of the class field, compared with case
   and surrounding spaces ignored, in ``class_index`` order when the file gives consistent
   indices, else alphabetically, with distinct colours), unless a schema is given;
3. places the points on each image's pixel grid and checks them before anything is trained: every
   image has points, at least two classes with at least two points each;
4. holds out a share of the points in spatial blocks (:mod:`pointseg.point_holdout`);
5. trains with :func:`pointseg.training.train`, validated on the held-out points (``val_point_*``);
6. predicts every image with the last checkpoint (the held-out points never choose the model)
   through :func:`pointseg.prediction.predict_files`, and writes the files of
   :mod:`pointseg.gis_outputs` and the confidence (``<stem>_confidence.tif``) beside each map;
7. scores each map at its held-out points and writes ``report.json``.

Everything is written into a staging folder and moved to the output folder only when every step
succeeded, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import colorsys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pointseg.config import TrainConfig, parse_config
from pointseg.datasets import SampleRef
from pointseg.errors import PointsegError
from pointseg.point_holdout import HoldoutSplit, split_points_in_blocks
from pointseg.points import (
    POINT_FILE_SUFFIXES,
    ImportReport,
    PointLabels,
    class_key,
    import_points,
    read_point_classes,
)
from pointseg.raster import open_raster, raster_info, read_pixels, read_window, staged_directory
from pointseg.schema import RGB, ClassSchema

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import Callback

    from pointseg.training import PreparedSamples

LABEL_RASTER_SUFFIXES = (".tif", ".png")
"""Point label maps in a points folder: class index on labelled pixels, 255 elsewhere."""

DISTINCT_COLORS: tuple[RGB, ...] = (
    (0x1F, 0x77, 0xB4),
    (0xFF, 0x7F, 0x0E),
    (0x2C, 0xA0, 0x2C),
    (0xD6, 0x27, 0x28),
    (0x94, 0x67, 0xBD),
    (0x8C, 0x56, 0x4B),
    (0xE3, 0x77, 0xC2),
    (0x7F, 0x7F, 0x7F),
    (0xBC, 0xBD, 0x22),
    (0x17, 0xBE, 0xCF),
)
"""Colours of classes taken from points (matplotlib's ``tab10``); more classes get evenly spread hues."""

RUN_FOLDER = "run"
"""The training run's folder inside the output folder."""


def distinct_colors(count: int) -> tuple[RGB, ...]:
    """``count`` distinct colours: ``tab10`` first, then hues spaced by the golden angle."""
    colors = list(DISTINCT_COLORS[:count])
    for index in range(len(colors), count):
        red, green, blue = colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.65, 0.9)
        colors.append((round(red * 255), round(green * 255), round(blue * 255)))
    return tuple(colors)


@dataclass(frozen=True)
class MapSettings:
    """Settings of ``pointseg map``; the defaults give a useful map on a laptop CPU in a few minutes.

    Attributes:
        class_field: Attribute of the points holding the class name (case-insensitive).
        schema: Classes to use instead of those found in the points.
        points_crs: CRS of points files that do not declare one (see ``points import``).
        skip_invalid: Drop invalid points (outside every image, unknown class, duplicates) instead
            of failing.
        epochs: Training epochs.
        device: ``cpu`` or ``cuda``.
        encoder: Encoder of the DeepLabV3+ network (any name :func:`pointseg.models.build_model`
            takes).
        weights: Encoder weights: ``None`` for random initialisation, a local file, or a hub name;
            the ``last.ckpt`` of an earlier run warm-starts the whole network (a head for a
            different number of classes is left out).
        norm: Normalisation layers (``group``, ``batch``, or ``frozen`` pretrained BatchNorm).
        crop_size: Side of the training crops, in pixels.
        crops_per_image: Random crops per image and epoch.
        crop_sampling: ``uniform``; ``points``: each crop around a clicked point of a class drawn
            equally among the image's clicked classes; ``mixed``: each crop so with probability 1/2.
        batch_size: Crops per training step.
        tile: Side of the sliding-window tiles for validation and prediction, in pixels.
        holdout: Share of the points held out for the check, in ``[0, 1)``.
        block_size: Side of the hold-out blocks in pixels; no held-out point is closer than this
            to a training point.
        polygons: Also write ``<stem>_classes.gpkg`` with class polygons.
        min_area: Minimum mapping unit of the polygons, in pixels.
        seed: Seed of the hold-out blocks, the initialisation and the crops.
    """

    class_field: str = "class"
    schema: ClassSchema | None = None
    points_crs: str | None = None
    skip_invalid: bool = False
    epochs: int = 15
    device: str = "cpu"
    encoder: str = "tu-efficientnet_lite0"
    weights: str | None = "imagenet"
    norm: str = "frozen"
    crop_size: int = 256
    crops_per_image: int = 8
    crop_sampling: str = "uniform"
    batch_size: int = 8
    tile: int = 512
    holdout: float = 0.2
    block_size: int = 32
    polygons: bool = False
    min_area: int = 16
    seed: int = 0


@dataclass
class MapReport:
    """What a ``pointseg map`` run did: the content of ``report.json`` and the on-screen report."""

    out: Path
    classes: list[str]
    points: dict[str, dict[str, int]]
    held_out: dict[str, Any]
    maps: list[str]
    checkpoint: str
    seconds: dict[str, float]
    warnings: list[str] = field(default_factory=list)

    def next_commands(self) -> list[str]:
        """Commands to use the trained model next."""
        checkpoint = self.out / self.checkpoint
        return [
            f"pointseg predict MORE_IMAGES --checkpoint {checkpoint} --out {self.out / 'more'}",
            f"pointseg serve --checkpoint {checkpoint}",
        ]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to ``report.json``."""
        return {
            "classes": self.classes,
            "points_per_class": self.points,
            "held_out": self.held_out,
            "maps": self.maps,
            "checkpoint": self.checkpoint,
            "seconds": self.seconds,
            "warnings": self.warnings,
            "next_commands": self.next_commands(),
        }

    def lines(self) -> list[str]:
        """A short report for the screen."""
        header = f"{'class':<16}{'train':>7}{'held out':>10}{'buffer':>8}"
        rows = [
            f"{name:<16}{counts['train']:>7}{counts['held_out']:>10}{counts['buffer']:>8}"
            for name, counts in self.points.items()
        ]
        held = self.held_out
        accuracy, miou = held.get("val_point_accuracy"), held.get("val_point_miou")
        score = (
            f"held-out points ({held['points']} in blocks of {held['block_size_px']} px): "
            f"val_point_accuracy {accuracy:.3f}, val_point_miou {miou:.3f}"
            if accuracy is not None and miou is not None
            else "held-out points: none scored"
        )
        return [
            header,
            *rows,
            score,
            f"time: {self.seconds['train']:.0f} s training, {self.seconds['total']:.0f} s in all",
            *(f"warning: {text}" for text in self.warnings),
            *(f"map: {self.out / name}" for name in self.maps if name.endswith("_classes.tif")),
            "     (beside each: .tif.aux.xml class names, .qml QGIS style, "
            "_confidence.tif top-class probability"
            + (", .gpkg polygons)" if any(name.endswith(".gpkg") for name in self.maps) else ")"),
            f"checkpoint: {self.out / self.checkpoint}",
            "next: " + "\n      ".join(self.next_commands()),
        ]


def find_points_files(images: Sequence[Path], points: Path) -> dict[Path, Path]:
    """The points file (or label raster) of each image.

    Args:
        images: The images to map.
        points: One points file for all images, or a folder with one file per image, named after it.

    Raises:
        PointsegError: if ``points`` is missing, or names the images that have no points file.
    """
    if points.is_file():
        return dict.fromkeys(images, points)
    if not points.is_dir():
        raise PointsegError(f"{points}: no such points file or folder")
    found: dict[Path, Path] = {}
    missing = []
    for image in images:
        candidates = [
            points / f"{image.stem}{suffix}" for suffix in POINT_FILE_SUFFIXES + LABEL_RASTER_SUFFIXES
        ]
        match = next((path for path in candidates if path.is_file() and path != image), None)
        if match is None:
            missing.append(str(image))
        else:
            found[image] = match
    if missing:
        expected = ", ".join(POINT_FILE_SUFFIXES + LABEL_RASTER_SUFFIXES)
        raise PointsegError(
            f"{points}: no points for {len(missing)} image(s): {', '.join(missing[:10])}; expected a "
            f"file named after each image ({expected})"
        )
    return found


def classes_from_points(files: Sequence[Path], class_field: str) -> ClassSchema:
    """The classes named in points files, with distinct colours.

    Names are compared with case and surrounding spaces ignored; each class keeps its first
    spelling. They are ordered by ``class_index`` when every named point has one and names and
    indices pair one to one (a file written by ``pointseg points``), else alphabetically.

    Raises:
        PointsegError: if the files name no class, or are label rasters (which hold only indices).
    """
    rasters = [path for path in files if path.suffix.lower() in LABEL_RASTER_SUFFIXES]
    if rasters:
        raise PointsegError(
            f"{rasters[0]}: a label raster holds class indices, not names; give the classes with --schema"
        )
    spelling: dict[str, str] = {}
    pairs: set[tuple[str, Any]] = set()
    for path in files:
        for name, index in read_point_classes(path, class_field):
            if name is None or not str(name).strip():
                continue
            spelling.setdefault(class_key(name), str(name).strip())
            pairs.add((class_key(name), index))
    if not spelling:
        raise PointsegError(
            f"{', '.join(map(str, files[:3]))}: no point has a '{class_field}' value; expected class names "
            "in that attribute (choose the attribute with --class-field)"
        )
    keys = sorted(spelling)
    indices = dict(pairs)
    one_to_one = len(pairs) == len(keys) == len(set(indices.values()))
    if one_to_one and all(isinstance(index, (int, np.integer)) for index in indices.values()):
        keys.sort(key=lambda key: indices[key])
    names = tuple(spelling[key] for key in keys)
    return ClassSchema(
        name="points", classes=names, colors=distinct_colors(len(names)), mask_encoding="index"
    )


def _label_raster_points(path: Path, image: Path, schema: ClassSchema) -> PointLabels:
    info = raster_info(image)
    label_map = read_window(path)
    if label_map.shape != (1, info.height, info.width):
        raise PointsegError(
            f"{path}: point label map is {label_map.shape[0]} band(s) of {label_map.shape[2]}x"
            f"{label_map.shape[1]} px; expected 1 band of {info.width}x{info.height} px like {image}"
        )
    points = PointLabels.from_label_map(label_map[0])
    if len(points) and points.classes.max() >= schema.num_classes:
        raise PointsegError(
            f"{path}: class index {points.classes.max()} found; the {schema.num_classes} classes are 0.."
            f"{schema.num_classes - 1} ({', '.join(schema.classes)})"
        )
    return points


def place_points(
    files: dict[Path, Path], schema: ClassSchema, settings: MapSettings
) -> tuple[dict[Path, PointLabels], list[str]]:
    """Place every image's points on its pixel grid, as ``points import`` does.

    A points file shared by several images gives each image the points inside it; a point inside
    none of them counts as outside.

    Returns:
        The points of each image, and one line per import that dropped points (``skip_invalid``).

    Raises:
        PointsegError: for invalid points (unless ``settings.skip_invalid``) and for an image
            without any point.
    """
    placed: dict[Path, PointLabels] = {}
    notes: list[str] = []
    shared: dict[Path, list[ImportReport]] = {}
    for image, path in files.items():
        if path.suffix.lower() in LABEL_RASTER_SUFFIXES:
            placed[image] = _label_raster_points(path, image, schema)
            continue
        is_shared = list(files.values()).count(path) > 1
        placed[image], report = import_points(
            path,
            image,
            schema,
            settings.points_crs,
            skip_invalid=settings.skip_invalid or is_shared,
            class_field=settings.class_field,
        )
        if is_shared:
            shared.setdefault(path, []).append(report)
        elif report.problems:
            notes.append(f"{path} on {image}: {report.summary()}")
    for path, reports in shared.items():
        combined = ImportReport(
            total=reports[0].total,
            kept=sum(report.kept for report in reports),
            lines_outside=sorted(set.intersection(*(set(r.lines_outside) for r in reports))),
            lines_unknown_class=sorted(set().union(*(r.lines_unknown_class for r in reports))),
            lines_duplicate=sorted(set().union(*(r.lines_duplicate for r in reports))),
            lines_conflict=sorted(set().union(*(r.lines_conflict for r in reports))),
            unit=reports[0].unit,
        )
        if combined.problems and not settings.skip_invalid:
            raise PointsegError(
                f"{path}: invalid points for the {len(reports)} images: {combined.summary()}. "
                "Fix the file, or skip invalid points (--skip-invalid) to drop them"
            )
        if combined.problems:
            notes.append(f"{path}: {combined.summary()}")
    empty = [str(image) for image, points in placed.items() if not len(points)]
    if empty:
        raise PointsegError(
            f"no points on {len(empty)} image(s): {', '.join(empty[:10])}; every image to map needs clicked "
            f"points inside it (points files: {', '.join(sorted({str(files[Path(i)]) for i in empty[:10]}))})"
        )
    return placed, notes


def _counts(points: Mapping[Any, PointLabels], schema: ClassSchema) -> np.ndarray:
    return sum(
        (p.counts_per_class(schema.num_classes) for p in points.values()),
        np.zeros(schema.num_classes, dtype=np.int64),
    )


def _describe_counts(counts: np.ndarray, schema: ClassSchema) -> str:
    return ", ".join(f"{name} {int(n)}" for name, n in zip(schema.classes, counts, strict=True))


def check_class_counts(points: Mapping[Any, PointLabels], schema: ClassSchema) -> None:
    """Require at least two classes, each with at least two points.

    Raises:
        PointsegError: saying what is missing and how many points each class has.
    """
    counts = _counts(points, schema)
    if schema.num_classes < 2 or np.count_nonzero(counts) < 2:
        raise PointsegError(
            f"points of fewer than 2 classes ({_describe_counts(counts, schema)}); a map needs points of "
            "at least 2 classes"
        )
    few = [name for name, n in zip(schema.classes, counts, strict=True) if n < 2]
    if few:
        raise PointsegError(
            f"class(es) {', '.join(few)} have fewer than 2 points (points per class: "
            f"{_describe_counts(counts, schema)}); click at least 2 points of every class"
        )


@dataclass
class ImagePoints:
    """A :class:`pointseg.datasets.PointSource` of points already placed on each image, by sample id."""

    points: dict[str, PointLabels]

    def check(self, refs: Sequence[SampleRef]) -> None:
        """Raise, naming the image, if any of ``refs`` has no points."""
        for ref in refs:
            if not len(self.points.get(ref.id, ())):
                raise PointsegError(f"{ref.image_path}: no points to train on")

    def points_for(self, ref: SampleRef, dense_labels: np.ndarray | None) -> PointLabels:
        """The points of ``ref``."""
        return self.points[ref.id]


def held_out_samples(
    points: Mapping[SampleRef, PointLabels], schema: ClassSchema, block_size: int, fraction: float, seed: int
) -> tuple[PreparedSamples, dict[str, HoldoutSplit]]:
    """Hold out a share of every image's points in spatial blocks, to train on the rest.

    Used by ``pointseg map`` and by ``pointseg train`` when validation images have no dense mask.

    Args:
        points: The points of each image.
        schema: The classes.
        block_size: Side of the hold-out blocks in pixels (see :mod:`pointseg.point_holdout`).
        fraction: Share of the points held out, in ``[0, 1)``.
        seed: Seed of the blocks; each image draws its own from it and its id.

    Returns:
        Samples validated on the held-out points (``val_point_*``; images without a training
        point are not trained on, images without a held-out point not validated on; no test
        images), and each image's split by sample id.

    Raises:
        PointsegError: if no point at all is held out, or none is left to train on, with the points
            per class.
    """
    from pointseg.training import PreparedSamples

    splits = {
        ref.id: split_points_in_blocks(labels, block_size, fraction, seed, ref.id)
        for ref, labels in points.items()
    }
    if not any(len(split.held_out) for split in splits.values()):
        raise PointsegError(
            f"nothing left for the held-out check: {len(points)} image(s) with "
            f"{sum(len(p) for p in points.values())} points (per class: "
            f"{_describe_counts(_counts(points, schema), schema)}) and a held-out share of {fraction}; "
            "click more points, or raise the share (--holdout, points.holdout)"
        )
    if not any(len(split.train) for split in splits.values()):
        held_out = sum(len(split.held_out) for split in splits.values())
        raise PointsegError(
            f"no point left to train on: {len(points)} image(s) with "
            f"{sum(len(p) for p in points.values())} points (per class: "
            f"{_describe_counts(_counts(points, schema), schema)}), {held_out} held out at a share of "
            f"{fraction} and the rest within {block_size} px of them; click more points, or lower the "
            "share (--holdout, points.holdout) or the block size (--block-size)"
        )
    samples = PreparedSamples(
        schema=schema,
        splits={
            "train": [ref for ref in points if len(splits[ref.id].train)],
            "val": [ref for ref in points if len(splits[ref.id].held_out)],
            "test": [],
        },
        train_points=ImagePoints({key: split.train for key, split in splits.items()}),
        val_points=ImagePoints({key: split.held_out for key, split in splits.items()}),
    )
    return samples, splits


def _train_config(settings: MapSettings, root: Path, staging: Path) -> TrainConfig:
    return parse_config(
        {
            "data": {
                "format": "folder",
                "root": str(root),
                "crop_size": settings.crop_size,
                "crops_per_image": settings.crops_per_image,
                "crop_sampling": settings.crop_sampling,
                "batch_size": settings.batch_size,
                "num_workers": 0,
            },
            "supervision": "points",
            "model": {"encoder": settings.encoder, "weights": settings.weights, "norm": settings.norm},
            "trainer": {
                "max_epochs": settings.epochs,
                "accelerator": "gpu" if settings.device == "cuda" else "cpu",
                "devices": 1,
                "log_every_n_steps": 1,
                "check_val_every_n_epoch": max(1, settings.epochs // 5),
            },
            "eval": {"tile": settings.tile},
            "seed": settings.seed,
            "output_dir": str(staging),
            "run_name": RUN_FOLDER,
        },
        "pointseg map settings",
    )


def score_at_points(map_path: Path, points: PointLabels, confusion: np.ndarray) -> None:
    """Add a class map's predictions at ``points`` to a ``(K, K)`` confusion matrix (truth x prediction)."""
    with open_raster(map_path) as dataset:
        predicted = read_pixels(dataset)[0][points.rows, points.cols].astype(np.int64)
    num_classes = confusion.shape[0]
    valid = predicted < num_classes
    np.add.at(confusion, (points.classes[valid], predicted[valid]), 1)


def map_images(
    images: Sequence[Path],
    points: Path,
    out: Path,
    settings: MapSettings,
    progress: bool = True,
    announce: Callable[[str], None] | None = None,
    callbacks: Sequence[Callback] = (),
    on_tiles: Callable[[int], None] | None = None,
) -> MapReport:
    """Train on the clicked points of ``images`` and write their class maps into ``out``.

    Args:
        images: Images to train on and map (files, or folders of images).
        points: A points file for all images, or a folder of per-image points files.
        out: Output folder; must be empty or absent. Gets ``<stem>_classes.tif`` (+ ``.aux.xml``),
            ``<stem>_classes.qml``, optionally ``<stem>_classes.gpkg``, ``<stem>_confidence.tif``
            (float32 top-class probability), ``run/`` (the training run
            with ``checkpoints/last.ckpt``; no ``best.ckpt``, which the held-out points would have
            chosen) and ``report.json``.
        settings: See :class:`MapSettings`.
        progress: Show Lightning's progress bar.
        announce: Called with a line of text before each step.
        callbacks: More Lightning callbacks for the training (see :func:`pointseg.training.train`).
        on_tiles: Called with the tile count after each batch of tiles of the mapping; what it
            raises stops the mapping (nothing is written to ``out`` then).

    Raises:
        PointsegError: for any bad input, before training starts whenever it can be known then.
    """
    from pointseg.checkpoint import load_trained_model
    from pointseg.gis_outputs import write_category_side_file, write_class_polygons, write_qgis_style
    from pointseg.inference import torch_inference_model
    from pointseg.metrics import report_from_confusion
    from pointseg.prediction import expand_inputs, predict_files
    from pointseg.runs import write_json
    from pointseg.training import train

    say = announce or (lambda text: None)
    started = time.perf_counter()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PointsegError(f"{out}: exists and is not an empty folder; choose a new output folder")
    if settings.device not in ("cpu", "cuda"):
        raise PointsegError(f"--device {settings.device!r}: expected cpu or cuda")
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise PointsegError("--device cuda: no CUDA device is available here; use --device cpu")
    files = find_points_files(expand_inputs(images), points)
    schema = settings.schema or classes_from_points(sorted(set(files.values())), settings.class_field)
    placed, notes = place_points(files, schema, settings)
    check_class_counts(placed, schema)
    refs = {
        image: SampleRef(id=image.stem, image_path=image, mask_path=None, group=image.stem)
        for image in placed
    }
    samples, by_id = held_out_samples(
        {refs[image]: p for image, p in placed.items()},
        schema,
        settings.block_size,
        settings.holdout,
        settings.seed,
    )
    splits = {image: by_id[ref.id] for image, ref in refs.items()}
    held_total = sum(len(split.held_out) for split in splits.values())
    train_counts = _counts({i: s.train for i, s in splits.items()}, schema)
    warnings = list(notes)
    untrained = [name for name, n in zip(schema.classes, train_counts, strict=True) if n == 0]
    if untrained:
        warnings.append(
            f"class(es) {', '.join(untrained)} kept no training point after the hold-out; the model cannot "
            "learn them: click more points of them"
        )
    with staged_directory(out) as staging:
        say(
            f"training on {int(train_counts.sum())} points of {len(placed)} image(s), "
            f"{held_total} held out, for {settings.epochs} epochs on {settings.device}"
        )
        train_started = time.perf_counter()
        run_dir = train(
            _train_config(settings, next(iter(placed)).parent, staging),
            progress=progress,
            samples=samples,
            callbacks=callbacks,
        )
        train_seconds = time.perf_counter() - train_started
        checkpoint = run_dir / "checkpoints" / "last.ckpt"
        # best.ckpt was chosen on the held-out points: the map must not use it, so it is not kept
        (run_dir / "checkpoints" / "best.ckpt").unlink(missing_ok=True)
        say(f"mapping {len(placed)} image(s)")
        model = torch_inference_model(
            load_trained_model(checkpoint, settings.device), settings.device, "fp32"
        )
        results = predict_files(
            model, list(placed), staging, device=settings.device, confidence=True, on_tiles=on_tiles
        )
        confusion = np.zeros((schema.num_classes, schema.num_classes), dtype=np.int64)
        maps = []
        for result in results:
            class_map = result.outputs[0]
            write_category_side_file(class_map, schema)
            maps += [class_map.name, write_qgis_style(class_map.with_suffix(".qml"), schema).name]
            maps += [path.name for path in result.outputs[1:]]  # the confidence
            if settings.polygons:
                gpkg = class_map.with_suffix(".gpkg")
                write_class_polygons(class_map, gpkg, schema, settings.min_area)
                maps.append(gpkg.name)
            score_at_points(class_map, splits[result.input].held_out, confusion)
        scored = report_from_confusion(torch.from_numpy(confusion), list(schema.classes))
        report = MapReport(
            out=out,
            classes=list(schema.classes),
            points={
                name: {
                    key: int(_counts({i: getattr(s, key) for i, s in splits.items()}, schema)[label])
                    for key in ("train", "held_out", "buffer")
                }
                for label, name in enumerate(schema.classes)
            },
            held_out={
                "points": held_total,
                "block_size_px": settings.block_size,
                "fraction": settings.holdout,
                "scored_on": "the delivered maps (last epoch; held-out points never chose the model)",
                "val_point_accuracy": scored.to_dict()["accuracy"],
                "val_point_miou": scored.to_dict()["miou"],
                "val_point_iou": scored.per_class_iou,
            },
            maps=maps,
            checkpoint=str(checkpoint.relative_to(staging)),
            seconds={"train": round(train_seconds, 1), "total": round(time.perf_counter() - started, 1)},
            warnings=warnings,
        )
        write_json(staging / "report.json", report.to_dict())
    return report
