import io
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from fake_data import block_labels, write_deepglobe, write_raster
from pointseg import plots
from pointseg.config import TrainConfig
from pointseg.datasets import deepglobe
from pointseg.errors import PointsegError
from pointseg.models import build_model
from pointseg.schema import IGNORE_INDEX, ClassSchema

SCHEMA = deepglobe.SCHEMA
TRAIN_METRICS = """\
epoch,lr-Adam,step,train_loss_epoch,train_loss_step,val_accuracy,val_iou_forest,val_iou_water,val_miou
,0.001,0,,,,,,
0,,0,,1.83,,,,
0,,1,,1.82,,,,
0,,1,,,0.23,0.02,0.13,0.06
0,,1,1.827,,,,,
,0.0009,2,,,,,,
1,,2,,1.74,,,,
1,,3,,1.65,,,,
1,,3,,,0.35,0.36,0.49,0.20
1,,3,1.70,,,,,
"""
DENSITY = """regime,labelled_fraction,miou_mean,miou_std,dense
0.01%,0.0001,0.36,0.03,false
0.1%,0.001,0.45,,false
1%,0.01,0.52,0,false
dense,1.0,0.58,0.01,true
"""


@pytest.fixture
def cli(cli):
    """The shared ``cli`` fixture, with rich's line wrapping undone."""

    def run(*args: object) -> tuple[int, str, str]:
        code, out, err = cli(*args)
        return code, " ".join(out.split()), " ".join(err.split())

    return run


def scene(
    height: int = 64, width: int = 80, bands: int = 3, dtype: str = "uint8"
) -> tuple[np.ndarray, np.ndarray]:
    """A raw ``(bands, H, W)`` image whose pixels follow block labels, and the labels (one ignored corner)."""
    labels = block_labels(height, width, SCHEMA.num_classes, seed=0)
    labels[:6, :6] = IGNORE_INDEX
    rng = np.random.default_rng(0)
    base = np.array(SCHEMA.colors, dtype=np.float64)[np.minimum(labels, SCHEMA.num_classes - 1)]
    image = np.moveaxis(base, -1, 0)[np.arange(bands) % 3] * 40 + rng.normal(0, 50, (bands, height, width))
    return np.clip(image, 0, np.iinfo(dtype).max).astype(dtype), labels


def png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def panel_pixels(fig: Figure, pixels: np.ndarray, index: int) -> np.ndarray:
    """The ``(h, w, 3)`` pixels of axes ``index`` in the saved PNG (figure dpi = save dpi)."""
    box = fig.axes[index].get_window_extent()
    height = pixels.shape[0]
    top, bottom = round(height - box.y1) + 2, round(height - box.y0) - 2
    return pixels[top:bottom, round(box.x0) + 2 : round(box.x1) - 2]


def colors_in(pixels: np.ndarray) -> set[tuple[int, int, int]]:
    return {tuple(int(c) for c in color) for color in np.unique(pixels.reshape(-1, 3), axis=0)}


def legend_texts(fig: Figure) -> list[str]:
    return [text.get_text() for legend in fig.legends for text in legend.get_texts()]


# ---------------------------------------------------------------- display helpers


def test_display_rgb_stretches_each_band_between_percentiles() -> None:
    image = np.stack([np.arange(100, dtype=np.uint16).reshape(10, 10) * 100 + 1000 * b for b in range(4)])
    shown = plots.display_rgb(image)
    assert shown.shape == (10, 10, 3) and shown.dtype == np.uint8
    assert shown.min() == 0 and shown.max() == 255  # 2nd..98th percentile fills the range
    assert np.array_equal(shown[..., 0], shown[..., 2])  # every band stretched on its own


def test_display_rgb_shows_one_band_as_grey_and_survives_constant_and_nan_bands() -> None:
    grey = plots.display_rgb(np.random.default_rng(0).normal(size=(1, 8, 8)).astype(np.float32))
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    odd = np.ones((3, 8, 8), dtype=np.float32)
    odd[1, 0, 0] = np.nan
    assert plots.display_rgb(odd).max() == 0


def test_display_stride_bounds_the_longer_side() -> None:
    assert plots.display_stride(96, 96) == 1
    assert plots.display_stride(2448, 2448) == 4
    assert plots.display_stride(100, 2448, max_side=800) == 4


