"""``pointseg experiment density``: test mIoU against label density, one training run per label regime.

Every regime (a point protocol, or dense masks) trains the same model with the same schedule,
seed and validation set from one base config. A ``forest:`` regime (e.g. ``forest:per-class:10``)
is the classical baseline instead: a pixel random forest (:mod:`pointseg.baselines`) fitted on
exactly the points of the point regime it names, with no network and no checkpoint. The best
checkpoint of each run is chosen on the validation split; the reported numbers are then computed
on the dense masks of the separate test split by the code behind ``pointseg evaluate`` (macro
mIoU from one confusion matrix over all test images), never taken from training logs. The
labelled-pixel fraction of a regime is measured by drawing its points on every training image
exactly as training does.

Layout of the output folder ``DIR``::

    runs/<slug>-seed<k>/     one ``pointseg train`` run folder per (regime, seed) (a forest's holds
                             only config.yaml and summary.json; its time is fit + test prediction), plus
        experiment.json      its regime, seed, labelled training pixels and evaluation time
        test_evaluation.json the test report, in the layout of ``pointseg evaluate --json``
    results.csv              one row per (regime, seed)
    results.md               tables per regime and per class, and how they were made
    density_summary.csv      one row per regime; ``density.png`` is drawn from it
    qualitative.png          image | ground truth | predictions of up to three regimes
    sweep.json               the base config, overrides, regimes, seeds and the times of this sweep

With ``self_training.rounds`` set, each network run is followed by its self-training rounds
(:mod:`pointseg.self_training`, in ``runs/<slug>-seed<k>/self-training-<r>``); the model scored is
the last round's, and the training time and epochs are summed over the run and its rounds. The
``dense`` regime never self-trains: dense masks leave no pixel to pseudo-label.

A sweep is resumable: a run with ``test_evaluation.json`` is finished and kept; a run with
``checkpoints/last.ckpt`` but no ``summary.json`` resumes training; a trained run without a test
report is only evaluated. The files at the top of ``DIR`` are rewritten from the run folders at
the end of every sweep.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pointseg.baselines import evaluate_pixel_forest
from pointseg.checkpoint import load_trained_model
from pointseg.config import (
    SelfTrainingConfig,
    TrainConfig,
    apply_overrides,
    deep_merge,
    dump_config,
    parse_config,
    read_config_data,
)
from pointseg.datasets import SampleRef, split_samples
from pointseg.errors import PointsegError
from pointseg.evaluation import ScoredSample, image_summary, report_json, score_samples, total_report
from pointseg.metrics import SegmentationReport
from pointseg.plots import plot_density_curve, plot_qualitative
from pointseg.points import SPEC_FORMS, STRATEGY_PARAMETERS, PointProtocol
from pointseg.progress import Track, no_progress
from pointseg.raster import atomic_output, read_mask
from pointseg.runs import best_checkpoint, write_json
from pointseg.schema import IGNORE_INDEX, ClassSchema
from pointseg.self_training import finished_rounds, self_train
from pointseg.training import point_source, train, trainer_device

DEFAULT_REGIMES = (
    "density:0.01",
    "density:0.05",
    "density:0.1",
    "per-class:10",
    "per-class:50",
    "per-region:100",
    "dense",
)
REGIME_FORMS = f"{SPEC_FORMS}, points:DIR, dense, or forest:POINT_REGIME (e.g. forest:per-class:10)"
EXPERIMENT_KEY = "experiment"
"""Top-level config key read (and removed before validation) by sweeps: ``{regimes: [...], seeds: [...]}``."""


@dataclass(frozen=True, eq=False)
class Regime:
    """One way of labelling the training images.

    Attributes:
        spec: As written, e.g. ``density:0.01``.
        name: For tables and figures, e.g. ``1%``, ``10 / class``, ``dense``.
        slug: For file names, e.g. ``density-0.01``.
        description: For progress lines, e.g. ``density 1%``.
        settings: Config data merged over the base config (supervision, points, loss).
        forest: The pixel random forest baseline on the points of ``settings`` (no network).
    """

    spec: str
    name: str
    slug: str
    description: str
    settings: dict[str, Any]
    forest: bool = False

    @property
    def dense(self) -> bool:
        """Whether the regime trains on the dense masks."""
        return self.settings["supervision"] == "dense"


def parse_regime(text: str) -> Regime:
    """Parse ``density:F``, ``per-class:N``, ``per-region:MIN_AREA``, ``points:DIR``, ``dense``, ``forest:R``.

    ``forest:R`` is the pixel random forest on the points of the point regime ``R``.

    Raises:
        PointsegError: naming the string and the accepted forms.
    """
    kind, _, value = text.strip().partition(":")
    if kind == "forest":
        expected = f"regime {text!r}: expected forest:POINT_REGIME, e.g. forest:per-class:10"
        try:
            on = parse_regime(value)
        except PointsegError as error:
            raise PointsegError(f"{expected} ({error})") from None
        if on.dense or on.forest:
            raise PointsegError(expected)
        return Regime(
            text,
            f"forest ({on.name})",
            f"forest-{on.slug}",
            f"pixel random forest on {on.description}",
            on.settings,
            forest=True,
        )
    if kind == "dense" and not value:
        # Self-training fills the gaps between points; dense masks have none, so it is off there, and
        # its section is left at its defaults: a dense run is the same whatever the sweep's self-training.
        dense = {
            "supervision": "dense",
            "loss": {"name": "ce"},
            "self_training": SelfTrainingConfig().model_dump(mode="json"),
        }
        return Regime(text, "dense", "dense", "dense masks", dense)
    if kind == "points" and value:
        folder = Path(value)
        settings = {"supervision": "points", "points": {"directory": str(folder)}}
        return Regime(
            text, f"points ({folder.name})", f"points-{folder.name}", f"points from {folder}", settings
        )
    if kind not in STRATEGY_PARAMETERS:
        raise PointsegError(f"regime {text!r}: expected {REGIME_FORMS}")
    try:
        protocol = PointProtocol.from_spec(text)
    except PointsegError as error:
        raise PointsegError(f"regime {text!r} ({error}): expected {REGIME_FORMS}") from None
    points = {**protocol.model_dump(exclude={"seed"}), "directory": None}
    return Regime(
        text, protocol.name, protocol.slug, protocol.describe(), {"supervision": "points", "points": points}
    )


def parse_regimes(texts: Sequence[str]) -> list[Regime]:
    """Parse several regimes; they must be distinct.

    Raises:
        PointsegError: for a string that does not parse, or two regimes with the same name.
    """
    regimes = [parse_regime(str(text)) for text in texts]
    if not regimes:
        raise PointsegError(f"no regimes given; expected one or more of {REGIME_FORMS}")
    for attribute in ("slug", "name"):
        seen: dict[str, str] = {}
        for regime in regimes:
            key = getattr(regime, attribute)
            if key in seen:
                raise PointsegError(f"regimes {seen[key]!r} and {regime.spec!r} are the same regime ({key})")
            seen[key] = regime.spec
    return regimes


@dataclass(frozen=True)
class SweepRun:
    """One training run of a sweep: a regime with a seed, and its resolved config."""

    regime: Regime
    seed: int
    config: TrainConfig

    @property
    def run_dir(self) -> Path:
        """``DIR/runs/<slug>-seed<k>``."""
        return Path(self.config.output_dir) / str(self.config.run_name)


@dataclass
class SweepPlan:
    """A validated sweep: every run's config is checked before the first one trains."""

    config_path: Path
    overrides: list[str]
    out: Path
    regimes: list[Regime]
    seeds: list[int]
    base: TrainConfig
    schema: ClassSchema
    splits: dict[str, list[SampleRef]]
    runs: list[SweepRun]


