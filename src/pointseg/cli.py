"""Command-line interface: parses arguments, calls one function per command, prints results.

Every command reports input problems as one ``error:`` message that names the file or value
and exits with status 1; heavy modules are imported inside the commands so ``--help`` is quick.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from pointseg.choices import (
    MAX_OVERLAP,
    TILE_MULTIPLE,
    CropSampling,
    DatasetFormat,
    Device,
    Norm,
    OutputFormat,
    Overlap,
    PointStrategy,
    Precision,
    Scale,
    TestTimeAugmentation,
    Tile,
    check,
)
from pointseg.errors import PointsegError
from pointseg.progress import no_progress, track_items
from pointseg.serving import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_MB, DEFAULT_REQUEST_TIMEOUT_S

if TYPE_CHECKING:
    from pointseg.inference import InferenceModel

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Land-cover segmentation from sparse point labels."
)
data_app = typer.Typer(no_args_is_help=True, help="Inspect and fetch datasets.")
points_app = typer.Typer(no_args_is_help=True, help="Simulate or import sparse point labels.")
app.add_typer(data_app, name="data")
export_app = typer.Typer(no_args_is_help=True, help="Export a trained model.")
app.add_typer(points_app, name="points")
app.add_typer(export_app, name="export")

console = Console()
error_console = Console(stderr=True)

SchemaOption = Annotated[
    Path | None, typer.Option("--schema", help="Class schema YAML/JSON (required for --format folder).")
]
ImagesDirOption = Annotated[str, typer.Option(help="--format folder: subfolder of images.")]
MasksDirOption = Annotated[str, typer.Option(help="--format folder: subfolder of masks.")]
MaskPatternOption = Annotated[str, typer.Option(help="--format folder: mask stem for an image stem.")]


def choice_option(kind: Any, *flags: str, help: str, unknown: str | None = None) -> Any:
    """A typer option that takes one of the ``Literal`` ``kind``'s values (a bad one is an ``error:``).

    Args:
        kind: The ``Literal`` type of :mod:`pointseg.choices`.
        flags: The option's names, the long one first (``"--format", "-f"``).
        help: The help text.
        unknown: What a value is (``"dataset format"``), for the message
            ``unknown <what> '<value>'; expected one of ...``; by default the message names the flag.
    """

    def parse(text: str) -> str:
        if unknown is not None and text not in get_args(kind):
            raise PointsegError(f"unknown {unknown} {text!r}; expected one of {', '.join(get_args(kind))}")
        return check(kind, text, flags[0])

    return typer.Option(*flags, parser=parse, metavar="[" + "|".join(get_args(kind)) + "]", help=help)


def range_option(kind: Any, flag: str, help: str) -> Any:
    """A typer option whose value, when given, must be of the constrained type ``kind`` (e.g. Overlap)."""
    return typer.Option(
        flag, callback=lambda value: None if value is None else check(kind, value, flag), help=help
    )


DeviceOption = Annotated[Device, choice_option(Device, "--device", help="Where the model runs.")]
PrecisionOption = Annotated[
    Precision,
    choice_option(
        Precision,
        "--precision",
        help="fp32, or bf16 autocast (torch models; faster only on a CPU with AVX-512 or AMX, or a GPU with "
        "bfloat16).",
    ),
]
TileOption = Annotated[
    int | None,
    range_option(
        Tile, "--tile", f"Sliding-window tile, a multiple of {TILE_MULTIPLE} px (default: the model's)."
    ),
]
FormatOption = Annotated[
    DatasetFormat,
    choice_option(DatasetFormat, "--format", "-f", help="Dataset format.", unknown="dataset format"),
]
OverlapOption = Annotated[
    float | None,
    range_option(Overlap, "--overlap", f"Tile overlap fraction, 0-{MAX_OVERLAP:g} (default: the model's)."),
]
TtaOption = Annotated[
    TestTimeAugmentation | None,
    choice_option(
        TestTimeAugmentation,
        "--tta",
        help="flips: average each tile with its two mirrors, 3x the time; d4: with its eight rotations and "
        "mirrors, 8x (default: the model's eval.tta).",
    ),
]


def parse_scales(text: str | None) -> tuple[float, ...] | None:
    """``--scales 1,1.5``: comma-separated size factors, each checked as a :data:`Scale` (None: not given)."""
    if text is None:
        return None
    try:
        scales = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise PointsegError(f"--scales {text!r}: expected numbers separated by commas, e.g. 1,1.5") from None
    return tuple(check(Scale, scale, "--scales") for scale in scales)


ScalesOption = Annotated[
    str | None,
    typer.Option(
        "--scales",
        metavar="1,1.5",
        help="Predict each tile at these sizes and average the class probabilities, e.g. 1,1.5: "
        "1 + 1.5² = 3.25x the time (default: the model's eval.scales).",
    ),
]


@data_app.command("check")
def data_check(
    path: Annotated[Path, typer.Argument(help="Dataset folder.")],
    format: FormatOption,
    schema: SchemaOption = None,
    images_dir: ImagesDirOption = "images",
    masks_dir: MasksDirOption = "masks",
    mask_pattern: MaskPatternOption = "{stem}",
    points: Annotated[
        Path | None,
        typer.Option(
            "--points",
            help="The images are labelled by these points (a file or folder): images without a mask "
            "are then counted as information, not problems.",
        ),
    ] = None,
) -> None:
    """Report image count, sizes, bands, dtypes, class shares and every problem; exit 1 on any problem."""
    from pointseg.datasets import discover_dataset
    from pointseg.datasets.check import check_dataset, print_report

    if points is not None and not points.exists():
        raise PointsegError(f"--points {points}: no such file or folder")
    discovery = discover_dataset(
        format,
        path,
        schema,
        require_masks=False,
        images_dir=images_dir,
        masks_dir=masks_dir,
        mask_pattern=mask_pattern,
    )
    report = check_dataset(discovery, points_given=points is not None)
    print_report(report, console)
    if report.problems:
        raise typer.Exit(1)


@data_app.command("download")
def data_download(
    name: Annotated[str, typer.Argument(help="landcoverai")],
    root: Annotated[Path, typer.Option("--root", help="Folder to download into.")] = Path("data"),
    url: Annotated[
        str | None, typer.Option(help="Another source for the archive (a mirror or file://).")
    ] = None,
) -> None:
    """Download a public dataset, verify its checksum and unpack it (LandCover.ai v1, ~1.5 GB)."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from pointseg.download import download_dataset, find_download

    console.print(find_download(name).note)
    with Progress(
        *Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), console=console
    ) as bar:
        task = bar.add_task(f"downloading {name}", total=None)
        folder = download_dataset(
            name, root, lambda done, total: bar.update(task, completed=done, total=total), url
        )
    console.print(f"{name} is in {folder}; check it with: pointseg data check {folder} --format {name}")