def test_point_canvas_keeps_every_point_when_subsampling() -> None:
    rows, cols = np.array([0, 1, 401, 799]), np.array([3, 799, 2, 402])
    labels = np.array([0, 1, 2, 3], dtype=np.uint8)
    canvas, grow = plots.point_canvas(rows, cols, labels, (800, 800), stride=4)
    assert canvas.shape == (200, 200) and grow == 1
    assert set(np.unique(canvas)) == {0, 1, 2, 3, IGNORE_INDEX}
    assert np.count_nonzero(canvas != IGNORE_INDEX) == 4


def test_ignored_color_avoids_a_black_class() -> None:
    assert plots.ignored_color(SCHEMA) == (0, 0, 0)
    black = ClassSchema("dark", ("shadow", "road"), ((0, 0, 0), (96, 96, 96)))
    assert plots.ignored_color(black) == (255, 0, 128)


# ---------------------------------------------------------------- prediction / qualitative


def test_plot_prediction_draws_class_colours_and_a_legend(tmp_path) -> None:
    image, truth = scene()
    prediction = np.where(truth == IGNORE_INDEX, 0, truth).astype(np.uint8)
    out = tmp_path / "fig.png"
    fig = plots.plot_prediction(image, truth, prediction, SCHEMA, out, title="sample 100")
    pixels = png(out)
    assert len(colors_in(pixels)) > 50  # a real picture, not a blank canvas
    truth_panel = colors_in(panel_pixels(fig, pixels, 1))
    assert {SCHEMA.colors[c] for c in np.unique(prediction)} <= truth_panel
    assert (0, 0, 0) in truth_panel  # the ignored corner
    assert legend_texts(fig) == [*SCHEMA.classes, "ignored"]
    assert [ax.get_title() for ax in fig.axes] == ["image", "ground truth", "prediction"]
    assert fig.get_suptitle() == "sample 100"


def test_plot_qualitative_has_one_panel_per_regime_and_one_legend(tmp_path) -> None:
    image, truth = scene(bands=4, dtype="uint16")
    clean = np.where(truth == IGNORE_INDEX, 1, truth).astype(np.uint8)
    regimes = {"0.01%": np.zeros_like(clean), "0.1%": clean[::-1].copy(), "1%": clean}
    fig = plots.plot_qualitative(image, truth, regimes, SCHEMA, tmp_path / "q.png")
    assert [ax.get_title() for ax in fig.axes] == ["image", "ground truth", "0.01%", "0.1%", "1%"]
    assert len(fig.legends) == 1 and "ignored" in legend_texts(fig)
    assert colors_in(panel_pixels(fig, png(tmp_path / "q.png"), 2)) >= {SCHEMA.colors[0]}


def test_plot_prediction_without_ignored_pixels_has_no_ignored_entry(tmp_path) -> None:
    image, truth = scene()
    truth[truth == IGNORE_INDEX] = 2
    fig = plots.plot_prediction(image, truth, truth, SCHEMA, tmp_path / "fig.png")
    assert legend_texts(fig) == list(SCHEMA.classes)


def test_plot_prediction_of_a_2448_scene_is_small(tmp_path) -> None:
    """Its speed is measured by ``python -m benchmarks.plot_speed`` (a ratio, not a wall-clock limit)."""
    truth = block_labels(2448, 2448, SCHEMA.num_classes, seed=0, block=100)
    noise = np.random.default_rng(0).integers(0, 60, (3, 612, 612), dtype=np.uint8)
    image = np.moveaxis(np.array(SCHEMA.colors, dtype=np.uint8)[truth], -1, 0) // 2 + np.tile(
        noise, (1, 4, 4)
    )
    plots.plot_prediction(image, truth, truth, SCHEMA, tmp_path / "big.png")
    assert 0 < (tmp_path / "big.png").stat().st_size < 3_000_000


@pytest.mark.parametrize(
    ("truth_shape", "bad_label", "message"),
    [
        ((64, 81), None, r"ground truth is 64x81 \(HxW\) pixels, but the image is 64x80"),
        (
            (64, 80),
            9,
            r"prediction: label\(s\) 9 not in schema 'deepglobe' \(6 classes: 0..5, 255 = ignored\)",
        ),
    ],
)
def test_plot_prediction_rejects_bad_label_maps(tmp_path, truth_shape, bad_label, message) -> None:
    image, _ = scene()
    truth = np.zeros(truth_shape, dtype=np.uint8)
    prediction = np.zeros((64, 80), dtype=np.uint8)
    if bad_label is not None:
        prediction[5, 5] = bad_label
    with pytest.raises(PointsegError, match=message):
        plots.plot_prediction(image, truth, prediction, SCHEMA, tmp_path / "fig.png")
    assert not list(tmp_path.iterdir())


