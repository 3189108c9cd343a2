import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from fake_data import write_deepglobe, write_raster
from pointseg.checkpoint import TrainedModel
from pointseg.config import parse_config
from pointseg.datasets import discover_dataset
from pointseg.evaluation import image_summary, score_samples, total_report
from pointseg.normalization import BandStats
from pointseg.schema import ClassSchema

SCHEMA = ClassSchema(
    name="hand",
    classes=("a", "b", "c", "d"),
    colors=((255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)),
    mask_encoding="index",
    mask_values=(1, 2, 3, 4),
    ignore_values=(0,),
)
# Ground truth (0 = ignored) and prediction, as class letters.
TRUTH = ["aabb", "aabb", "cc..", "ccbb"]
PREDICTION = ["abbb", "aabb", "caba", "ccbb"]
# By hand, over the 14 non-ignored pixels (the two ignored ones are left out whatever is predicted):
#   a: TP 3 ((0,0),(1,0),(1,1)), FP 1 ((2,1) is c), FN 1 ((0,1) predicted b)  -> IoU 3/5 = 0.6
#   b: TP 6, FP 1 ((0,1)), FN 0                                                 -> IoU 6/7
#   c: TP 3, FP 0, FN 1 ((2,1) predicted a)                                     -> IoU 3/4 = 0.75
#   d: in neither truth nor prediction                                          -> absent, not 0 or 1
#   mIoU (macro over the 3 present classes) = (0.6 + 6/7 + 0.75) / 3 = 0.7357142857
#   pixel accuracy = 12 / 14;  a micro (pooled) IoU would be 12 / (12 + 2 + 2) = 0.75, a different number.
EXPECTED_MIOU = (0.6 + 6 / 7 + 0.75) / 3


def letters_to_labels(rows: list[str]) -> np.ndarray:
    return np.array([[".abcd".index(ch) for ch in row] for row in rows], dtype=np.uint8)


def identity_model(tmp_path: Path) -> TrainedModel:
    config = parse_config(
        {
            "data": {"format": "folder", "root": str(tmp_path), "val": ["x"]},
            "eval": {"tile": 32, "overlap": 0.25},
        },
        "test",
    )
    return TrainedModel(
        model=nn.Identity(),
        schema=SCHEMA,
        band_stats=BandStats((0.0,) * 4, (1.0,) * 4),
        config=config,
        path=tmp_path / "identity.ckpt",
        val_miou=None,
        epoch=None,
    )


def test_evaluate_matches_the_hand_worked_miou_with_an_absent_class(tmp_path: Path) -> None:
    prediction = letters_to_labels(PREDICTION)  # 1..4
    one_hot = np.stack([(prediction == k + 1) for k in range(4)]).astype(
        np.float32
    )  # the identity model's logits
    write_raster(tmp_path / "images" / "scene.tif", one_hot)
    write_raster(tmp_path / "masks" / "scene.tif", letters_to_labels(TRUTH))
    refs = discover_dataset("folder", tmp_path, SCHEMA).require_usable()

    report = total_report(score_samples(identity_model(tmp_path), refs, SCHEMA), SCHEMA)

    assert report.per_class_iou["a"] == pytest.approx(0.6)
    assert report.per_class_iou["b"] == pytest.approx(6 / 7)
    assert report.per_class_iou["c"] == pytest.approx(0.75)
    assert report.per_class_iou["d"] is None
    assert report.absent_classes == ["d"]
    assert report.miou == pytest.approx(EXPECTED_MIOU)
    assert report.miou != pytest.approx(0.75)  # not the micro average
    assert report.accuracy == pytest.approx(12 / 14)
    assert np.asarray(report.confusion_matrix).sum() == 14


def test_evaluate_scores_only_the_finite_pixels_of_a_float_image(tmp_path: Path) -> None:
    # The hand example, with a NaN at (0, 1): the one pixel of "a" predicted "b" is not scored.
    prediction = letters_to_labels(PREDICTION)
    one_hot = np.stack([(prediction == k + 1) for k in range(4)]).astype(np.float32)
    one_hot[2, 0, 1] = np.nan
    write_raster(tmp_path / "images" / "scene.tif", one_hot)
    write_raster(tmp_path / "masks" / "scene.tif", letters_to_labels(TRUTH))
    refs = discover_dataset("folder", tmp_path, SCHEMA).require_usable()

    [sample] = score_samples(identity_model(tmp_path), refs, SCHEMA)
    report = total_report(score_samples(identity_model(tmp_path), refs, SCHEMA), SCHEMA)

    assert sample.prediction[0, 1] == 255
    assert report.confusion_matrix == sample.confusion.tolist()
    assert np.asarray(report.confusion_matrix).sum() == 13 and report.accuracy == pytest.approx(12 / 13)
    assert report.per_class_iou["a"] == pytest.approx(3 / 4)  # TP 3, FP 1 ((2,1)), FN 0
    assert report.per_class_iou["b"] == pytest.approx(1.0)


