from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from fake_data import write_raster
from pointseg.errors import PointsegError
from pointseg.inference import (
    ArraySource,
    LabelSink,
    SlidingWindowPredictor,
    TileGrid,
    blend_window,
    dihedral_averaged,
    fast_bfloat16,
    flip_averaged,
    open_source,
    predict_labels,
    read_reflected,
    scale_averaged,
    torch_forward,
    tta_averaged,
)
from pointseg.normalization import BandStats
from pointseg.schema import IGNORE_INDEX

CLASSES = 4


def pixelwise_model(bands: int = 3, seed: int = 0) -> nn.Module:
    """A 1x1 convolution: its output at a pixel depends on that pixel only, so tiling cannot change it."""
    torch.manual_seed(seed)
    return nn.Conv2d(bands, CLASSES, kernel_size=1).eval()


def random_image(height: int, width: int, bands: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(bands, height, width)).astype(np.float32)


class RecordingSink:
    """Keeps every block and counts how often each pixel was written."""

    def __init__(self, height: int, width: int) -> None:
        self.probabilities = np.zeros((CLASSES, height, width), dtype=np.float32)
        self.writes = np.zeros((height, width), dtype=np.int64)

    def write(self, row: int, col: int, probabilities: torch.Tensor) -> None:
        _, height, width = probabilities.shape
        assert row >= 0 and col >= 0
        assert row + height <= self.writes.shape[0] and col + width <= self.writes.shape[1]
        self.probabilities[:, row : row + height, col : col + width] = probabilities.numpy()
        self.writes[row : row + height, col : col + width] += 1


def whole_image_probabilities(model: nn.Module, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(image)[None]), dim=1)[0].numpy()


@pytest.mark.parametrize("size", [(37, 53), (16, 16), (1, 40), (61, 17), (100, 33)])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_tiled_prediction_equals_whole_image_prediction(size, overlap: float, batch_size: int) -> None:
    height, width = size
    model = pixelwise_model()
    image = random_image(height, width)
    sink = RecordingSink(height, width)
    calls = []

    def forward(batch: torch.Tensor) -> torch.Tensor:
        assert batch.shape[1:] == (3, 16, 16)
        assert batch.dtype == torch.float32
        calls.append(batch.shape[0])
        with torch.no_grad():
            return model(batch)

    predictor = SlidingWindowPredictor(forward, CLASSES, tile=16, overlap=overlap, batch_size=batch_size)
    tiles_done = []
    predictor.predict(ArraySource(image), sink, on_tiles=tiles_done.append)
    np.testing.assert_array_equal(sink.writes, 1)  # every pixel exactly once
    expected = whole_image_probabilities(model, image)
    np.testing.assert_allclose(sink.probabilities, expected, rtol=0, atol=2e-6)  # no seams
    np.testing.assert_array_equal(sink.probabilities.argmax(0), expected.argmax(0))
    assert max(calls) <= batch_size
    assert sum(calls) == sum(tiles_done) == predictor.count_tiles(height, width)


def test_predict_labels_and_label_sink() -> None:
    model = pixelwise_model()
    image = random_image(45, 70)
    with torch.no_grad():
        labels = predict_labels(model, image, CLASSES, tile=32, overlap=0.25, batch_size=2)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, whole_image_probabilities(model, image).argmax(0))
    sink = LabelSink(45, 70, with_confidence=True)
    with torch.no_grad():
        SlidingWindowPredictor(model, CLASSES, tile=32, overlap=0.5).predict(ArraySource(image), sink)
    np.testing.assert_array_equal(sink.labels, labels)
    assert sink.confidence is not None
    np.testing.assert_allclose(sink.confidence, whole_image_probabilities(model, image).max(0), atol=2e-6)


@pytest.mark.parametrize("overlap", [0.0, 0.25])
def test_image_smaller_than_a_tile_is_reflected(overlap: float) -> None:
    # A 3x3 convolution with reflection padding sees, at the image border, what the tile's
    # reflected surroundings hold; zero or edge padding of the tile would change those pixels.
    torch.manual_seed(1)
    model = nn.Conv2d(3, CLASSES, kernel_size=3, padding=1, padding_mode="reflect").eval()
    image = random_image(10, 13)
    sink = RecordingSink(10, 13)
    with torch.no_grad():
        SlidingWindowPredictor(model, CLASSES, tile=32, overlap=overlap).predict(ArraySource(image), sink)
    np.testing.assert_array_equal(sink.writes, 1)
    np.testing.assert_allclose(sink.probabilities, whole_image_probabilities(model, image), atol=2e-6)