@dataclass
class RunResult:
    """What one finished run of a sweep measured. Fractions and IoUs are in ``[0, 1]``."""

    regime: Regime
    seed: int
    run_dir: Path
    labelled_fraction: float
    points: int | None
    miou: float
    accuracy: float
    per_class_iou: dict[str, float | None]
    best_val_miou: float | None
    epochs: int
    train_seconds: float
    eval_seconds: float | None


def plan_density_sweep(
    config_path: str | Path,
    out: str | Path,
    regimes: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
) -> SweepPlan:
    """Resolve and validate the config of every (regime, seed) run, and the data splits.

    Regimes and seeds come from the arguments, else from the config's ``experiment`` section,
    else :data:`DEFAULT_REGIMES` and the config's ``seed``. Each run's folder is
    ``out/runs/<slug>-seed<k>``; its ``seed`` and ``points.seed`` are the run's seed.

    Raises:
        PointsegError: for a bad config, regime or seed, or an empty test split.
    """
    config_path, out = Path(config_path), Path(out)
    data = read_config_data(config_path)
    section = read_experiment_section(data, config_path)
    data = apply_overrides(data, list(overrides))
    base = parse_config(data, str(config_path))
    parsed = parse_regimes(regimes or section.regimes or DEFAULT_REGIMES)
    seed_list = check_seeds(list(seeds or section.seeds or [base.seed]))
    schema, splits = split_samples(base.data)
    if not splits["test"]:
        raise PointsegError(
            f"{config_path}: the test split is empty; name the held-out ids or groups to report on "
            "(e.g. --set \"data.test=['6399']\"); the sweep reports test mIoU, never validation mIoU"
        )
    runs = []
    for regime in parsed:
        for seed in seed_list:
            run_settings = {
                "seed": seed,
                "points": {"seed": seed},
                "output_dir": str(out / "runs"),
                "run_name": f"{regime.slug}-seed{seed}",
            }
            merged = deep_merge(deep_merge(data, regime.settings), run_settings)
            runs.append(SweepRun(regime, seed, parse_config(merged, f"{config_path} (regime {regime.spec})")))
    return SweepPlan(config_path, list(overrides), out, parsed, seed_list, base, schema, splits, runs)