@points_app.command("simulate")
def points_simulate(
    path: Annotated[Path, typer.Argument(help="Dataset folder with dense masks.")],
    format: FormatOption,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for <id>.png/.tif, <id>.geojson and summary.json.")
    ],
    strategy: Annotated[
        PointStrategy,
        choice_option(PointStrategy, "--strategy", help="How points are placed.", unknown="strategy"),
    ] = "density",
    density: Annotated[float, typer.Option(help="density: fraction of valid pixels, e.g. 0.01.")] = 0.01,
    per_class: Annotated[int, typer.Option(help="per-class: points per class present.")] = 10,
    min_area: Annotated[
        int, typer.Option(help="per-region: smallest region (pixels) that gets a point.")
    ] = 100,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same points.")] = 0,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace a non-empty --out folder (its old files are removed)."),
    ] = False,
    schema: SchemaOption = None,
    images_dir: ImagesDirOption = "images",
    masks_dir: MasksDirOption = "masks",
    mask_pattern: MaskPatternOption = "{stem}",
) -> None:
    """Simulate sparse point labels from dense masks, reproducibly from a seed."""
    from pointseg.datasets import discover_dataset
    from pointseg.point_maps import simulate_dataset_points
    from pointseg.points import PointProtocol
    from pointseg.raster import staged_directory

    protocol = PointProtocol(
        strategy=strategy, density=density, per_class=per_class, min_area=min_area, seed=seed
    )
    discovery = discover_dataset(
        format, path, schema, images_dir=images_dir, masks_dir=masks_dir, mask_pattern=mask_pattern
    )
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise PointsegError(
            f"{out}: folder is not empty; point files from another run would mix with these. "
            "Choose an empty folder, or pass --overwrite to replace its contents"
        )
    images = len(discovery.require_usable())
    with (
        staged_directory(out, replace=overwrite) as staging,
        track_items(console, "simulating points", images) as advance,
    ):
        summary = simulate_dataset_points(discovery, protocol, staging, advance)
    totals = summary.to_dict()
    console.print(
        f"{totals['points']:,} points ({protocol.describe()}, seed {seed}) "
        f"on {totals['images']} image(s) -> {out}"
    )
    console.print("per class: " + ", ".join(f"{k} {v:,}" for k, v in totals["points_per_class"].items()))