def test_evaluate_refuses_data_with_other_classes(tmp_path: Path) -> None:
    other = ClassSchema(
        name="other", classes=("x", "y"), colors=((0, 0, 0), (1, 1, 1)), mask_encoding="index"
    )
    with pytest.raises(Exception, match="differ from the model"):
        total_report(score_samples(identity_model(tmp_path), [], other), other)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real (tiny) checkpoint from the small config, for the command-line tests."""
    from pointseg.config import load_config
    from pointseg.training import train

    root = tmp_path_factory.mktemp("evaluate")
    data = write_deepglobe(root / "data", count=3, size=64)
    config = load_config(
        Path(__file__).resolve().parents[1] / "configs" / "cpu_small.yaml",
        [
            f"data.root={data}",
            "data.val=['102']",
            "data.test=[]",
            "data.crop_size=64",
            "data.num_workers=0",
            "data.crops_per_image=2",
            "eval.tile=64",
            "trainer.max_epochs=1",
            f"output_dir={root}",
            "run_name=run",
        ],
    )
    return data, train(config, progress=False) / "checkpoints" / "best.ckpt"


@pytest.mark.integration
def test_evaluate_command_writes_the_json_report(trained_run, tmp_path, cli) -> None:
    data, checkpoint = trained_run
    out = tmp_path / "report.json"
    code, stdout, _ = cli(
        "evaluate",
        "--checkpoint",
        checkpoint,
        "--data",
        data,
        "-f",
        "deepglobe",
        "--select",
        "102",
        "--json",
        out,
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report) >= {"miou", "per_class_iou", "accuracy", "confusion_matrix", "absent_classes"}
    assert report["images"] == ["102_sat"]
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (6, 6)
    assert matrix.sum() == 64 * 64 - 16  # every pixel but the ignored 4x4 'unknown' corner
    [image] = report["per_image"]
    assert image["id"] == "102_sat" and image["miou"] == pytest.approx(report["miou"])
    assert image["predicted_share"] == pytest.approx(
        dict(zip(report["per_class_iou"], matrix.sum(0) / matrix.sum(), strict=True)), abs=1e-4
    )
    assert "mIoU" in stdout
    assert report["tta"] == "none"  # the model's eval.tta
    averaged = tmp_path / "d4.json"
    arguments = ("evaluate", "--checkpoint", checkpoint, "--data", data, "-f", "deepglobe", "--select", "102")
    assert cli(*arguments, "--tta", "d4", "--json", averaged)[0] == 0
    d4 = json.loads(averaged.read_text())
    assert d4["tta"] == "d4" and np.array(d4["confusion_matrix"]).sum() == matrix.sum()
    assert report["scales"] == [1.0]  # the model's eval.scales
    scaled = tmp_path / "scales.json"
    assert cli(*arguments, "--scales", "0.75,1.5", "--json", scaled)[0] == 0
    multi_scale = json.loads(scaled.read_text())
    assert (
        multi_scale["scales"] == [0.75, 1.5]
        and np.array(multi_scale["confusion_matrix"]).sum() == matrix.sum()
    )


@pytest.mark.integration
def test_evaluate_command_errors_are_clear(trained_run, tmp_path, cli) -> None:
    data, checkpoint = trained_run
    not_a_checkpoint = tmp_path / "model.ckpt"
    not_a_checkpoint.write_text("hello")
    code, _, err = cli("evaluate", "--checkpoint", not_a_checkpoint, "--data", data, "-f", "deepglobe")
    assert code == 1 and "not a readable PyTorch checkpoint" in err
    schema_file = tmp_path / "other.yaml"
    schema_file.write_text(yaml.safe_dump({"classes": [{"name": "x", "color": "#000001"}]}))
    code, _, err = cli(
        "evaluate", "--checkpoint", checkpoint, "--data", data, "-f", "deepglobe", "--schema", schema_file
    )
    assert code == 1 and "differ from the model" in err
    code, _, err = cli(
        "evaluate", "--checkpoint", checkpoint, "--data", data, "-f", "deepglobe", "--precision", "fp8"
    )
    assert code == 1 and "--precision 'fp8'" in err
    for scales, message in (
        ("1,x", "--scales '1,x': expected numbers"),
        ("1,5", "--scales 5.0: .*less than"),
    ):
        code, _, err = cli(
            "evaluate", "--checkpoint", checkpoint, "--data", data, "-f", "deepglobe", "--scales", scales
        )
        assert code == 1 and re.search(message, err) and "Traceback" not in err


def test_score_samples_yields_each_image_with_its_truth_prediction_and_confusion(tmp_path: Path) -> None:
    prediction = letters_to_labels(PREDICTION)
    one_hot = np.stack([(prediction == k + 1) for k in range(4)]).astype(np.float32)
    for name in ("one", "two"):
        write_raster(tmp_path / "images" / f"{name}.tif", one_hot)
        write_raster(tmp_path / "masks" / f"{name}.tif", letters_to_labels(TRUTH))
    refs = discover_dataset("folder", tmp_path, SCHEMA).require_usable()
    samples = list(score_samples(identity_model(tmp_path), refs, SCHEMA))
    assert [sample.ref.id for sample in samples] == ["one", "two"]
    first = samples[0]
    np.testing.assert_array_equal(first.prediction, prediction - 1)
    assert (first.truth == 255).sum() == 2
    assert first.image().shape == (4, 4, 4)
    assert int(first.confusion.sum()) == 14 and first.report(SCHEMA).miou == pytest.approx(EXPECTED_MIOU)
    total = total_report(score_samples(identity_model(tmp_path), refs, SCHEMA), SCHEMA)
    assert total.confusion_matrix == (samples[0].confusion + samples[1].confusion).tolist()


@pytest.fixture(scope="module")
def untrained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fake_data import write_untrained_checkpoint

    return write_untrained_checkpoint(tmp_path_factory.mktemp("model") / "model.ckpt")


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--overlap", "0.75"], "error: --overlap 0.75: expected a fraction between 0 and 0.5"),
        (["--tile", "50"], "error: --tile 50: expected a multiple of 32 pixels"),
        (["--device", "tpu"], "error: --device 'tpu': expected one of cpu, cuda"),
        (["--tta", "d8"], "error: --tta 'd8': expected one of none, flips, d4"),
    ],
)
def test_evaluate_options_are_checked_before_the_model_loads(tmp_path, cli, option, expected) -> None:
    code, _, err = cli(
        "evaluate", "--checkpoint", tmp_path / "absent.ckpt", "--data", tmp_path, "-f", "deepglobe", *option
    )
    assert code == 1 and " ".join(err.split()).startswith(expected)


@pytest.mark.parametrize(
    ("json_name", "expected"),
    [("taken/report.json", "taken is a file, not a folder"), ("folder", "folder: is a folder; expected")],
)
def test_evaluate_reports_an_unwritable_json_path_before_it_evaluates(
    untrained_checkpoint, tmp_path, cli, json_name, expected
) -> None:
    data = write_deepglobe(tmp_path / "data", count=2, size=64)
    (tmp_path / "taken").write_text("a file, not a folder")
    (tmp_path / "folder").mkdir()
    code, out, err = cli(
        "evaluate", "--checkpoint", untrained_checkpoint, "--data", data, "-f", "deepglobe",
        "--json", tmp_path / json_name,
    )  # fmt: skip
    assert code == 1
    assert "evaluating" not in out
    assert err.startswith(f"error: {tmp_path / json_name}") and expected in " ".join(err.split())
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "folder", "taken"]
    assert list((tmp_path / "folder").iterdir()) == []


def test_evaluate_shows_progress(untrained_checkpoint, tmp_path, cli) -> None:
    data = write_deepglobe(tmp_path / "data", count=2, size=64)
    code, out, _ = cli("evaluate", "--checkpoint", untrained_checkpoint, "--data", data, "-f", "deepglobe")
    assert code == 0
    assert "evaluating: 1/2 images (100_sat)" in out and "evaluating: 2/2 images (101_sat)" in out


def test_evaluate_with_a_checkpoint_whose_config_is_invalid_is_one_error_line(
    untrained_checkpoint, tmp_path, cli
) -> None:
    saved = torch.load(untrained_checkpoint, weights_only=True)
    saved["hyper_parameters"]["config"]["bogus_key"] = 1
    bad = tmp_path / "bad.ckpt"
    torch.save(saved, bad)
    data = write_deepglobe(tmp_path / "data", count=1, size=64)
    code, _, err = cli("evaluate", "--checkpoint", bad, "--data", data, "-f", "deepglobe")
    assert code == 1
    assert err.startswith("error: ") and "bogus_key" in err and "Traceback" not in err


def test_evaluation_loads_the_figure_module_only_for_figures() -> None:
    code = "import sys, pointseg.evaluation; print('pointseg.plots' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_image_summary_gives_each_images_score_and_class_shares(tmp_path: Path) -> None:
    prediction = letters_to_labels(PREDICTION)
    one_hot = np.stack([(prediction == k + 1) for k in range(4)]).astype(np.float32)
    write_raster(tmp_path / "images" / "one.tif", one_hot)
    write_raster(tmp_path / "masks" / "one.tif", letters_to_labels(TRUTH))
    refs = discover_dataset("folder", tmp_path, SCHEMA).require_usable()
    [sample] = score_samples(identity_model(tmp_path), refs, SCHEMA)
    summary = image_summary(sample, SCHEMA)
    # Over the 14 scored pixels: truth a 4, b 6, c 4; prediction a 4, b 7, c 3 (see TRUTH, PREDICTION).
    names = SCHEMA.classes
    expected_truth = dict(
        zip(names, (round(4 / 14, 4), round(6 / 14, 4), round(4 / 14, 4), 0.0), strict=True)
    )
    expected_predicted = dict(zip(names, (round(4 / 14, 4), 0.5, round(3 / 14, 4), 0.0), strict=True))
    assert summary == {
        "id": "one",
        "miou": pytest.approx(EXPECTED_MIOU),
        "accuracy": pytest.approx(sample.report(SCHEMA).accuracy),
        "true_share": expected_truth,
        "predicted_share": expected_predicted,
    }