class AblationStep(BaseModel):
    """One row of an ablation: a name, the settings it adds, and the earlier step it adds them to.

    ``builds_on`` names that step; by default it is the step just above. (Not ``on``: YAML 1.1
    reads an unquoted ``on`` key as the boolean true.)
    """

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    settings: list[str] = Field(default_factory=list, alias="set")
    builds_on: str | None = None


class AblationSection(BaseModel):
    """The ablation of a sweep config: one label regime, trained once per cumulative step."""

    model_config = ConfigDict(extra="forbid", strict=True)

    regime: str
    steps: list[AblationStep] = Field(min_length=1)


class ExperimentSection(BaseModel):
    """The ``experiment`` section of a sweep config: regime strings, seeds and an ablation, all optional."""

    model_config = ConfigDict(extra="forbid", strict=True)

    regimes: list[str] | None = None
    seeds: list[int] | None = None
    ablation: AblationSection | None = None


def read_experiment_section(data: dict[str, Any], source: Path) -> ExperimentSection:
    """Remove the ``experiment`` section from config data and return it.

    Raises:
        PointsegError: if it is not a mapping of ``regimes`` (strings) and ``seeds`` (integers),
            naming the field and the value found.
    """
    section = data.pop(EXPERIMENT_KEY, None) or {}
    try:
        return ExperimentSection.model_validate(section)
    except ValidationError as error:
        expected = "expected 'experiment: {regimes: [density:0.01, dense], seeds: [0, 1, 2]}'"
        location = error.errors()[0]["loc"]
        if not location or not isinstance(section, dict):
            raise PointsegError(f"{source}: experiment section {section!r}: {expected}") from None
        key = location[0]
        if key == "ablation":
            field = ".".join(map(str, location))
            raise PointsegError(
                f"{source}: experiment.{field}: {error.errors()[0]['msg']}; expected 'experiment: "
                "{ablation: {regime: per-class:10, steps: [{name: base}, {name: pretrained, set: "
                "[model.weights=imagenet]}]}}'"
            ) from None
        raise PointsegError(f"{source}: experiment.{key} {section[key]!r}: {expected}") from None


