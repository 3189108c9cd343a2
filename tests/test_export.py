from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from fake_data import UTM, block_labels, image_for, write_raster, write_untrained_checkpoint
from pointseg.checkpoint import load_trained_model
from pointseg.datasets import deepglobe
from pointseg.errors import PointsegError
from pointseg.export import export_onnx, load_onnx_model

pytestmark = pytest.mark.integration  # every test exports ONNX (once per module)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("export")
    checkpoint = write_untrained_checkpoint(root / "model.ckpt")
    return checkpoint, export_onnx(load_trained_model(checkpoint), root / "model.onnx")


def test_onnx_matches_torch_with_dynamic_batch_and_size(exported: tuple[Path, Path]) -> None:
    checkpoint, onnx_path = exported
    trained = load_trained_model(checkpoint)
    onnx_model = load_onnx_model(onnx_path)
    assert onnx_model.schema == trained.schema and onnx_model.band_stats == trained.band_stats
    assert onnx_model.tile == trained.config.eval.tile
    torch.manual_seed(1)
    for shape in [(1, 3, 64, 64), (3, 3, 96, 160)]:
        batch = torch.randn(shape)
        with torch.inference_mode():
            expected = trained.model(batch)
        got = onnx_model.forward(batch)
        assert got.shape == expected.shape
        assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.999


def test_predict_with_onnx_agrees_with_torch_on_999_per_mille(exported, tmp_path, cli) -> None:
    checkpoint, onnx_path = exported
    labels = block_labels(150, 210, 6, seed=2)
    scene = write_raster(
        tmp_path / "scene.tif",
        image_for(labels, np.array(deepglobe.SCHEMA.colors), seed=2),
        UTM,
        from_origin(300000, 5000000, 1, 1),
    )
    assert cli("predict", scene, "--checkpoint", checkpoint, "--out", tmp_path / "torch")[0] == 0
    assert cli("predict", scene, "--onnx", onnx_path, "--out", tmp_path / "onnx")[0] == 0
    with (
        rasterio.open(tmp_path / "torch" / "scene_classes.tif") as a,
        rasterio.open(tmp_path / "onnx" / "scene_classes.tif") as b,
    ):
        assert a.crs == b.crs == UTM
        agreement = (a.read(1) == b.read(1)).mean()
    assert agreement >= 0.999


def test_export_command_and_bad_model_files(exported, tmp_path, cli) -> None:
    checkpoint, _ = exported
    assert cli("export", "onnx", "--checkpoint", checkpoint, "--out", tmp_path / "m.onnx")[0] == 0
    assert (tmp_path / "m.onnx").stat().st_size > 100_000
    not_onnx = tmp_path / "bad.onnx"
    not_onnx.write_text("not a model")
    with pytest.raises(PointsegError, match=r"bad\.onnx: not a readable ONNX model"):
        load_onnx_model(not_onnx)
    code, _, err = cli("predict", tmp_path, "--out", tmp_path / "o")
    assert code == 1 and "exactly one of --checkpoint" in err


def test_export_into_a_folder_that_is_a_file_is_one_error_line(exported, tmp_path, cli) -> None:
    checkpoint, _ = exported
    (tmp_path / "taken").write_text("a file, not a folder")
    code, _, err = cli("export", "onnx", "--checkpoint", checkpoint, "--out", tmp_path / "taken" / "m.onnx")
    assert code == 1
    assert err.startswith(f"error: {tmp_path / 'taken'}") and "Traceback" not in err


@pytest.mark.parametrize("tta", ["flips", "d4"])
def test_onnx_model_averages_the_views_its_metadata_names(
    exported: tuple[Path, Path], tmp_path: Path, tta: str
) -> None:
    import json

    import onnx

    from pointseg.export import METADATA_KEY
    from pointseg.inference import dihedral_averaged, flip_averaged

    _, onnx_path = exported
    plain = load_onnx_model(onnx_path)
    assert plain.metadata["tta"] == "none"
    proto = onnx.load(str(onnx_path))
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            metadata = json.loads(prop.value)
            prop.value = json.dumps({**metadata, "model": {**metadata["model"], "tta": tta}})
    averaged_path = tmp_path / f"{tta}.onnx"
    onnx.save(proto, str(averaged_path))
    averaged = load_onnx_model(averaged_path)
    assert averaged.metadata["tta"] == tta
    batch = torch.randn(2, 3, 64, 96)  # not square: the transposed views are 96 x 64
    averaging = {"flips": flip_averaged, "d4": dihedral_averaged}[tta]
    torch.testing.assert_close(averaged.forward(batch), averaging(plain.forward)(batch))


def test_onnx_model_predicts_at_the_scales_its_metadata_names(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    import json

    import onnx

    from pointseg.export import METADATA_KEY
    from pointseg.inference import scale_averaged

    _, onnx_path = exported
    plain = load_onnx_model(onnx_path)
    assert plain.metadata["scales"] == [1.0]
    proto = onnx.load(str(onnx_path))
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            metadata = json.loads(prop.value)
            prop.value = json.dumps({**metadata, "model": {**metadata["model"], "scales": [1.0, 1.5]}})
    scaled_path = tmp_path / "scales.onnx"
    onnx.save(proto, str(scaled_path))
    scaled = load_onnx_model(scaled_path)
    assert scaled.metadata["scales"] == [1.0, 1.5]
    batch = torch.randn(2, 3, 64, 96)
    torch.testing.assert_close(scaled.forward(batch), scale_averaged(plain.forward, (1.0, 1.5))(batch))