def test_figures_must_be_png(tmp_path) -> None:
    image, truth = scene()
    with pytest.raises(PointsegError, match=r"fig.jpg: figures are written as PNG"):
        plots.plot_prediction(image, truth, truth, SCHEMA, tmp_path / "fig.jpg")


def test_a_failed_plot_leaves_an_existing_figure_untouched(tmp_path, monkeypatch) -> None:
    image, truth = scene()
    out = tmp_path / "fig.png"
    out.write_bytes(b"previous figure")

    real_save = Image.Image.save

    def broken_save(self: Image.Image, target: Path | io.BytesIO, *args: object, **kwargs: object) -> None:
        if isinstance(target, io.BytesIO):  # matplotlib rendering in memory
            return real_save(self, target, *args, **kwargs)  # type: ignore[arg-type]
        Path(target).write_bytes(b"half a PNG")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        plots.plot_prediction(image, truth, truth, SCHEMA, out)
    assert out.read_bytes() == b"previous figure"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


# ---------------------------------------------------------------- points


def test_plot_points_scatters_every_point_with_counts_in_the_legend(tmp_path) -> None:
    image, truth = scene()
    points = np.full(truth.shape, IGNORE_INDEX, dtype=np.uint8)
    points[10, 10], points[20, 30], points[40, 70] = 0, 4, 4
    fig = plots.plot_points(image, points, SCHEMA, tmp_path / "p.png", title="100")
    scatter = fig.axes[0].collections[0]
    assert np.array_equal(scatter.get_offsets(), [[10.5, 10.5], [30.5, 20.5], [70.5, 40.5]])
    texts = legend_texts(fig)
    assert texts[0] == "urban_land (1)" and texts[4] == "water (2)" and texts[-1] == "unlabelled"
    assert fig.get_suptitle().startswith("100: 3 labelled pixels")
    map_panel = colors_in(panel_pixels(fig, png(tmp_path / "p.png"), 1))
    assert {SCHEMA.colors[0], SCHEMA.colors[4], (0, 0, 0)} <= map_panel


def test_plot_points_subsamples_many_points_and_says_so(tmp_path) -> None:
    image, truth = scene(200, 200)
    fig = plots.plot_points(image, np.where(truth == IGNORE_INDEX, 1, truth), SCHEMA, tmp_path / "p.png")
    assert len(fig.axes[0].collections[0].get_offsets()) == plots.MAX_SCATTER_POINTS
    assert "showing a random 20,000 of 40,000 points" in fig.get_suptitle()