def check_seeds(seeds: list[int]) -> list[int]:
    """Return the seeds if they are distinct non-negative integers.

    Raises:
        PointsegError: naming the bad seed.
    """
    for seed in seeds:
        if type(seed) is not int or seed < 0:
            raise PointsegError(f"seed {seed!r}: expected a non-negative integer")
    if len(set(seeds)) != len(seeds):
        raise PointsegError(f"seeds {seeds}: each seed may appear once")
    return seeds


def density_sweep(
    config_path: str | Path,
    out: str | Path,
    regimes: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    *,
    progress: bool = True,
    device: str | None = None,
    announce: Callable[[str], None] = print,
    track: Track = no_progress,
) -> list[RunResult]:
    """Train, evaluate on the test split and report every (regime, seed) run; resume what is done.

    Args:
        config_path: Base training config (YAML, may hold an ``experiment`` section).
        out: Output folder (see the module docstring for its layout).
        regimes: Regime strings (see :func:`parse_regime`); default: the config's, else all seven.
        seeds: Seeds to repeat each regime with; default: the config's, else its ``seed``.
        overrides: ``key.path=value`` settings applied to the base config.
        progress: Show Lightning's progress bar while training.
        device: Where to evaluate (``cpu`` or ``cuda``); default: CUDA if available and the
            config's accelerator is not ``cpu``.
        announce: Called with a line before each run (progress).
        track: Shows progress over the test images of each evaluation (see
            :func:`pointseg.progress.track_items`); by default nothing is shown.

    Returns:
        The results of every run, in regime-then-seed order.

    Raises:
        PointsegError: for bad settings, data or run folders (see :func:`plan_density_sweep`).
    """
    started = datetime.now()
    plan = plan_density_sweep(config_path, out, regimes, seeds, overrides)
    device = device or trainer_device(plan.base.trainer)
    record = {
        "config": str(plan.config_path),
        "overrides": plan.overrides,
        "regimes": [r.spec for r in plan.regimes],
        "seeds": plan.seeds,
        "command": command_line(),
        "started": started.isoformat(timespec="seconds"),
        "finished": None,
    }
    write_json(plan.out / "sweep.json", record)
    results = []
    for number, run in enumerate(plan.runs, start=1):
        position = plan.regimes.index(run.regime) + 1
        regime = run.regime
        line = f"regime {position}/{len(plan.regimes)}: {regime.name} ({regime.description}), seed {run.seed}"
        if len(plan.runs) > len(plan.regimes):
            line += f" (run {number}/{len(plan.runs)})"
        announce(f"{line}{run_state(run.run_dir)}")
        results.append(complete_run(run, plan, device, progress, track))
    write_reports(plan, results, device)
    write_json(plan.out / "sweep.json", {**record, "finished": datetime.now().isoformat(timespec="seconds")})
    return results


def run_state(run_dir: Path) -> str:
    """What is left of a run, for the progress line: ``""`` when nothing is done yet."""
    if (run_dir / "test_evaluation.json").is_file():
        return ": finished, kept"
    if (run_dir / "summary.json").is_file():
        return ": trained, evaluating"
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        return ": resuming training"
    return ""


def complete_run(
    run: SweepRun, plan: SweepPlan, device: str, progress: bool, track: Track = no_progress
) -> RunResult:
    """Do what is left of one run (count labels, train or resume, evaluate) and return its result."""
    run_dir = run.run_dir
    check_same_settings(run)
    labels = labelled_pixels(run, plan)
    if run.regime.forest:
        if not (run_dir / "test_evaluation.json").is_file():
            score_forest(run, plan, labels, track)
        return read_run_result(run)
    if not (run_dir / "summary.json").is_file():
        last = run_dir / "checkpoints" / "last.ckpt"
        if last.parent.is_dir() and not last.is_file():
            raise PointsegError(
                f"{run_dir}: training stopped before writing checkpoints/last.ckpt, so it cannot resume; "
                "delete that run folder and run the sweep again"
            )
        train(run.config, resume=run_dir if last.is_file() else None, progress=progress)
    if run.config.self_training.rounds:
        self_train(run.config, run_dir, progress, device)
    if not (run_dir / "test_evaluation.json").is_file():
        started = time.perf_counter()
        evaluation = evaluate_on_test(final_model_dir(run_dir), plan, device, track)
        write_json(run_dir / "experiment.json", {**labels, "eval_seconds": time.perf_counter() - started})
        write_json(run_dir / "test_evaluation.json", evaluation)
    return read_run_result(run)


