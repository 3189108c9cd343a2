"""Every figure the README and the experiments show, drawn from arrays and written as PNG.

Nothing here runs a model: :mod:`pointseg.evaluation` predicts and scores, then calls these.

- :func:`plot_prediction`: image | ground truth | prediction, with a class legend;
- :func:`plot_qualitative`: image | ground truth | one prediction per label regime;
- :func:`plot_points`: sparse point labels over the image, and the point label map itself;
- :func:`plot_training_curves`: training loss and validation mIoU from a run's ``metrics.csv``;
- :func:`plot_density_curve`: mIoU against the fraction of labelled pixels, dense masks as a line.

Figures are drawn on plain matplotlib ``Figure`` objects (no pyplot, so no global state and no
GUI backend) and written atomically: a failed plot never leaves a half-written PNG. Each function
returns its ``Figure`` so callers and tests can inspect titles and legends.

Images are shown from their raw ``(C, H, W)`` pixels of any dtype: bands 1-3 as RGB (a single
band as grey), each stretched between its 2nd and 98th percentile. Images and label maps larger
than :data:`DISPLAY_MAX_SIDE` pixels are subsampled by a whole-pixel stride before drawing, so a
2448 x 2448 scene plots in about a second; axes keep full-resolution pixel coordinates.
Ignored pixels (``IGNORE_INDEX``) are drawn black (or grey when black is a class colour) and
listed in the legend.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter, PercentFormatter
from PIL import Image

from pointseg.colors import display_rgb
from pointseg.errors import PointsegError
from pointseg.raster import atomic_output, read_window
from pointseg.schema import IGNORE_INDEX, RGB, ClassSchema

DISPLAY_MAX_SIDE = 800
"""Images and label maps are subsampled (by stride) to at most this many pixels per side for display."""

MAX_SCATTER_POINTS = 20_000
"""Point maps with more labelled pixels are drawn from a random subsample of this many points."""

PANEL_INCHES = 4.5
MAX_FIGURE_INCHES = 12.0
"""Side-by-side panels shrink so a figure is at most this wide (a README-sized PNG)."""
DPI = 150
PALETTE_COLOURS = 256
"""Figures are stored as palette PNGs: lossless for charts and label maps, and it keeps a photo panel
at a README-friendly file size (an aerial image panel otherwise makes a figure of 0.5 MB or more)."""
_IGNORED_CANDIDATES: tuple[RGB, ...] = ((0, 0, 0), (96, 96, 96), (255, 0, 128))
_PERCENT = FuncFormatter(lambda value, _: f"{value * 100:g}%")
DENSITY_COLUMNS = ("regime", "labelled_fraction", "miou_mean", "miou_std", "dense")
_METHOD_STYLES = {
    "network": ("o-", "tab:blue", "point labels (mean ± std over seeds)"),
    "forest": ("s--", "tab:orange", "pixel random forest, same points"),
}
"""Line style, colour and legend of each ``method`` of the density CSV's point rows."""
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no", "")


def plot_prediction(
    image: np.ndarray,
    truth: np.ndarray,
    prediction: np.ndarray,
    schema: ClassSchema,
    out: str | Path,
    title: str | None = None,
) -> Figure:
    """Write image | ground truth | prediction side by side, with a legend of class colours.

    Args:
        image: ``(C, H, W)`` raw pixels, any dtype and band count.
        truth: ``(H, W)`` uint8 labels, ``IGNORE_INDEX`` for ignored pixels.
        prediction: ``(H, W)`` uint8 predicted labels.
        schema: Class names and colours.
        out: PNG file to write.
        title: Figure title.

    Raises:
        PointsegError: if the shapes differ, a label is not in ``schema``, or ``out`` is not ``.png``.
    """
    return plot_qualitative(image, truth, {"prediction": prediction}, schema, out, title)