@points_app.command("import")
def points_import(
    points: Annotated[Path, typer.Argument(help="Points clicked in a GIS: .geojson, .csv or .gpkg.")],
    image: Annotated[Path, typer.Option("--image", help="The raster the points label.")],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for <image stem>.png/.tif, .geojson, summary.json.")
    ],
    format: Annotated[
        str | None, typer.Option("--format", "-f", help="Use this dataset's class schema.")
    ] = None,
    schema: SchemaOption = None,
    points_crs: Annotated[
        str | None,
        typer.Option(help="CRS of the points when the file does not say (e.g. EPSG:4326, or 'pixel')."),
    ] = None,
    skip_invalid: Annotated[
        bool,
        typer.Option("--skip-invalid", help="Drop points outside the image, of unknown class or duplicated."),
    ] = False,
    class_field: Annotated[
        str, typer.Option(help="Attribute with the class name (e.g. landcover); case-insensitive.")
    ] = "class",
) -> None:
    """Turn points clicked in a GIS into a sparse label map on the image's pixel grid."""
    from pointseg.datasets import resolve_schema
    from pointseg.point_maps import import_point_file
    from pointseg.raster import staged_directory

    class_schema = resolve_schema(format, schema)
    with staged_directory(out) as staging:
        summary, report = import_point_file(
            points, image, class_schema, staging, points_crs, skip_invalid, class_field
        )
    console.print(report.summary(), highlight=False)
    console.print(f"{int(summary.points_per_class.sum()):,} points written -> {out}")


@app.command("train")
def train_command(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML config (see configs/); not needed with --resume."),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting: key.path=value (repeatable).")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume", help="Continue a run with its saved config: its folder (or a checkpoint in it)."
        ),
    ] = None,
    progress: Annotated[
        bool, typer.Option(help="Show progress (a bar on a terminal, else a line per epoch).")
    ] = True,
) -> None:
    """Train on point labels (or dense masks); validate by macro mIoU on dense masks, or on held-out points.

    With ``self_training.rounds`` above 0, rounds on pseudo-labels follow, each in its own run
    folder inside the run (``self-training-<k>``).
    """
    from pointseg.config import load_config
    from pointseg.runs import resolve_resume, resume_settings, run_report

    # Settings are validated before the training stack (torch, Lightning) is imported.
    if resume is not None:
        settings = resume_settings(resolve_resume(resume).run_dir, config, set_ or [])
    elif config is None:
        raise PointsegError("--config is required to start a run (or --resume RUN_DIR to continue one)")
    else:
        settings = load_config(config, set_ or [])
    from pointseg.training import train

    run_dir = train(settings, resume=resume, progress=progress)
    for line in run_report(run_dir, settings):
        console.print(line, highlight=False, soft_wrap=True)
    if settings.self_training.rounds:
        from pointseg.self_training import self_train

        for index, round_dir in enumerate(self_train(settings, run_dir, progress), start=1):
            console.print(f"self-training round {index}:", highlight=False)
            for line in run_report(round_dir, settings):
                console.print("  " + line, highlight=False, soft_wrap=True)