def check_same_settings(run: SweepRun) -> None:
    """Refuse to reuse a run folder trained with other settings (the output folder aside).

    Raises:
        PointsegError: naming the run folder and the settings that differ.
    """
    saved = run.run_dir / "config.yaml"
    if not saved.is_file():
        return
    # Validated again, so that settings added since (with their defaults) are not differences.
    before = flatten(
        parse_config(yaml.safe_load(saved.read_text()), str(saved)).model_dump(mode="json", by_alias=True)
    )
    now = flatten(run.config.model_dump(mode="json", by_alias=True))
    changed = sorted(
        key for key in before.keys() | now.keys() if before.get(key) != now.get(key) and key != "output_dir"
    )
    if changed:
        raise PointsegError(
            f"{run.run_dir} was trained with other settings ({', '.join(changed)}); "
            "use another --out, or delete that run folder to train it again"
        )


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one mapping of dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def labelled_pixels(run: SweepRun, plan: SweepPlan) -> dict[str, Any]:
    """Read ``experiment.json`` of a finished run, or count the run's labelled training pixels.

    The count is written with the test evaluation, never before training: ``pointseg train``
    refuses a run folder that holds files but no run. The points of each training image are
    drawn on its whole mask exactly as training draws them (same protocol, seed and image id), or
    read from the config's points folder.

    Returns:
        ``{"regime", "spec", "seed", "labelled_pixels", "valid_pixels", "labelled_fraction", "points"}``
        (``points`` is None for dense masks).
    """
    path = run.run_dir / "experiment.json"
    if path.is_file():
        return dict(json.loads(path.read_text()))
    source = point_source(run.config)
    labelled = valid = 0
    for ref in plan.splits["train"]:
        assert ref.mask_path is not None  # split_samples only pairs images with masks
        mask = read_mask(ref.mask_path, plan.schema, ref.window)
        valid_here = int((mask != IGNORE_INDEX).sum())
        valid += valid_here
        labelled += valid_here if source is None else len(source.points_for(ref, mask))
    labels = {
        "regime": run.regime.name,
        "spec": run.regime.spec,
        "seed": run.seed,
        "labelled_pixels": labelled,
        "valid_pixels": valid,
        "labelled_fraction": labelled / valid if valid else 0.0,
        "points": None if source is None else labelled,
    }
    return labels


def evaluate_on_test(
    run_dir: Path, plan: SweepPlan, device: str, track: Track = no_progress
) -> dict[str, Any]:
    """Evaluate the run's best checkpoint on the test split as ``pointseg evaluate`` does.

    ``track`` shows progress over the test images (see :func:`pointseg.progress.track_items`).

    Returns:
        The report in the layout of ``pointseg evaluate --json``.

    Raises:
        PointsegError: if the test masks have no valid pixel.
    """
    checkpoint = best_checkpoint(run_dir)
    trained = load_trained_model(checkpoint, device)
    refs = plan.splits["test"]
    per_image: list[dict[str, Any]] = []
    with track("evaluating on test", len(refs)) as advance:

        def scored(sample: ScoredSample) -> None:
            per_image.append(image_summary(sample, plan.schema))
            advance(sample.ref.id)

        report = total_report(
            score_samples(
                trained, refs, plan.schema, batch_size=trained.config.eval.batch_size, device=device
            ),
            plan.schema,
            on_sample=scored,
        )
    require_scored_pixels(report, refs)
    evaluation = trained.config.eval
    return report_json(report, refs, checkpoint, per_image, evaluation.tta, evaluation.scales)


def require_scored_pixels(report: SegmentationReport, refs: Sequence[SampleRef]) -> None:
    """Raise unless the test masks had a valid pixel to score.

    Raises:
        PointsegError: naming the number of test images.
    """
    if not report.confusion_matrix or sum(map(sum, report.confusion_matrix)) == 0:
        raise PointsegError(
            f"the test split ({len(refs)} image(s)) has no valid (non-ignored) pixel to score"
        )