def plot_qualitative(
    image: np.ndarray,
    truth: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    schema: ClassSchema,
    out: str | Path,
    title: str | None = None,
) -> Figure:
    """Write image | ground truth | one panel per prediction (e.g. per label regime), one shared legend.

    Args:
        image: ``(C, H, W)`` raw pixels, any dtype and band count.
        truth: ``(H, W)`` uint8 labels, ``IGNORE_INDEX`` for ignored pixels.
        predictions: Panel title -> ``(H, W)`` uint8 labels, drawn left to right in this order.
        schema: Class names and colours.
        out: PNG file to write.
        title: Figure title.

    Raises:
        PointsegError: if the shapes differ, a label is not in ``schema``, or ``out`` is not ``.png``.
    """
    out = _png_path(out)
    size = _image_size(image)
    maps = {"ground truth": truth, **predictions}
    for name, labels in maps.items():
        _check_labels(labels, schema, name, size)
    stride = display_stride(*size)
    fig, axes = _panel_figure(1 + len(maps), size)
    _show_image(axes[0], image, stride, "image")
    ignored = False
    for ax, (name, labels) in zip(axes[1:], maps.items(), strict=True):
        shown = labels[::stride, ::stride]
        _show_labels(ax, shown, schema, size, name)
        ignored |= bool((shown == IGNORE_INDEX).any())
    _class_legend(fig, schema, ignored_label="ignored" if ignored else None)
    if title:
        fig.suptitle(title)
    _save(fig, out)
    return fig


def plot_points(
    image: np.ndarray,
    points_map: np.ndarray,
    schema: ClassSchema,
    out: str | Path,
    title: str | None = None,
) -> Figure:
    """Write sparse point labels drawn over the image, and the point label map itself.

    Args:
        image: ``(C, H, W)`` raw pixels, any dtype and band count.
        points_map: ``(H, W)`` uint8: class index on labelled pixels, ``IGNORE_INDEX`` elsewhere.
        schema: Class names and colours.
        out: PNG file to write.
        title: Start of the figure title, which always gives the point count and labelled
            fraction. When more than :data:`MAX_SCATTER_POINTS` points are drawn from a
            subsample, the title says so.

    Raises:
        PointsegError: if the shapes differ, a label is not in ``schema``, or ``out`` is not ``.png``.
    """
    out = _png_path(out)
    size = _image_size(image)
    counts = _check_labels(points_map, schema, "point map", size)
    rows, cols = np.nonzero(points_map != IGNORE_INDEX)
    total = len(rows)
    heading = f"{total:,} labelled pixels ({total / points_map.size:.3%} of the image)"
    if title:
        heading = f"{title}: {heading}"
    if total > MAX_SCATTER_POINTS:
        keep = np.sort(np.random.default_rng(0).choice(total, MAX_SCATTER_POINTS, replace=False))
        rows, cols = rows[keep], cols[keep]
        heading += f"\n(showing a random {MAX_SCATTER_POINTS:,} of {total:,} points)"
    labels = points_map[rows, cols]
    stride = display_stride(*size)
    fig, axes = _panel_figure(2, size)
    _show_image(axes[0], image, stride, "image and points")
    palette = np.array(schema.colors, dtype=np.float64) / 255
    area = _marker_area(len(rows))
    axes[0].scatter(
        cols + 0.5,
        rows + 0.5,
        s=area,
        c=palette[labels],
        edgecolors="black",
        linewidths=0.4 if area >= 9 else 0.15,
    )
    canvas, grow = point_canvas(rows, cols, labels, size, stride)
    note = f" (points enlarged {grow}x{grow} for display)" if grow > 1 else ""
    _show_labels(axes[1], canvas, schema, size, "point label map" + note)
    names = [f"{name} ({int(n):,})" for name, n in zip(schema.classes, counts, strict=True)]
    _class_legend(fig, schema, ignored_label="unlabelled", names=names)
    fig.suptitle(heading)
    _save(fig, out)
    return fig