@app.command("map")
def map_command(
    images: Annotated[list[Path], typer.Argument(help="Images (or folders of images) to train on and map.")],
    points: Annotated[
        Path,
        typer.Option(
            "--points",
            help="Clicked points: one .geojson/.csv/.gpkg for all images, or a folder of <image stem>.geojson"
            "|.csv|.gpkg (or label rasters <stem>.tif|.png).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="New output folder for the maps, model and report.")],
    class_field: Annotated[
        str, typer.Option(help="Attribute with the class name (e.g. landcover); case-insensitive.")
    ] = "class",
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 15,
    device: DeviceOption = "cpu",
    polygons: Annotated[
        bool, typer.Option("--polygons", help="Also write <stem>_classes.gpkg of class polygons.")
    ] = False,
    min_area: Annotated[
        int, typer.Option(min=0, help="--polygons: minimum mapping unit in pixels (smaller areas merge).")
    ] = 16,
    encoder: Annotated[
        str, typer.Option(help="Encoder of the network (small for a laptop CPU).")
    ] = "tu-efficientnet_lite0",
    weights: Annotated[
        str,
        typer.Option(
            help="Encoder weights: imagenet (shipped offline for tu-efficientnet_lite0 to _lite2), "
            "a local file, a hub name, or none."
        ),
    ] = "imagenet",
    norm: Annotated[
        Norm,
        choice_option(
            Norm, "--norm", help="Normalisation: frozen (pretrained BatchNorm kept), batch or group."
        ),
    ] = "frozen",
    crop_sampling: Annotated[
        CropSampling,
        choice_option(
            CropSampling,
            "--crop-sampling",
            help="Training crops: uniform, points (each around a click, classes equally) or mixed (half).",
        ),
    ] = "uniform",
    holdout: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Share of the points held out for the check.")
    ] = 0.2,
    block_size: Annotated[
        int,
        typer.Option(min=1, help="Hold-out blocks in pixels: no held-out point this near a training one."),
    ] = 32,
    schema: SchemaOption = None,
    points_crs: Annotated[
        str | None, typer.Option(help="CRS of points files that do not say (e.g. EPSG:4326, or 'pixel').")
    ] = None,
    skip_invalid: Annotated[
        bool,
        typer.Option("--skip-invalid", help="Drop points outside the images, of unknown class or repeated."),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the hold-out, the initialisation and the crops.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
) -> None:
    """Train on clicked points alone and map the images: class maps with names for GIS, model, report."""
    from pointseg.mapping import MapSettings, map_images
    from pointseg.schema import ClassSchema

    settings = MapSettings(
        class_field=class_field,
        schema=ClassSchema.load(schema) if schema is not None else None,
        points_crs=points_crs,
        skip_invalid=skip_invalid,
        epochs=epochs,
        device=device,
        encoder=encoder,
        weights=weights,
        norm=norm,
        crop_sampling=crop_sampling,
        holdout=holdout,
        block_size=block_size,
        polygons=polygons,
        min_area=min_area,
        seed=seed,
    )
    report = map_images(images, points, out, settings, progress=progress, announce=console.print)
    for line in report.lines():
        console.print(line, highlight=False, soft_wrap=True)


@app.command("evaluate")
def evaluate_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A checkpoint from `pointseg train`.")],
    data: Annotated[Path, typer.Option("--data", help="Dataset folder with dense masks.")],
    format: FormatOption,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON here.")] = None,
    select: Annotated[
        list[str] | None, typer.Option("--select", help="Only these ids/groups (wildcards; repeatable).")
    ] = None,
    split: Annotated[str | None, typer.Option(help="LandCover.ai: train | val | test list.")] = None,
    schema: SchemaOption = None,
    tile: TileOption = None,
    overlap: OverlapOption = None,
    tta: TtaOption = None,
    scales: ScalesOption = None,
    batch_size: Annotated[int, typer.Option(help="Tiles per forward pass.")] = 4,
    device: DeviceOption = "cpu",
    precision: PrecisionOption = "fp32",
) -> None:
    """Macro mIoU, per-class IoU, accuracy and confusion matrix on whole images' dense masks."""
    from pointseg.checkpoint import load_trained_model
    from pointseg.datasets import discover_dataset, select_refs
    from pointseg.evaluation import ScoredSample, image_summary, report_json, score_samples, total_report
    from pointseg.raster import check_output_file
    from pointseg.runs import write_json

    scale_factors = parse_scales(scales)
    if json_out is not None:
        check_output_file(json_out)
    trained = load_trained_model(checkpoint, device).with_tta(tta, scale_factors)
    discovery = discover_dataset(format, data, schema, split=split)
    refs = discovery.require_usable()
    if select:
        refs = select_refs(refs, select, "--select")
    per_image: list[dict[str, Any]] = []
    with track_items(console, "evaluating", len(refs)) as advance:

        def scored(sample: ScoredSample) -> None:
            per_image.append(image_summary(sample, discovery.schema))
            advance(sample.ref.id)

        report = total_report(
            score_samples(trained, refs, discovery.schema, tile, overlap, batch_size, device, precision),
            discovery.schema,
            on_sample=scored,
        )
    console.print(report.to_table(title=f"{checkpoint} on {len(refs)} image(s) of {data}"))
    if json_out is not None:
        evaluation = trained.config.eval
        write_json(
            json_out, report_json(report, refs, checkpoint, per_image, evaluation.tta, evaluation.scales)
        )
        console.print(f"report: {json_out}")


plot_app = typer.Typer(no_args_is_help=True, help="Figures (PNG).")
app.add_typer(plot_app, name="plot")


@plot_app.command("prediction")
def plot_prediction_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A checkpoint from `pointseg train`.")],
    data: Annotated[Path, typer.Option("--data", help="Dataset folder with dense masks.")],
    format: FormatOption,
    select: Annotated[list[str], typer.Option("--select", help="Ids/groups to plot (wildcards).")],
    out: Annotated[Path, typer.Option("--out", help="A .png (one image) or a folder for <id>.png figures.")],
    schema: SchemaOption = None,
    tile: TileOption = None,
    overlap: OverlapOption = None,
    device: DeviceOption = "cpu",
) -> None:
    """Image | ground truth | prediction of a model, one figure per selected image."""
    from pointseg.checkpoint import load_trained_model
    from pointseg.datasets import discover_dataset, select_refs
    from pointseg.evaluation import plot_model_predictions

    trained = load_trained_model(checkpoint, device)
    discovery = discover_dataset(format, data, schema)
    refs = select_refs(discovery.require_usable(), select, "--select")
    with track_items(console, "plotting", len(refs)) as advance:
        written = plot_model_predictions(
            trained,
            refs,
            discovery.schema,
            out,
            tile,
            overlap,
            device=device,
            on_image=lambda p: advance(p.name),
        )
    for path in written:
        console.print(f"figure: {path}", soft_wrap=True, highlight=False)