def score_forest(run: SweepRun, plan: SweepPlan, labels: dict[str, Any], track: Track = no_progress) -> None:
    """Fit the pixel random forest on the run's points, score it on the test split, write the run's files.

    The points are the training points of the run's config, drawn as training draws them; the
    scoring is :func:`pointseg.baselines.evaluate_pixel_forest`'s, the confusion matrix and macro
    mIoU of ``pointseg evaluate``. ``summary.json`` records the fit and test prediction time as
    training time, and no checkpoint (``test_evaluation.json`` names none).

    Raises:
        PointsegError: if no training pixel is labelled or the test masks have no valid pixel.
    """
    refs = plan.splits["test"]
    source = point_source(run.config)
    assert source is not None  # a forest regime is a point regime
    started = time.perf_counter()
    with track("random forest on test", len(refs)) as advance:
        report = evaluate_pixel_forest(
            plan.splits["train"],
            refs,
            plan.schema,
            source,
            seed=run.seed,
            on_image=lambda ref: advance(ref.id),
        )
    require_scored_pixels(report, refs)
    run_dir = run.run_dir
    write_text(run_dir / "config.yaml", dump_config(run.config))
    summary = {"best_checkpoint": None, "best_val_miou": None, "epochs": 0, "global_step": 0}
    write_json(run_dir / "summary.json", {**summary, "train_seconds": time.perf_counter() - started})
    write_json(run_dir / "experiment.json", {**labels, "eval_seconds": None})
    write_json(run_dir / "test_evaluation.json", report_json(report, refs, None))


def final_model_dir(run_dir: Path) -> Path:
    """The run folder of the model a run ends with: its last self-training round's, else its own."""
    return (finished_rounds(run_dir) or [run_dir])[-1]


def read_run_result(run: SweepRun) -> RunResult:
    """Gather a finished run's numbers from its folder (training: summed over self-training rounds)."""
    run_dir = run.run_dir
    summaries = [
        json.loads((path / "summary.json").read_text()) for path in [run_dir, *finished_rounds(run_dir)]
    ]
    summary = {
        **summaries[-1],
        "epochs": sum(s["epochs"] for s in summaries),
        "train_seconds": sum(s["train_seconds"] for s in summaries),
    }
    evaluation = json.loads((run_dir / "test_evaluation.json").read_text())
    labels = json.loads((run_dir / "experiment.json").read_text())
    return RunResult(
        regime=run.regime,
        seed=run.seed,
        run_dir=run_dir,
        labelled_fraction=labels["labelled_fraction"],
        points=labels["points"],
        miou=evaluation["miou"],
        accuracy=evaluation["accuracy"],
        per_class_iou=evaluation["per_class_iou"],
        best_val_miou=summary["best_val_miou"],
        epochs=summary["epochs"],
        train_seconds=summary["train_seconds"],
        eval_seconds=labels.get("eval_seconds"),
    )


# ------------------------------------------------------------------------------------------ reports


@dataclass
class RegimeSummary:
    """The runs of one regime, averaged over seeds."""

    regime: Regime
    runs: list[RunResult]

    @property
    def labelled_fraction(self) -> float:
        """Mean labelled-pixel fraction over seeds."""
        return statistics.mean(r.labelled_fraction for r in self.runs)

    @property
    def miou_mean(self) -> float:
        """Mean test mIoU over seeds."""
        return statistics.mean(r.miou for r in self.runs)

    @property
    def miou_std(self) -> float | None:
        """Sample standard deviation (ddof=1) of test mIoU over seeds; None for one seed."""
        return statistics.stdev(r.miou for r in self.runs) if len(self.runs) > 1 else None

    @property
    def train_minutes(self) -> float:
        """Mean training time over seeds, in minutes."""
        return statistics.mean(r.train_seconds for r in self.runs) / 60

    def class_iou(self, name: str) -> float | None:
        """Mean IoU of a class over the seeds where it is present; None if absent in all."""
        values = [r.per_class_iou[name] for r in self.runs if r.per_class_iou.get(name) is not None]
        return statistics.mean(v for v in values if v is not None) if values else None