def plot_training_curves(metrics_csv: str | Path, out: str | Path) -> Figure:
    """Write training loss (per step, per-epoch mean) and validation mIoU (per-class IoU faintly).

    Args:
        metrics_csv: A run's ``metrics.csv`` (Lightning's CSV log: sparse rows, each holding only
            some columns), or the run folder that holds it.
        out: PNG file to write.

    Raises:
        PointsegError: naming the file if it is missing, holds a non-number, or has neither a
            training loss (``train_loss_step``/``train_loss``) nor ``val_miou``.
    """
    out = _png_path(out)
    path = Path(metrics_csv)
    if path.is_dir():
        path = path / "metrics.csv"
    header, rows = _read_csv(path)
    step_loss = _series(path, rows, "step", _first_present(header, ("train_loss_step", "train_loss")))
    epoch_loss = _series(path, rows, "step", "train_loss_epoch")
    miou = _series(path, rows, "epoch", "val_miou")
    if not step_loss[0].size and not epoch_loss[0].size and not miou[0].size:
        raise PointsegError(
            f"{path}: no values in a 'train_loss_step', 'train_loss' or 'val_miou' column "
            f"(columns: {', '.join(header) or 'none'}); expected the metrics.csv of a `pointseg train` run"
        )
    fig = Figure(figsize=(12, 4.5), dpi=DPI, layout="constrained")
    loss_ax, val_ax = fig.subplots(1, 2)
    loss_ax.plot(*step_loss, color="tab:blue", alpha=0.45, linewidth=1, label="per step")
    loss_ax.plot(*epoch_loss, color="tab:blue", marker="o", markersize=4, linewidth=2, label="epoch mean")
    loss_ax.set(title="training loss", xlabel="step", ylabel="loss")
    _legend_or_note(loss_ax, "no training loss logged")
    for column in sorted(c for c in header if c.startswith("val_iou_")):
        val_ax.plot(
            *_series(path, rows, "epoch", column),
            linewidth=1,
            alpha=0.35,
            label=column.removeprefix("val_iou_"),
        )
    if miou[0].size:
        val_ax.plot(*miou, color="black", marker="o", markersize=4, linewidth=2.2, label="mIoU")
        best = int(np.argmax(miou[1]))
        val_ax.annotate(
            f"best {miou[1][best]:.1%} (epoch {miou[0][best]:g})",
            (miou[0][best], miou[1][best]),
            xytext=(0, 8),
            textcoords="offset points",
            ha="center",
            fontsize=8,
        )
    val_ax.set(title="validation IoU", xlabel="epoch", ylabel="IoU", ylim=(0, 1.05))
    val_ax.yaxis.set_major_formatter(PercentFormatter(1))
    for ax in (loss_ax, val_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _legend_or_note(val_ax, "no val_miou logged yet", outside=True)
    fig.suptitle(f"{path.parent.name}: training curves")
    _save(fig, out)
    return fig


def plot_density_curve(results_csv: str | Path, out: str | Path, title: str | None = None) -> Figure:
    """Write mIoU against the labelled-pixel fraction: one point per regime, dense masks as a line.

    Args:
        results_csv: CSV with columns ``regime,labelled_fraction,miou_mean,miou_std,dense``:
            ``labelled_fraction`` in ``(0, 1]`` (may be empty on dense rows), ``miou_mean`` and
            ``miou_std`` (std over seeds; empty, 0 or a missing column means one seed) as
            fractions in ``[0, 1]``, ``dense`` true/false; and optionally ``method``: ``network``
            (the default) or ``forest`` (the pixel random forest baseline, drawn as its own line).
        out: PNG file to write.
        title: Figure title.

    Raises:
        PointsegError: naming the file, and the row and column, for missing columns or bad values.
    """
    out = _png_path(out)
    path = Path(results_csv)
    header, rows = _read_csv(path)
    missing = [c for c in DENSITY_COLUMNS if c not in header and c != "miou_std"]
    if missing:
        raise PointsegError(
            f"{path}: missing column(s) {', '.join(missing)}; expected columns {','.join(DENSITY_COLUMNS)} "
            f"(found: {', '.join(header) or 'none'})"
        )
    if not rows:
        raise PointsegError(f"{path}: no rows; expected one row per label regime")
    sparse: dict[str, list[tuple[float, float, float, str]]] = {method: [] for method in _METHOD_STYLES}
    dense: list[tuple[float, float, str]] = []
    for number, row in enumerate(rows, start=2):
        where = f"{path}: line {number}"
        regime = row["regime"] or f"row {number}"
        mean = _fraction(row["miou_mean"], f"{where}: miou_mean")
        std = _fraction(row.get("miou_std") or "0", f"{where}: miou_std")
        flag = (row["dense"] or "").strip().lower()
        if flag not in _TRUE + _FALSE:
            raise PointsegError(f"{where}: dense {row['dense']!r}; expected true or false")
        method = (row.get("method") or "network").strip().lower()
        if method not in _METHOD_STYLES:
            raise PointsegError(
                f"{where}: method {row['method']!r}; expected one of {', '.join(_METHOD_STYLES)}"
            )
        if flag in _TRUE:
            dense.append((mean, std, regime))
            continue
        fraction = _fraction(row["labelled_fraction"], f"{where}: labelled_fraction")
        if fraction <= 0:
            raise PointsegError(
                f"{where}: labelled_fraction {fraction}; expected a fraction above 0 (log x axis)"
            )
        sparse[method].append((fraction, mean, std, regime))
    fig = Figure(figsize=(7.5, 5), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    for method, (fmt, color, label) in _METHOD_STYLES.items():
        if not sparse[method]:
            continue
        fractions, means, stds, regimes = zip(*sorted(sparse[method]), strict=True)
        ax.errorbar(
            fractions,
            means,
            yerr=stds,
            fmt=fmt,
            color=color,
            capsize=4,
            linewidth=1.2,
            markersize=6,
            label=label,
        )
        for x, y, regime in zip(fractions, means, regimes, strict=True):
            ax.annotate(regime, (x, y), xytext=(6, -12), textcoords="offset points", fontsize=8)
    every = [row[0] for rows in sparse.values() for row in rows]
    ax.set_xlim(*((min(every) / 2, max(every) * 2) if every else (1e-4, 1)))
    for mean, std, regime in dense:
        label = "dense masks" if len(dense) == 1 else f"dense masks ({regime})"
        ax.axhline(mean, color="0.25", linestyle="--", linewidth=1.2, label=f"{label}: {mean:.1%}")
        ax.text(0.01, mean, label, transform=ax.get_yaxis_transform(), va="bottom", fontsize=8, color="0.25")
        if std > 0:
            ax.axhspan(mean - std, mean + std, color="0.25", alpha=0.12, linewidth=0)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_PERCENT)
    ax.xaxis.set_minor_formatter(NullFormatter())
    top = max([m + s for rows in sparse.values() for _, m, s, _ in rows] + [m + s for m, s, _ in dense])
    ax.set_ylim(0, min(1.0, top + 0.1))
    ax.yaxis.set_major_formatter(PercentFormatter(1))
    ax.set(xlabel="labelled pixels (fraction of the image, log scale)", ylabel="mIoU (macro)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or "mIoU against label density")
    _save(fig, out)
    return fig


def plot_points_file(
    image_path: str | Path, points_path: str | Path, schema: ClassSchema, out: str | Path
) -> Path:
    """Read an image and its point label map (``.png``/``.tif``, 255 = unlabelled) and plot them.

    Raises:
        PointsegError: if a file is unreadable, the point map is not one band, its size differs
            from the image's, or it holds a class index that ``schema`` lacks.
    """
    image = read_window(image_path)
    raw = read_window(points_path)
    if raw.shape[0] != 1:
        raise PointsegError(
            f"{points_path}: {raw.shape[0]} bands; expected a single-band point label map "
            "(class index on labelled pixels, 255 elsewhere)"
        )
    if raw.shape[1:] != image.shape[1:]:
        raise PointsegError(
            f"{points_path}: point map is {_hw(raw.shape[1:])} pixels, but image {image_path} is "
            f"{_hw(image.shape[1:])}; expected the same size"
        )
    title = f"{Path(image_path).name}: points from {Path(points_path).name}"
    plot_points(image, raw[0], schema, out, title)
    return Path(out)


def display_stride(height: int, width: int, max_side: int = DISPLAY_MAX_SIDE) -> int:
    """Whole-pixel stride that brings the longer side of ``height x width`` to ``max_side`` or less."""
    return max(1, math.ceil(max(height, width) / max_side))


def point_canvas(
    rows: np.ndarray, cols: np.ndarray, labels: np.ndarray, size: tuple[int, int], stride: int
) -> tuple[np.ndarray, int]:
    """Rasterise points onto a display grid subsampled by ``stride``, keeping every point visible.

    Plain striding would drop most single-pixel points, so each point is painted into the cell
    that holds it, grown to a square of ``grow`` cells on large canvases.

    Returns:
        ``(H', W')`` uint8 labels (``IGNORE_INDEX`` elsewhere) and ``grow``.
    """
    height, width = -(-size[0] // stride), -(-size[1] // stride)
    canvas = np.full((height, width), IGNORE_INDEX, dtype=np.uint8)
    grow = max(1, round(max(height, width) / 250))
    for dy in range(grow):
        for dx in range(grow):
            canvas[
                np.minimum(rows // stride + dy, height - 1), np.minimum(cols // stride + dx, width - 1)
            ] = labels
    return canvas, grow


def ignored_color(schema: ClassSchema) -> RGB:
    """Colour that draws ignored/unlabelled pixels: black, unless a class is black."""
    return next(c for c in _IGNORED_CANDIDATES if c not in schema.colors)


def _check_labels(labels: np.ndarray, schema: ClassSchema, what: str, size: tuple[int, int]) -> np.ndarray:
    """Check an ``(H, W)`` label map against the image size and the schema; return per-class pixel counts."""
    if labels.shape != size:
        raise PointsegError(f"{what} is {_hw(labels.shape)} pixels, but the image is {_hw(size)}")
    if labels.dtype != np.uint8:
        in_range = labels.min(initial=0) >= 0 and labels.max(initial=0) <= 255
        if not np.issubdtype(labels.dtype, np.integer) or not in_range:
            raise PointsegError(f"{what}: dtype {labels.dtype}; expected uint8 class labels (255 = ignored)")
        labels = labels.astype(np.uint8)
    counts = np.bincount(labels.ravel(), minlength=256)
    unknown = [v for v in np.flatnonzero(counts) if schema.num_classes <= v < IGNORE_INDEX]
    if unknown:
        raise PointsegError(
            f"{what}: label(s) {', '.join(map(str, unknown))} not in schema '{schema.name}' "
            f"({schema.num_classes} classes: 0..{schema.num_classes - 1}, {IGNORE_INDEX} = ignored)"
        )
    return counts[: schema.num_classes]


def _image_size(image: np.ndarray) -> tuple[int, int]:
    if image.ndim != 3 or 0 in image.shape:
        raise PointsegError(f"image has shape {image.shape}; expected (bands, height, width)")
    return int(image.shape[1]), int(image.shape[2])


def _hw(shape: Sequence[int]) -> str:
    return f"{shape[0]}x{shape[1]} (HxW)"


def _png_path(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise PointsegError(f"{out}: figures are written as PNG; expected a path ending in .png")
    return out


def _panel_figure(count: int, size: tuple[int, int]) -> tuple[Figure, list[Axes]]:
    """A figure of ``count`` side-by-side image panels sized to the image's aspect ratio."""
    aspect = min(max(size[0] / size[1], 0.5), 2.0)
    panel = min(PANEL_INCHES, MAX_FIGURE_INCHES / count)
    fig = Figure(figsize=(panel * count, panel * aspect + 1.1), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, count, squeeze=False)[0]
    return fig, list(axes)


def _extent(size: tuple[int, int]) -> tuple[float, float, float, float]:
    return (0, size[1], size[0], 0)


def _show_image(ax: Axes, image: np.ndarray, stride: int, title: str) -> None:
    size = (image.shape[1], image.shape[2])
    ax.imshow(display_rgb(image, stride), extent=_extent(size), interpolation="antialiased")
    ax.set_title(title)
    ax.set_axis_off()


def _show_labels(
    ax: Axes, labels: np.ndarray, schema: ClassSchema, size: tuple[int, int], title: str
) -> None:
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: schema.num_classes] = schema.colors
    palette[IGNORE_INDEX] = ignored_color(schema)
    ax.imshow(palette[labels], extent=_extent(size), interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()


def _class_legend(
    fig: Figure, schema: ClassSchema, ignored_label: str | None, names: Sequence[str] | None = None
) -> None:
    """Add one legend of class colour patches (and the ignored colour) below the panels."""
    entries: list[tuple[str, RGB]] = list(zip(names or schema.classes, schema.colors, strict=True))
    if ignored_label is not None:
        entries.append((ignored_label, ignored_color(schema)))
    handles = [
        Patch(facecolor=_rgb_float(color), edgecolor="0.3", linewidth=0.6, label=name)
        for name, color in entries
    ]
    entry_inches = 0.7 + 0.075 * max(len(name) for name, _ in entries)  # patch + text at 10 pt
    columns = max(1, min(len(handles), int(fig.get_figwidth() / entry_inches)))
    fig.legend(handles=handles, loc="outside lower center", ncol=columns, frameon=False)


def _marker_area(count: int) -> float:
    """Scatter marker area (pt²): markers together cover about a fifth of a panel, within 1-36 pt²."""
    panel_area = (PANEL_INCHES * 72) ** 2
    return float(np.clip(0.2 * panel_area / max(count, 1), 1.0, 36.0))


def _rgb_float(color: RGB) -> tuple[float, float, float]:
    return (color[0] / 255, color[1] / 255, color[2] / 255)


def _legend_or_note(ax: Axes, note: str, outside: bool = False) -> None:
    if ax.lines:
        if outside:
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
        else:
            ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", color="0.4")


def _save(fig: Figure, out: Path) -> None:
    rendered = io.BytesIO()
    fig.savefig(rendered, format="png", dpi=DPI)
    with Image.open(rendered) as image:
        palette = image.convert("RGB").quantize(colors=PALETTE_COLOURS)
    with atomic_output(out) as temporary:
        palette.save(temporary, format="PNG", optimize=True)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Read a CSV file with a header row."""
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            return [name.strip() for name in reader.fieldnames or []], rows
    except FileNotFoundError as error:
        raise PointsegError(f"{path}: no such file") from error
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise PointsegError(f"{path}: cannot read as CSV ({error})") from error


def _first_present(header: Sequence[str], candidates: Sequence[str]) -> str:
    return next((c for c in candidates if c in header), candidates[0])


def _series(
    path: Path, rows: Sequence[dict[str, str]], x_column: str, y_column: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of the rows where ``y_column`` has a value, sorted by x; empty if the column is absent.

    A missing or empty ``x_column`` falls back to the value's position in the file.
    """
    points: list[tuple[float, float]] = []
    for number, row in enumerate(rows, start=2):
        value = (row.get(y_column) or "").strip()
        if not value:
            continue
        x = (row.get(x_column) or "").strip()
        points.append(
            (
                _number(x, f"{path}: line {number}: {x_column}") if x else float(len(points)),
                _number(value, f"{path}: line {number}: {y_column}"),
            )
        )
    points.sort(key=lambda point: point[0])
    if not points:
        return np.empty(0), np.empty(0)
    xs, ys = zip(*points, strict=True)
    return np.array(xs), np.array(ys)


def _number(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise PointsegError(f"{where}: {text!r} is not a number") from None


def _fraction(text: str, where: str) -> float:
    value = _number(text.strip(), where)
    if not 0 <= value <= 1:
        raise PointsegError(f"{where}: {value:g}; expected a fraction in [0, 1] (e.g. 0.52, not 52)")
    return value