@plot_app.command("points")
def plot_points_command(
    image: Annotated[Path, typer.Option("--image", help="The image the points label.")],
    points: Annotated[Path, typer.Option("--points", help="Point label map .png/.tif (255 = unlabelled).")],
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")],
    format: Annotated[str | None, typer.Option("--format", "-f", help="This dataset's classes.")] = None,
    schema: SchemaOption = None,
) -> None:
    """Sparse point labels over the image, and the point label map, with per-class counts."""
    from pointseg.datasets import resolve_schema
    from pointseg.plots import plot_points_file

    console.print(
        f"figure: {plot_points_file(image, points, resolve_schema(format, schema), out)}", soft_wrap=True
    )


@plot_app.command("curves")
def plot_curves_command(
    run: Annotated[Path, typer.Argument(help="A run folder, or its metrics.csv.")],
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")],
) -> None:
    """Training loss and validation mIoU (and per-class IoU) of a training run."""
    from pointseg.plots import plot_training_curves

    plot_training_curves(run, out)
    console.print(f"figure: {out}", soft_wrap=True)


@plot_app.command("density")
def plot_density_command(
    results: Annotated[Path, typer.Argument(help="CSV: regime,labelled_fraction,miou_mean,miou_std,dense.")],
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")],
    title: Annotated[str | None, typer.Option(help="Figure title.")] = None,
) -> None:
    """Plot mIoU against the labelled-pixel fraction (log scale), dense masks as a reference line."""
    from pointseg.plots import plot_density_curve

    plot_density_curve(results, out, title)
    console.print(f"figure: {out}", soft_wrap=True)