def summarise(results: Sequence[RunResult]) -> list[RegimeSummary]:
    """Group results by regime, keeping the order of first appearance."""
    groups: dict[str, list[RunResult]] = {}
    for result in results:
        groups.setdefault(result.regime.slug, []).append(result)
    return [RegimeSummary(runs[0].regime, runs) for runs in groups.values()]


def write_reports(plan: SweepPlan, results: Sequence[RunResult], device: str) -> None:
    """Write results.csv, results.md, density_summary.csv, density.png and qualitative.png."""
    summaries = summarise(results)
    write_results_csv(plan.out / "results.csv", results, list(plan.schema.classes))
    write_density_summary(plan.out / "density_summary.csv", summaries)
    title = f"Test mIoU against label density ({plan.base.data.format}, {plan.base.model.encoder})"
    plot_density_curve(plan.out / "density_summary.csv", plan.out / "density.png", title=title)
    write_text(plan.out / "results.md", results_markdown(plan, summaries))
    plot_regime_predictions(plan, summaries, plan.out / "qualitative.png", device)


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_output(path) as temporary:
        temporary.write_text(text)


def write_csv(path: Path, header: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """Write a CSV file atomically; None becomes an empty cell."""
    with atomic_output(path) as temporary, temporary.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(header))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)


def write_results_csv(path: Path, results: Sequence[RunResult], classes: Sequence[str]) -> None:
    """One row per (regime, seed); IoU columns are empty for classes absent from the test split."""
    header = [
        "regime",
        "slug",
        "seed",
        "labelled_fraction",
        "points",
        "miou",
        "accuracy",
        *(f"iou_{name}" for name in classes),
        "best_val_miou",
        "epochs",
        "train_seconds",
        "eval_seconds",
        "run_dir",
    ]
    rows = [
        {
            "regime": r.regime.name,
            "slug": r.regime.slug,
            "seed": r.seed,
            "labelled_fraction": r.labelled_fraction,
            "points": r.points,
            "miou": r.miou,
            "accuracy": r.accuracy,
            **{f"iou_{name}": r.per_class_iou.get(name) for name in classes},
            "best_val_miou": r.best_val_miou,
            "epochs": r.epochs,
            "train_seconds": r.train_seconds,
            "eval_seconds": r.eval_seconds,
            "run_dir": r.run_dir,
        }
        for r in results
    ]
    write_csv(path, header, rows)


def write_density_summary(path: Path, summaries: Sequence[RegimeSummary]) -> None:
    """The input of :func:`pointseg.plots.plot_density_curve`: one row per regime."""
    rows = [
        {
            "regime": s.regime.name,
            "labelled_fraction": s.labelled_fraction,
            "miou_mean": s.miou_mean,
            "miou_std": s.miou_std,
            "dense": str(s.regime.dense).lower(),
            "method": "forest" if s.regime.forest else "network",
        }
        for s in summaries
    ]
    write_csv(path, ["regime", "labelled_fraction", "miou_mean", "miou_std", "dense", "method"], rows)


def percent(value: float | None, digits: int = 1) -> str:
    """``0.4567`` -> ``45.7``; None -> ``absent``."""
    return "absent" if value is None else f"{value * 100:.{digits}f}"


