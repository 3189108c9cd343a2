"""``pointseg experiment ablation``: what each added technique is worth, one label regime, one row per step.

The config's ``experiment.ablation`` section names a label regime and a list of steps; each step
adds settings (``key.path=value``, as ``--set`` takes them) to those of the step it builds on: the
step just above, or the earlier step named by ``builds_on``::

    experiment:
      ablation:
        regime: per-class:10
        steps:
          - {name: base}
          - {name: pretrained, set: [model.encoder=tu-efficientnet_lite0, model.weights=imagenet]}
          - {name: expansion, set: [points.expansion.method=slic]}
          - {name: propagation, builds_on: pretrained, set: [loss.propagation_weight=0.1]}

Each step is a :func:`pointseg.experiments.density_sweep` of the regime with its settings and those
of the steps it builds on, into ``DIR/<name>/`` (so every row is trained, chosen on validation and
scored on the dense test masks by the same code as the density sweeps, and a finished step is
kept when the ablation runs again). The first step also runs the pixel random forest on the same
points, so the table shows the classical baseline too. ``DIR/ablation.md`` and ``DIR/ablation.csv``
hold the table: each step's settings, test mIoU, the change from the step it builds on, and
training time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pointseg.config import read_config_data
from pointseg.errors import PointsegError
from pointseg.experiments import (
    AblationSection,
    RegimeSummary,
    command_line,
    density_sweep,
    hardware,
    parse_regime,
    percent,
    read_experiment_section,
    summarise,
    write_csv,
    write_text,
)
from pointseg.progress import Track, no_progress
from pointseg.runs import write_json


@dataclass
class AblationRow:
    """One row of the table: a step (or the forest baseline), its added settings and its runs.

    ``on`` is the row the step builds on (None for the first step and the forest).
    """

    name: str
    added: list[str]
    summary: RegimeSummary
    on: AblationRow | None = None


def read_ablation(config_path: Path) -> AblationSection:
    """The ``experiment.ablation`` section of a config.

    Raises:
        PointsegError: if the config has none, or it is malformed (naming the field), or its regime
            is dense or a forest, or two steps share a name.
    """
    section = read_experiment_section(read_config_data(config_path), config_path).ablation
    if section is None:
        raise PointsegError(
            f"{config_path}: no experiment.ablation section; expected 'experiment: {{ablation: "
            "{regime: per-class:10, steps: [{name: base}, "
            "{name: pretrained, set: [model.weights=imagenet]}]}}'"
        )
    regime = parse_regime(section.regime)
    if regime.dense or regime.forest:
        raise PointsegError(
            f"{config_path}: experiment.ablation.regime {section.regime!r}: expected a point regime "
            "such as per-class:10 (the forest baseline is added by the ablation itself)"
        )
    names = [step.name.lower() for step in section.steps]
    for index, step in enumerate(section.steps):
        if names.count(names[index]) > 1:
            raise PointsegError(
                f"{config_path}: experiment.ablation.steps: the name {names[index]!r} is used twice"
            )
        if step.builds_on is not None and step.builds_on.lower() not in names[:index]:
            raise PointsegError(
                f"{config_path}: experiment.ablation.steps.{index}.builds_on {step.builds_on!r}: "
                f"expected the name of an earlier step ({', '.join(names[:index]) or 'none'})"
            )
    return section


def step_settings(section: AblationSection) -> dict[str, tuple[list[str], str | None]]:
    """Each step's settings with those of the steps it builds on, and the name of the step it builds on."""
    resolved: dict[str, tuple[list[str], str | None]] = {}
    previous: str | None = None
    by_name = {step.name.lower(): step.name for step in section.steps}
    for step in section.steps:
        on = by_name[step.builds_on.lower()] if step.builds_on is not None else previous
        inherited = resolved[on][0] if on is not None else []
        resolved[step.name] = ([*inherited, *step.settings], on)
        previous = step.name
    return resolved