def test_read_reflected() -> None:
    image = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    window = read_reflected(ArraySource(image), -2, -1, 7, 6)
    np.testing.assert_array_equal(window, np.pad(image, ((0, 0), (2, 2), (1, 1)), mode="reflect"))
    np.testing.assert_array_equal(read_reflected(ArraySource(image), 1, 1, 2, 2), image[:, 1:3, 1:3])
    strip = np.arange(5, dtype=np.float32).reshape(1, 1, 5)  # one row cannot reflect: edge values
    np.testing.assert_array_equal(read_reflected(ArraySource(strip), -1, 0, 3, 5)[0], [strip[0, 0]] * 3)


def test_tile_grid_covers_the_image_with_half_an_overlap_before_it() -> None:
    grid = TileGrid.along(100, tile=32, stride=24)  # overlap 8 px: start 4 px before the image
    assert grid.start == -4
    assert grid.origin(1) == 20
    assert grid.count == 5  # origins -4, 20, 44, 68, 92
    assert grid.end == 124 >= 100 + 4
    assert TileGrid.along(10, tile=32, stride=32).count == 1


@pytest.mark.parametrize(("tile", "ramp"), [(32, 8), (33, 16), (16, 1), (64, 32)])
def test_blend_window_is_positive_and_neighbouring_ramps_sum_to_one(tile: int, ramp: int) -> None:
    window = blend_window(tile, ramp)
    assert window.shape == (tile, tile)
    assert (window > 0).all()
    assert window.max() <= 1.0
    profile = window.diagonal().sqrt()  # the window is the outer product of a 1-D profile
    torch.testing.assert_close(window, profile[:, None] * profile[None, :])
    # Tile A's falling ramp lies on tile B's rising ramp, for neighbours that overlap by `ramp` px.
    torch.testing.assert_close(profile[tile - ramp :] + profile[:ramp], torch.ones(ramp))
    assert (profile[ramp : tile - ramp] == 1).all()


def test_blend_window_without_ramp_is_uniform() -> None:
    assert (blend_window(16, 0) == 1).all()


@pytest.mark.parametrize("overlap", [-0.1, 0.51, 1.0])
def test_overlap_outside_zero_to_half_is_an_error(overlap: float) -> None:
    with pytest.raises(PointsegError, match=rf"overlap {overlap}: expected a fraction between 0 and 0.5"):
        SlidingWindowPredictor(pixelwise_model(), CLASSES, tile=32, overlap=overlap)