@app.command("predict")
def predict_command(
    inputs: Annotated[list[Path], typer.Argument(help="Images, folders of images, or large GeoTIFFs.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="A checkpoint from `pointseg train`.")
    ] = None,
    onnx: Annotated[
        Path | None, typer.Option("--onnx", help="An ONNX model from `pointseg export onnx`.")
    ] = None,
    tile: TileOption = None,
    overlap: OverlapOption = None,
    tta: TtaOption = None,
    scales: ScalesOption = None,
    batch_size: Annotated[int, typer.Option(help="Tiles per forward pass.")] = 4,
    device: DeviceOption = "cpu",
    precision: PrecisionOption = "fp32",
    output_format: Annotated[
        OutputFormat,
        choice_option(OutputFormat, "--format", help="Class maps as GeoTIFF, colour PNG or both."),
    ] = "geotiff",
    probabilities: Annotated[
        bool,
        typer.Option("--probabilities", help="Also write <stem>_confidence.tif (max softmax probability)."),
    ] = False,
) -> None:
    """Class maps (COG with colour table, or colour PNG) for inputs of any size, georeferencing kept."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pointseg.prediction import predict_files

    model = load_inference_model(checkpoint, onnx, device, precision, tta, parse_scales(scales))
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tiles"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("", total=0)

        def start(path: Path, tiles: int) -> None:
            bar.update(task, description=path.name, total=tiles, completed=0)

        results = predict_files(
            model,
            inputs,
            out,
            tile,
            overlap,
            batch_size,
            device,
            output_format,
            probabilities,
            on_start=start,
            on_tiles=lambda n: bar.advance(task, n),
        )
    for result in results:
        written = ", ".join(str(path) for path in result.outputs)
        console.print(
            f"{result.input} ({result.width}x{result.height}, {result.tiles} tiles) -> {written}",
            soft_wrap=True,
            highlight=False,
        )


def load_inference_model(
    checkpoint: Path | None,
    onnx: Path | None,
    device: Device,
    precision: Precision,
    tta: TestTimeAugmentation | None = None,
    scales: tuple[float, ...] | None = None,
) -> InferenceModel:
    """The model behind ``--checkpoint`` (torch) or ``--onnx`` (ONNX Runtime); exactly one must be given.

    ``tta`` and ``scales``: the test-time augmentation and the sizes to predict with (None: the model's own).
    """
    from pointseg.export import load_onnx_model
    from pointseg.inference import torch_inference_model

    if (checkpoint is None) == (onnx is None):
        raise PointsegError("give exactly one of --checkpoint CKPT or --onnx MODEL.onnx")
    if onnx is not None:
        if precision != "fp32":
            raise PointsegError(
                "--precision bf16 applies to --checkpoint (torch); ONNX models run as exported"
            )
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else None
        return load_onnx_model(onnx, providers, tta, scales)
    from pointseg.checkpoint import load_trained_model

    assert checkpoint is not None
    trained = load_trained_model(checkpoint, device).with_tta(tta, scales)
    return torch_inference_model(trained, device, precision)


@export_app.command("onnx")
def export_onnx_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A checkpoint from `pointseg train`.")],
    out: Annotated[Path, typer.Option("--out", help="ONNX file to write.")],
) -> None:
    """Export to ONNX with dynamic batch, height and width (classes and band statistics in its metadata)."""
    from pointseg.checkpoint import load_trained_model
    from pointseg.export import export_onnx

    console.print(f"ONNX model: {export_onnx(load_trained_model(checkpoint), out)}", soft_wrap=True)


@app.command("serve")
def serve_command(
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="A checkpoint from `pointseg train`.")
    ] = None,
    workspace: Annotated[
        Path | None,
        typer.Option("--workspace", help="A folder of images to label, train on and map at /label."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 opens it to others.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 5000,
    workers: Annotated[int, typer.Option(help="Worker processes, each with its own copy of the model.")] = 1,
    device: DeviceOption = "cpu",
    precision: PrecisionOption = "fp32",
    max_upload_mb: Annotated[
        int, typer.Option(help="Largest upload, MiB (413, refused while read).")
    ] = DEFAULT_MAX_UPLOAD_MB,
    max_pixels: Annotated[
        int, typer.Option(help="Largest width x height (413): 5000 x 5000.")
    ] = DEFAULT_MAX_PIXELS,
    max_queue: Annotated[int, typer.Option(help="Images per worker running or waiting (503 beyond).")] = 4,
    batch_size: Annotated[int, typer.Option(help="Tiles per forward pass.")] = 4,
    request_timeout: Annotated[
        float, typer.Option(help="Seconds per request, queue wait included (504 after; the job stops).")
    ] = DEFAULT_REQUEST_TIMEOUT_S,
) -> None:
    """Serve a model (the page at /, POST /predict, see /docs) and/or a labelling workspace (/label)."""
    from pointseg.serving.server import serve
    from pointseg.serving.settings import ServeSettings

    settings = ServeSettings.checked(
        checkpoint=checkpoint,
        workspace=workspace,
        device=device,
        precision=precision,
        max_upload_bytes=max_upload_mb * 2**20,
        max_pixels=max_pixels,
        max_queue=max_queue,
        batch_size=batch_size,
        request_timeout=request_timeout,
    )
    serve(settings, host=host, port=port, workers=workers)


experiment_app = typer.Typer(no_args_is_help=True, help="Reproducible experiments over label regimes.")
app.add_typer(experiment_app, name="experiment")


class ListOptionsCommand(typer.core.TyperCommand):
    """A command whose ``--regimes`` and ``--seeds`` take several values after one flag: ``--seeds 0 1 2``."""

    list_options = ("--regimes", "--seeds")

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        """Repeat a list option's flag before each of its values, then parse as usual."""
        expanded: list[str] = []
        option = None
        for arg in args:
            if arg.startswith("-"):
                option = arg if arg in self.list_options else None
            elif option is not None and expanded[-1] != option:
                expanded.append(option)
            expanded.append(arg)
        return super().parse_args(ctx, expanded)


SweepDeviceOption = Annotated[
    Device | None, choice_option(Device, "--device", help="Where to evaluate (default: as trained).")
]
SweepProgressOption = Annotated[
    bool, typer.Option(help="Show progress: of training, and of the test evaluation of each run.")
]


def sweep_output(out: Path, report: str) -> None:
    """Print a sweep's Markdown report and where its results are."""
    from rich.markdown import Markdown

    console.print(Markdown((out / report).read_text()))
    console.print(f"results: {out}", soft_wrap=True)


@experiment_app.command("density", cls=ListOptionsCommand)
def experiment_density_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="Base YAML config; may hold 'experiment:'.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for runs/, results.md/.csv and figures.")],
    regimes: Annotated[
        list[str] | None,
        typer.Option(
            "--regimes",
            help="density:F | per-class:N | per-region:MIN_AREA | points:DIR | dense (default: density:0.01 "
            "density:0.05 density:0.1 per-class:10 per-class:50 per-region:100 dense).",
        ),
    ] = None,
    seeds: Annotated[list[int] | None, typer.Option("--seeds", help="Repeat each regime per seed.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a setting: key=value.")] = None,
    device: SweepDeviceOption = None,
    progress: SweepProgressOption = True,
) -> None:
    """Test mIoU against the labelled-pixel fraction: one run per label regime and seed; resumable."""
    from pointseg.experiments import density_sweep

    density_sweep(
        config,
        out,
        regimes,
        seeds,
        set_ or [],
        progress=progress,
        device=device,
        announce=console.rule,
        track=partial(track_items, console) if progress else no_progress,
    )
    sweep_output(out, "results.md")


