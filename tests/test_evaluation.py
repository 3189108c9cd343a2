import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from torch import nn

from fake_data import write_deepglobe, write_raster
from pointseg.checkpoint import TrainedModel
from pointseg.config import parse_config
from pointseg.datasets import discover_dataset
from pointseg.evaluation import evaluate_model
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

    report = evaluate_model(identity_model(tmp_path), refs, SCHEMA)

    assert report.per_class_iou["a"] == pytest.approx(0.6)
    assert report.per_class_iou["b"] == pytest.approx(6 / 7)
    assert report.per_class_iou["c"] == pytest.approx(0.75)
    assert report.per_class_iou["d"] is None
    assert report.absent_classes == ["d"]
    assert report.miou == pytest.approx(EXPECTED_MIOU)
    assert report.miou != pytest.approx(0.75)  # not the micro average
    assert report.accuracy == pytest.approx(12 / 14)
    assert np.asarray(report.confusion_matrix).sum() == 14


def test_evaluate_refuses_data_with_other_classes(tmp_path: Path) -> None:
    other = ClassSchema(
        name="other", classes=("x", "y"), colors=((0, 0, 0), (1, 1, 1)), mask_encoding="index"
    )
    with pytest.raises(Exception, match="differ from the model"):
        evaluate_model(identity_model(tmp_path), [], other)


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
    assert "mIoU" in stdout


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