def test_other_settings_are_checked() -> None:
    with pytest.raises(PointsegError, match="tile 8: expected at least 16"):
        SlidingWindowPredictor(pixelwise_model(), CLASSES, tile=8)
    with pytest.raises(PointsegError, match="batch size 0"):
        SlidingWindowPredictor(pixelwise_model(), CLASSES, tile=32, batch_size=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("nodata", [None, np.nan])
def test_non_finite_pixels_are_nodata_and_never_reach_the_network(
    tmp_path: Path, bad: float, nodata: float | None
) -> None:
    """One NaN/inf pixel in a float32 GeoTIFF: 255 there, the rest as if it were the band mean."""
    image = random_image(40, 50) * 10 + 100
    image[1, 12, 20] = bad
    path = write_raster(tmp_path / "scene.tif", image)
    if nodata is not None:
        with rasterio.open(path, "r+") as dataset:
            dataset.nodata = nodata
    stats = BandStats((100.0,) * 3, (10.0,) * 3)
    model = pixelwise_model()
    seen_finite = []

    def forward(batch: torch.Tensor) -> torch.Tensor:
        seen_finite.append(bool(torch.isfinite(batch).all()))
        with torch.no_grad():
            return model(batch)

    predictor = SlidingWindowPredictor(forward, CLASSES, tile=32, overlap=0.25)
    with open_source(path, stats) as source:
        sink = LabelSink(source.height, source.width, valid=source.valid)
        predictor.predict(source, sink)
    assert seen_finite and all(seen_finite)
    filled = image.copy()
    filled[1, 12, 20] = 100.0  # the band mean: normalised to 0
    expected = whole_image_probabilities(model, stats.normalize(filled)).argmax(0).astype(np.uint8)
    expected[12, 20] = IGNORE_INDEX
    assert np.array_equal(sink.labels, expected)


def test_read_reflected_replaces_non_finite_values_with_zero() -> None:
    image = np.ones((1, 4, 4), dtype=np.float32)
    image[0, 0, 0], image[0, 1, 1], image[0, 2, 2] = np.nan, np.inf, -np.inf
    window = read_reflected(ArraySource(image), -2, -2, 8, 8)
    zeroed = np.where(np.isfinite(image), image, 0)
    assert np.isfinite(window).all() and window[0, 2, 2] == 0
    assert np.array_equal(window, read_reflected(ArraySource(zeroed), -2, -2, 8, 8))


def test_flip_averaged_is_the_mean_over_the_mirrors_in_one_call() -> None:
    calls = []

    def position_dependent(batch: torch.Tensor) -> torch.Tensor:
        calls.append(batch.shape[0])
        ramp = torch.arange(batch.shape[-1], dtype=torch.float32)
        return batch * ramp + torch.arange(batch.shape[-2], dtype=torch.float32)[:, None]

    batch = torch.from_numpy(random_image(5, 7)[None].repeat(2, axis=0))
    averaged = flip_averaged(position_dependent)(batch)
    expected = (
        position_dependent(batch)
        + position_dependent(batch.flip(-1)).flip(-1)
        + position_dependent(batch.flip(-2)).flip(-2)
    ) / 3
    assert calls[0] == 6  # one forward call on the batch and its two mirrors
    torch.testing.assert_close(averaged, expected)
    # differs from the plain prediction for a model that is not mirror-symmetric
    assert not torch.allclose(averaged, position_dependent(batch))


@pytest.mark.parametrize(("height", "width"), [(6, 6), (5, 7)])
def test_dihedral_averaged_is_the_mean_over_the_eight_symmetries(height: int, width: int) -> None:
    calls = []

    def position_dependent(batch: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(batch.shape))
        ramp = torch.arange(batch.shape[-1], dtype=torch.float32)
        return batch * ramp + torch.arange(batch.shape[-2], dtype=torch.float32)[:, None] ** 2

    batch = torch.from_numpy(random_image(height, width)[None].repeat(2, axis=0))
    averaged = dihedral_averaged(position_dependent)(batch)
    # each symmetry written out by hand as (do, undo); the quarter turns through torch.rot90
    symmetries = [
        (lambda x: x, lambda y: y),
        (lambda x: x.flip(-1), lambda y: y.flip(-1)),
        (lambda x: x.flip(-2), lambda y: y.flip(-2)),
        (lambda x: torch.rot90(x, 2, (-2, -1)), lambda y: torch.rot90(y, -2, (-2, -1))),
        (lambda x: torch.rot90(x, 1, (-2, -1)), lambda y: torch.rot90(y, -1, (-2, -1))),
        (lambda x: torch.rot90(x, -1, (-2, -1)), lambda y: torch.rot90(y, 1, (-2, -1))),
        (lambda x: x.transpose(-2, -1), lambda y: y.transpose(-2, -1)),
        (
            lambda x: torch.rot90(x, 2, (-2, -1)).transpose(-2, -1),
            lambda y: torch.rot90(y.transpose(-2, -1), 2, (-2, -1)),
        ),
    ]
    expected = sum(undo(position_dependent(do(batch))) for do, undo in symmetries) / 8
    assert calls[:2] == [(8, 3, height, width), (8, 3, width, height)]  # two calls on four times the batch
    assert averaged.shape == batch.shape
    torch.testing.assert_close(averaged, expected)
    assert not torch.allclose(averaged, flip_averaged(position_dependent)(batch))


def test_tta_averaged_picks_the_averaging_and_rejects_unknown_names() -> None:
    batch = torch.from_numpy(random_image(6, 6)[None])

    def position_dependent(batch: torch.Tensor) -> torch.Tensor:
        return batch * torch.arange(batch.shape[-1], dtype=torch.float32)

    assert tta_averaged(position_dependent, "none") is position_dependent
    for name, averaging in (("flips", flip_averaged), ("d4", dihedral_averaged)):
        torch.testing.assert_close(
            tta_averaged(position_dependent, name)(batch), averaging(position_dependent)(batch)
        )
    with pytest.raises(PointsegError, match="test-time augmentation 'd8': expected one of none, flips, d4"):
        tta_averaged(position_dependent, "d8")  # type: ignore[arg-type]


@pytest.mark.parametrize("tta", ["flips", "d4"])
def test_averaging_leaves_a_pixelwise_model_unchanged(tta: str) -> None:
    model = pixelwise_model()
    batch = torch.from_numpy(random_image(16, 16)[None])
    plain = torch_forward(model)(batch)
    torch.testing.assert_close(torch_forward(model, tta=tta)(batch), plain, rtol=1e-5, atol=1e-5)  # type: ignore[arg-type]


def test_scale_averaging_is_forward_itself_at_one_scale() -> None:
    model = pixelwise_model()
    assert scale_averaged(model, (1.0,)) is model
    assert scale_averaged(model, [1]) is model


def test_scale_averaging_resizes_to_multiples_of_32_and_back() -> None:
    seen: list[tuple[int, ...]] = []

    def recording(batch: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(batch.shape))
        return torch.zeros(batch.shape[0], CLASSES, *batch.shape[-2:])

    batch = torch.rand(2, 3, 512, 200)
    averaged = scale_averaged(recording, (0.75, 1.0, 1.5))(batch)
    assert seen == [(2, 3, 384, 160), (2, 3, 512, 200), (2, 3, 768, 288)]  # 150 -> 160, 300 -> 288
    assert averaged.shape == (2, CLASSES, 512, 200)
    torch.testing.assert_close(averaged.exp(), torch.full_like(averaged, 1 / CLASSES))  # equal logits


def test_scale_averaging_is_the_mean_of_the_probabilities_at_each_scale() -> None:
    """The predictor's softmax of the result: the mean of each scale's probabilities, logits resized back."""

    def coarse_model(batch: torch.Tensor) -> torch.Tensor:
        # Logits that depend on the scale: a pixel's class scores grow with the number of columns.
        return torch.stack([batch[:, 0] * k * batch.shape[-1] / 64 for k in range(CLASSES)], dim=1)

    batch = torch.rand(1, 3, 64, 64)
    averaged = torch.softmax(scale_averaged(coarse_model, (1.0, 2.0))(batch), dim=1)
    at_one = torch.softmax(coarse_model(batch), dim=1)
    doubled = nn.functional.interpolate(batch, size=(128, 128), mode="bilinear", align_corners=False)
    at_two = torch.softmax(
        nn.functional.interpolate(coarse_model(doubled), size=(64, 64), mode="bilinear", align_corners=False),
        dim=1,
    )
    assert not torch.allclose(at_one, at_two, atol=1e-3)
    torch.testing.assert_close(averaged, (at_one + at_two) / 2, rtol=1e-4, atol=1e-5)


def test_mirrors_and_scales_leave_a_pixelwise_model_on_a_flat_image_unchanged() -> None:
    """Resizing a constant image changes nothing, so neither does any averaging of a 1x1 convolution."""
    model = pixelwise_model()
    batch = torch.ones(1, 3, 64, 64) * torch.tensor([0.5, -1.0, 2.0])[:, None, None]
    plain = torch.softmax(torch_forward(model)(batch), dim=1)
    both = torch.softmax(torch_forward(model, tta="d4", scales=(0.75, 1.0, 1.5))(batch), dim=1)
    torch.testing.assert_close(both, plain, rtol=1e-5, atol=1e-6)


def test_fast_bfloat16_follows_onednn_on_the_cpu_and_is_false_without_a_device() -> None:
    assert fast_bfloat16("cpu") == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert fast_bfloat16("meta") is False
    if not torch.cuda.is_available():
        assert fast_bfloat16("cuda") is False


def test_bf16_prediction_on_a_device_without_it_runs_with_a_note(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("pointseg.inference.fast_bfloat16", lambda device: False)
    batch = torch.rand(1, 3, 8, 8)
    assert torch_forward(nn.Conv2d(3, 2, 1), "cpu", "fp32")(batch).shape == (1, 2, 8, 8)
    assert capsys.readouterr().err == ""
    assert torch_forward(nn.Conv2d(3, 2, 1), "cpu", "bf16")(batch).shape == (1, 2, 8, 8)
    note = capsys.readouterr().err
    assert "--precision bf16: this CPU (no AVX-512 or AMX) does not compute bfloat16" in note