def results_markdown(plan: SweepPlan, summaries: Sequence[RegimeSummary]) -> str:
    """The report: a table per regime, a table per class, and how, where and when it was made."""
    dense = [s for s in summaries if s.regime.dense]
    dense_miou = dense[0].miou_mean if dense else None
    config, splits = plan.base, plan.splits
    seeds = ", ".join(map(str, plan.seeds))
    lines = [
        "# Test mIoU against label density",
        "",
        f"Model {config.model.arch}/{config.model.encoder}, up to {config.trainer.max_epochs} epoch(s), "
        f"seed(s) {seeds}, the same for every regime. Each run's best checkpoint is chosen by "
        f"validation mIoU on {len(splits['val'])} image(s); the numbers below are macro mIoU (mean of "
        f"per-class IoU, one confusion matrix) on the dense masks of {len(splits['test'])} separate test "
        f"image(s). Labelled pixels: labelled / valid (non-ignored) pixels of the {len(splits['train'])} "
        "training image(s)" + (" (mean over seeds)." if len(plan.seeds) > 1 else "."),
        "",
        "| regime | labelled pixels | test mIoU (%) | of dense mIoU | training (min) |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in summaries:
        miou = percent(s.miou_mean) + ("" if s.miou_std is None else f" ± {percent(s.miou_std)}")
        of_dense = "" if not dense_miou else f"{s.miou_mean / dense_miou * 100:.1f}%"
        fraction = f"{s.labelled_fraction * 100:.3g}%"
        lines.append(f"| {s.regime.name} | {fraction} | {miou} | {of_dense} | {s.train_minutes:.2f} |")
    classes = list(plan.schema.classes)
    lines += [
        "",
        "## Test IoU per class (%)" + (", mean over seeds" if len(plan.seeds) > 1 else ""),
        "",
        "| regime | " + " | ".join(classes) + " |",
        "|---|" + "---:|" * len(classes),
    ]
    for s in summaries:
        lines.append(
            f"| {s.regime.name} | " + " | ".join(percent(s.class_iou(name)) for name in classes) + " |"
        )
    if any(s.regime.forest for s in summaries):
        lines += [
            "",
            "forest: the pixel random forest baseline (scikit-learn, 200 trees, ilastik-style pixel "
            "features) fitted on exactly the points of the regime in brackets; no network, no checkpoint, "
            "no validation; its training time is the fit plus the test prediction.",
        ]
    runs = [r for s in summaries for r in s.runs]
    train_minutes = sum(r.train_seconds for r in runs) / 60
    eval_minutes = sum(r.eval_seconds or 0.0 for r in runs) / 60
    lines += [
        "",
        f"Made by `{command_line()}` on {datetime.now():%Y-%m-%d %H:%M}; {hardware()}; "
        f"{len(runs)} run(s) took {train_minutes + eval_minutes:.1f} min "
        f"(training {train_minutes:.1f}, test evaluation {eval_minutes:.1f}).",
        "",
    ]
    return "\n".join(lines)


def plot_regime_predictions(
    plan: SweepPlan, summaries: Sequence[RegimeSummary], out: Path, device: str
) -> None:
    """Image | ground truth | predictions of the sparsest point regime, a middle one and dense.

    The first test image is predicted whole by each regime's best checkpoint (first seed).
    """
    networks = [s for s in summaries if not s.regime.forest]
    points = sorted((s for s in networks if not s.regime.dense), key=lambda s: s.labelled_fraction)
    chosen = [
        *points[:1],
        *points[len(points) // 2 : len(points) // 2 + 1],
        *(s for s in networks if s.regime.dense),
    ]
    if not chosen:  # only forests: no network to show
        return
    ref = plan.splits["test"][0]
    predictions = {}
    for summary in {s.regime.slug: s for s in chosen}.values():  # one panel per regime, in order
        run = summary.runs[0]
        trained = load_trained_model(best_checkpoint(final_model_dir(run.run_dir)), device)
        sample = next(
            score_samples(
                trained, [ref], plan.schema, batch_size=trained.config.eval.batch_size, device=device
            )
        )
        predictions[f"{summary.regime.name} (test mIoU {percent(run.miou)}%)"] = sample.prediction
    plot_qualitative(
        sample.image(),
        sample.truth,
        predictions,
        plan.schema,
        out,
        title=f"test image {ref.id}, seed {summaries[0].runs[0].seed}",
    )


def command_line() -> str:
    """The command that is running, as a person would type it."""
    program = Path(sys.argv[0]).name
    program = "python -m pointseg" if program == "__main__.py" else program
    return shlex.join([program, *sys.argv[1:]])


def hardware() -> str:
    """CPU model and cores, torch version, and the GPU if CUDA is available."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"CPU {cpu} ({cores} cores){gpu}, torch {torch.__version__}"