def test_plot_points_file_checks_the_map_against_the_image(tmp_path) -> None:
    image, truth = scene()
    write_raster(tmp_path / "image.tif", image)
    write_raster(tmp_path / "small.png", truth[None, :60])
    with pytest.raises(
        PointsegError, match=r"small.png: point map is 60x80 \(HxW\) pixels, but image .*image.tif is 64x80"
    ):
        plots.plot_points_file(tmp_path / "image.tif", tmp_path / "small.png", SCHEMA, tmp_path / "p.png")
    with pytest.raises(PointsegError, match=r"missing.png: no such file"):
        plots.plot_points_file(tmp_path / "image.tif", tmp_path / "missing.png", SCHEMA, tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


# ---------------------------------------------------------------- training curves


def test_plot_training_curves_reads_a_sparse_lightning_log(tmp_path) -> None:
    (tmp_path / "metrics.csv").write_text(TRAIN_METRICS)
    fig = plots.plot_training_curves(tmp_path, tmp_path / "curves.png")  # the run folder
    loss_ax, val_ax = fig.axes
    step, epoch_mean = loss_ax.lines
    assert np.array_equal(step.get_xdata(), [0, 1, 2, 3]) and np.array_equal(
        epoch_mean.get_ydata(), [1.827, 1.70]
    )
    assert [line.get_label() for line in val_ax.lines] == ["forest", "water", "mIoU"]
    assert np.array_equal(val_ax.lines[-1].get_ydata(), [0.06, 0.20])
    assert len(colors_in(png(tmp_path / "curves.png"))) > 20


def test_plot_training_curves_without_validation_still_shows_the_loss(tmp_path) -> None:
    (tmp_path / "metrics.csv").write_text("epoch,step,train_loss_step\n0,0,2.0\n0,1,1.5\n")
    fig = plots.plot_training_curves(tmp_path / "metrics.csv", tmp_path / "curves.png")
    assert len(fig.axes[0].lines[0].get_xdata()) == 2
    assert "no val_miou logged yet" in [text.get_text() for text in fig.axes[1].texts]


def test_plot_training_curves_names_the_file_and_the_missing_columns(tmp_path) -> None:
    (tmp_path / "metrics.csv").write_text("epoch,step,lr-Adam\n0,0,0.001\n")
    with pytest.raises(
        PointsegError, match=r"metrics.csv: no values in a 'train_loss_step', 'train_loss' or 'val_miou'"
    ):
        plots.plot_training_curves(tmp_path, tmp_path / "curves.png")
    with pytest.raises(PointsegError, match=r"nowhere/metrics.csv: no such file"):
        plots.plot_training_curves(tmp_path / "nowhere" / "metrics.csv", tmp_path / "curves.png")
    (tmp_path / "metrics.csv").write_text("epoch,step,val_miou\n0,0,high\n")
    with pytest.raises(PointsegError, match=r"metrics.csv: line 2: val_miou: 'high' is not a number"):
        plots.plot_training_curves(tmp_path, tmp_path / "curves.png")
    assert not (tmp_path / "curves.png").exists()


# ---------------------------------------------------------------- density curve


def test_plot_density_curve_draws_regimes_and_a_dense_line(tmp_path) -> None:
    (tmp_path / "results.csv").write_text(DENSITY)
    fig = plots.plot_density_curve(tmp_path / "results.csv", tmp_path / "density.png", title="DeepGlobe")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert ax.xaxis.get_major_formatter()(0.01, 0) == "1%"
    points = ax.containers[0].lines[0]
    assert np.array_equal(points.get_xdata(), [0.0001, 0.001, 0.01])
    dense = [line for line in ax.lines if line.get_label().startswith("dense masks")]
    assert len(dense) == 1 and np.array_equal(dense[0].get_ydata(), [0.58, 0.58])  # a horizontal line
    assert {"0.01%", "0.1%", "1%", "dense masks"} <= {text.get_text() for text in ax.texts}
    assert len(colors_in(png(tmp_path / "density.png"))) > 20


def test_plot_density_curve_draws_the_random_forest_as_its_own_line(tmp_path) -> None:
    (tmp_path / "results.csv").write_text(
        "regime,labelled_fraction,miou_mean,miou_std,dense,method\n"
        "1%,0.01,0.40,,false,network\n10%,0.1,0.50,,false,network\n"
        "forest (1%),0.01,0.30,,false,forest\nforest (10%),0.1,0.35,,false,forest\ndense,,0.6,,true,network\n"
    )
    ax = plots.plot_density_curve(tmp_path / "results.csv", tmp_path / "density.png").axes[0]
    network, forest = (container.lines[0] for container in ax.containers)
    assert np.array_equal(network.get_ydata(), [0.40, 0.50]) and np.array_equal(
        forest.get_ydata(), [0.30, 0.35]
    )
    assert network.get_color() != forest.get_color() and network.get_marker() != forest.get_marker()
    assert "pixel random forest, same points" in [t.get_text() for t in ax.get_legend().get_texts()]
    (tmp_path / "results.csv").write_text(
        "regime,labelled_fraction,miou_mean,dense,method\n1%,0.01,0.4,false,svm\n"
    )
    with pytest.raises(PointsegError, match=r"line 2: method 'svm'; expected one of network, forest"):
        plots.plot_density_curve(tmp_path / "results.csv", tmp_path / "density.png")


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        (
            "regime,labelled_fraction,miou_mean\n1%,0.01,0.5\n",
            r"results.csv: missing column\(s\) dense; expected columns",
        ),
        (
            "regime,labelled_fraction,miou_mean,miou_std,dense\n1%,0.01,52,,false\n",
            r"results.csv: line 2: miou_mean: 52; expected a fraction in \[0, 1\]",
        ),
        (
            "regime,labelled_fraction,miou_mean,miou_std,dense\n1%,0,0.5,,false\n",
            r"results.csv: line 2: labelled_fraction 0.0; expected a fraction above 0",
        ),
        (
            "regime,labelled_fraction,miou_mean,miou_std,dense\n1%,0.01,0.5,,maybe\n",
            r"results.csv: line 2: dense 'maybe'; expected true or false",
        ),
        ("regime,labelled_fraction,miou_mean,miou_std,dense\n", r"results.csv: no rows"),
    ],
)
def test_plot_density_curve_rejects_bad_results(tmp_path, csv_text, message) -> None:
    (tmp_path / "results.csv").write_text(csv_text)
    with pytest.raises(PointsegError, match=message):
        plots.plot_density_curve(tmp_path / "results.csv", tmp_path / "density.png")