@experiment_app.command("ablation", cls=ListOptionsCommand)
def experiment_ablation_command(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="YAML config with an 'experiment: ablation:' section.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for one sweep folder per step and ablation.md.")],
    seeds: Annotated[list[int] | None, typer.Option("--seeds", help="Repeat each step per seed.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting of every step: key=value.")
    ] = None,
    device: SweepDeviceOption = None,
    progress: SweepProgressOption = True,
) -> None:
    """Test mIoU of one label regime as settings are added step by step, beside the forest; resumable."""
    from pointseg.ablation import ablation

    ablation(
        config,
        out,
        seeds,
        set_ or [],
        progress=progress,
        device=device,
        announce=console.rule,
        track=partial(track_items, console) if progress else no_progress,
    )
    sweep_output(out, "ablation.md")


def main() -> None:
    """Entry point of the ``pointseg`` console script."""
    try:
        # Without standalone mode, click returns a command's `raise typer.Exit(n)` as n instead of exiting.
        status = app(standalone_mode=False)
    except (PointsegError, OSError, UnicodeDecodeError, ValidationError) as error:
        # escaped: a message may hold brackets (a YAML list, a --set value) that rich would take as markup
        message = escape(error_line(error))
        error_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except click_exceptions() as error:
        error.show()  # type: ignore[attr-defined]
        sys.exit(error.exit_code)  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        error_console.print("interrupted")
        sys.exit(130)
    if type(status) is int and status != 0:
        sys.exit(status)