def ablation(
    config_path: str | Path,
    out: str | Path,
    seeds: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    *,
    progress: bool = True,
    device: str | None = None,
    announce: Callable[[str], None] = print,
    track: Track = no_progress,
) -> list[AblationRow]:
    """Train and score every step of the config's ablation; resume what is done.

    Args:
        config_path: Training config with an ``experiment.ablation`` section.
        out: Output folder: one density-sweep folder per step, and ``ablation.md``/``.csv``.
        seeds: Seeds to repeat each step with; default: the config's ``experiment.seeds``, else its seed.
        overrides: Settings applied to every step, before the steps' own.
        progress: Show training progress.
        device: Where to evaluate; see :func:`pointseg.experiments.density_sweep`.
        announce: Called with a line before each step and run.
        track: Progress over the test images of each evaluation.

    Returns:
        The table's rows: one per step, then the forest baseline.

    Raises:
        PointsegError: for a bad section, bad settings or data (before the first step trains when
            they can be known then), or a run folder trained with other settings.
    """
    config_path, out = Path(config_path), Path(out)
    section = read_ablation(config_path)
    forest = f"forest:{section.regime}"
    started = datetime.now()
    rows: dict[str, AblationRow] = {}
    settings = step_settings(section)
    for number, step in enumerate(section.steps, start=1):
        added, on = settings[step.name]
        regimes = [section.regime, forest] if number == 1 else [section.regime]
        adds = " ".join(step.settings) or "as configured"
        announce(
            f"ablation step {number}/{len(section.steps)}: {step.name} ({adds}{f' on {on}' if on else ''})"
        )
        results = density_sweep(
            config_path,
            out / step.name,
            regimes,
            seeds,
            [*overrides, *added],
            progress=progress,
            device=device,
            announce=announce,
            track=track,
        )
        summaries = {s.regime.spec: s for s in summarise(results)}
        rows[step.name] = AblationRow(
            step.name, list(step.settings), summaries[section.regime], rows[on] if on else None
        )
        if number == 1:
            baseline = AblationRow(f"pixel random forest (points of {step.name})", [], summaries[forest])
    table = [*rows.values(), baseline]
    write_ablation_table(out, section, table, list(overrides), started)
    return table


def write_ablation_table(
    out: Path, section: AblationSection, rows: Sequence[AblationRow], overrides: list[str], started: datetime
) -> None:
    """Write ``ablation.csv`` (one row per step and seed-mean) and ``ablation.md``."""
    write_csv(
        out / "ablation.csv",
        ["step", "builds_on", "added", "miou_mean", "miou_std", "seeds", "train_minutes", "folder"],
        [
            {
                "step": row.name,
                "builds_on": row.on.name if row.on else None,
                "added": " ".join(row.added),
                "miou_mean": row.summary.miou_mean,
                "miou_std": row.summary.miou_std,
                "seeds": len(row.summary.runs),
                "train_minutes": row.summary.train_minutes,
                "folder": row.summary.runs[0].run_dir,
            }
            for row in rows
        ],
    )
    regime = parse_regime(section.regime)
    lines = [
        f"# Ablation: {regime.name} ({regime.description})",
        "",
        "Each step adds its settings to those of the step it builds on; every row is trained on "
        "the same points, its best checkpoint chosen on the validation split, and scored (macro mIoU, one "
        "confusion matrix) on the dense masks of the test split by the code of `pointseg experiment "
        "density`; each step's folder holds its full report (results.md, per-class IoU, runs). The "
        "change is against the step it builds on.",
        "",
        "| step | builds on | adds | test mIoU (%) | change | training (min) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for row in rows:
        summary = row.summary
        spread = "" if summary.miou_std is None else f" ± {percent(summary.miou_std)}"
        miou = percent(summary.miou_mean) + spread
        forest = summary.regime.forest
        change = "" if row.on is None else f"{(summary.miou_mean - row.on.summary.miou_mean) * 100:+.1f}"
        adds = "" if forest else (", ".join(f"`{s}`" for s in row.added) or "(the config as it is)")
        on = row.on.name if row.on else ""
        lines.append(f"| {row.name} | {on} | {adds} | {miou} | {change} | {summary.train_minutes:.2f} |")
    lines += [
        "",
        "Training time of a self-training step is that of the run plus its rounds. The forest's time is its "
        "fit plus the test prediction.",
        "",
        f"Made by `{command_line()}` on {datetime.now():%Y-%m-%d %H:%M}; {hardware()}.",
        "",
    ]
    write_text(out / "ablation.md", "\n".join(lines))
    write_json(
        out / "ablation.json",
        {
            "regime": section.regime,
            "steps": [step.model_dump(by_alias=True) for step in section.steps],
            "overrides": overrides,
            "command": command_line(),
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now().isoformat(timespec="seconds"),
            "rows": [{"step": row.name, "miou": row.summary.miou_mean} for row in rows],
        },
    )