# ---------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A pointseg checkpoint of an untrained small network (what inference needs, without training)."""
    path = tmp_path_factory.mktemp("model") / "model.ckpt"
    config = TrainConfig.model_validate(
        {"data": {"format": "deepglobe", "root": "."}, "model": {"encoder": "resnet18"}, "eval": {"tile": 64}}
    )
    torch.manual_seed(0)
    model = build_model(SCHEMA.num_classes, 3, config.model.arch, config.model.encoder, config.model.norm)
    hparams = {
        "config": config.model_dump(mode="json", by_alias=True),
        "schema": SCHEMA.to_dict(),
        "band_stats": {"mean": [120.0] * 3, "std": [60.0] * 3},
    }
    torch.save(
        {"hyper_parameters": hparams, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}},
        path,
    )
    return path


def test_cli_plot_prediction_writes_one_figure_per_image(cli, tmp_path, checkpoint) -> None:
    data = write_deepglobe(tmp_path / "data", count=2, size=64)
    code, out, err = cli(
        "plot",
        "prediction",
        "--checkpoint",
        checkpoint,
        "--data",
        data,
        "-f",
        "deepglobe",
        "--select",
        "10*",
        "--out",
        tmp_path / "figures",
    )
    assert (code, err) == (0, "")
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["100_sat.png", "101_sat.png"]
    assert "figures/100_sat.png" in out
    assert "plotting: 1/2 images (100_sat.png)" in out and "plotting: 2/2 images (101_sat.png)" in out
    code, _, err = cli(
        "plot",
        "prediction",
        "--checkpoint",
        checkpoint,
        "--data",
        data,
        "-f",
        "deepglobe",
        "--select",
        "10*",
        "--out",
        tmp_path / "one.png",
    )
    assert code == 1 and "2 images selected; give a folder" in err


def test_cli_plot_points_curves_and_density(cli, tmp_path) -> None:
    image, truth = scene()
    write_raster(tmp_path / "image.tif", image)
    points = np.full(truth.shape, IGNORE_INDEX, dtype=np.uint8)
    points[::9, ::7] = 2
    write_raster(tmp_path / "points.png", points[None])
    (tmp_path / "metrics.csv").write_text(TRAIN_METRICS)
    (tmp_path / "results.csv").write_text(DENSITY)
    for args, target in [
        (
            (
                "points",
                "--image",
                tmp_path / "image.tif",
                "--points",
                tmp_path / "points.png",
                "-f",
                "deepglobe",
            ),
            "p.png",
        ),
        (("curves", tmp_path), "c.png"),
        (("density", tmp_path / "results.csv", "--title", "DeepGlobe"), "d.png"),
    ]:
        code, out, err = cli("plot", *args, "--out", tmp_path / target)
        assert (code, err) == (0, ""), args
        assert f"figure: {tmp_path / target}" in out and png(tmp_path / target).size > 0


def test_cli_plot_reports_bad_inputs_and_exits_1(cli, tmp_path) -> None:
    (tmp_path / "metrics.csv").write_text("epoch,step,lr-Adam\n0,0,0.001\n")
    code, out, err = cli("plot", "curves", tmp_path / "metrics.csv", "--out", tmp_path / "c.png")
    assert code == 1 and out == ""
    assert (
        f"error: {tmp_path / 'metrics.csv'}: no values in a 'train_loss_step', 'train_loss' or 'val_miou'"
        in err
    )
    code, _, err = cli(
        "plot",
        "points",
        "--image",
        tmp_path / "i.tif",
        "--points",
        tmp_path / "p.png",
        "--out",
        tmp_path / "p.png",
    )
    assert code == 1 and "give --schema FILE" in err
    assert not (tmp_path / "c.png").exists()


def test_cli_plot_prediction_into_a_file_as_folder_is_one_error_line(cli, tmp_path, checkpoint) -> None:
    data = write_deepglobe(tmp_path / "data", count=1, size=64)
    (tmp_path / "taken").write_text("a file, not a folder")
    code, _, err = cli(
        "plot", "prediction", "--checkpoint", checkpoint, "--data", data, "-f", "deepglobe",
        "--select", "100", "--out", tmp_path / "taken" / "figures",
    )  # fmt: skip
    assert code == 1
    assert err.startswith(f"error: {tmp_path / 'taken'}") and "Traceback" not in err