def click_exceptions() -> tuple[type[Exception], ...]:
    """Usage errors from click (bad options), shown as click shows them.

    Recent typer releases vendor click: their usage errors derive from ``typer.TyperException``, not
    from ``click.ClickException``.
    """
    import click

    vendored = getattr(typer, "TyperException", None)
    return (click.ClickException,) if vendored is None else (click.ClickException, vendored)


def error_line(error: Exception) -> str:
    """The message of an input problem that reached the command line, for one ``error:`` line.

    A ``PointsegError`` already names the file or value. The others are problems that no code
    turned into one: a file that cannot be read or written (``OSError``, with its path), a text file
    that is not UTF-8, or settings that fail validation.
    """
    if isinstance(error, OSError) and error.filename is not None:
        reason = error.strerror or type(error).__name__
        return f"{error.filename}: {reason}"
    if isinstance(error, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({error.reason} at byte {error.start}); expected UTF-8"
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc'])) or '(top level)'}: {item['msg']}" for item in error.errors()
        )
        return f"invalid {error.title}: {problems}"
    return unwrapped_worker_message(str(error))


def unwrapped_worker_message(message: str) -> str:
    """The original message of an error re-raised from a DataLoader worker, or ``message`` itself.

    PyTorch re-raises an error from a worker process (a mask with a colour outside the schema,
    found while training) with the worker's whole traceback as its message: ``Caught PointsegError
    in DataLoader worker process 0.`` then ``Original Traceback (most recent call last):``, the
    frames (indented), and last the original ``module.Type: message``. Only that message is kept
    (without the module and type for a ``PointsegError``, which is what the user reads elsewhere).
    """
    lines = message.splitlines()
    if len(lines) < 3 or not lines[0].startswith("Caught ") or not lines[1].startswith("Original Traceback"):
        return message
    frames = [i for i, line in enumerate(lines) if line.startswith(" ")]
    original = "\n".join(lines[frames[-1] + 1 :] if frames else lines[2:]).strip()
    kind, separator, text = original.partition(": ")
    if not separator:
        return original or message
    return text if kind.rsplit(".", 1)[-1] == "PointsegError" else original
