from pathlib import Path

import pytest

from pointseg.config import apply_overrides, dump_config, load_config, parse_config, read_config_data
from pointseg.errors import PointsegError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path: Path) -> None:
    from pointseg.experiments import read_experiment_section

    data = read_config_data(path)
    read_experiment_section(data, path)  # a sweep's section, validated and removed as sweeps do
    config = parse_config(data, str(path))
    # GroupNorm, unless the encoder is pretrained and keeps its BatchNorm (trained or frozen).
    assert config.model.norm == "group" or (config.model.norm in ("batch", "frozen") and config.model.weights)
    # LandCover.ai validates on the dataset's own val.txt; the others name their validation split.
    assert config.data.val or config.data.format == "landcoverai"


def test_extends_merges_sections_and_keeps_the_rest() -> None:
    config = load_config(CONFIGS / "deepglobe_pce_5pct.yaml")
    assert config.points.density == 0.05
    assert config.points.strategy == "density"  # from the base file
    assert config.model.encoder == "resnet50"


def test_cpu_small_is_the_small_config() -> None:
    config = load_config(CONFIGS / "cpu_small.yaml")
    assert (config.model.encoder, config.data.crop_size, config.trainer.precision) == (
        "resnet18",
        256,
        "auto",
    )


def test_overrides_parse_values_as_yaml() -> None:
    config = load_config(
        CONFIGS / "cpu_small.yaml", ["optim.lr=0.01", "data.val=[a, b]", "trainer.max_epochs=3"]
    )
    assert config.optim.lr == 0.01
    assert config.data.val == ["a", "b"]
    assert config.trainer.max_epochs == 3


def test_unknown_key_and_bad_value_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(PointsegError) as error:
        load_config(CONFIGS / "cpu_small.yaml", ["optim.lrr=0.1", "points.density=2"])
    message = str(error.value)
    assert "optim.lrr" in message and "points.density" in message and "cpu_small.yaml" in message


def test_expansion_and_propagation_settings_are_checked_in_one_place() -> None:
    config = load_config(CONFIGS / "cpu_small.yaml", [])
    assert config.points.expansion.method == "none" and config.loss.propagation_weight == 0
    config = load_config(
        CONFIGS / "cpu_small.yaml",
        ["points.expansion.method=felzenszwalb", "points.expansion.weight=1", "loss.propagation_weight=0.1"],
    )
    assert config.points.expansion.method == "felzenszwalb" and config.loss.propagation_weight == 0.1
    assert config.points.protocol().strategy == "density"  # expansion is not part of the protocol
    bad = [
        "points.expansion.method=watershed",
        "points.expansion.weight=0",
        "points.expansion.superpixel_size=0",
        "loss.propagation_weight=-1",
        "loss.propagation_radius=0",
        "loss.propagation_sigma_colour=0",
    ]
    with pytest.raises(PointsegError) as error:
        load_config(CONFIGS / "cpu_small.yaml", bad)
    message = str(error.value)
    for override in bad:
        assert override.partition("=")[0] in message


def test_override_without_equals_is_an_error() -> None:
    with pytest.raises(PointsegError, match="key=value"):
        apply_overrides({}, ["optim.lr"])


def test_dense_ce_with_point_supervision_is_rejected() -> None:
    with pytest.raises(PointsegError, match="pce"):
        parse_config(
            {"data": {"format": "deepglobe", "root": "x", "val": ["1"]}, "loss": {"name": "ce"}}, "cfg"
        )


def test_extends_cycle_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(PointsegError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(PointsegError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("data: [unclosed\n")
    with pytest.raises(PointsegError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_dump_round_trips(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "dubai_cpu_small.yaml")
    (tmp_path / "resolved.yaml").write_text(dump_config(config))
    assert load_config(tmp_path / "resolved.yaml") == config


def test_a_config_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("run_name: café\n".encode("latin-1"))
    with pytest.raises(PointsegError, match=r"latin1\.yaml: not UTF-8 text"):
        load_config(path)


@pytest.mark.parametrize(
    ("override", "field"),
    [("eval.overlap=0.75", "eval.overlap"), ("eval.tile=48", "eval.tile"), ("eval.tile=16", "eval.tile")],
)
def test_sliding_window_ranges_are_checked_with_the_config(override: str, field: str) -> None:
    with pytest.raises(PointsegError, match=rf"invalid config:\n  {field}: .*expected"):
        load_config(CONFIGS / "cpu_small.yaml", [override])


@pytest.mark.parametrize("rates", ["[6, 12]", "[0, 12, 18]", "[6, 12, 18, 24]"])
def test_atrous_rates_are_three_positive_integers(rates: str) -> None:
    assert load_config(CONFIGS / "cpu_small.yaml", ["model.atrous_rates=[6, 12, 18]"]).model.atrous_rates == (
        6,
        12,
        18,
    )
    with pytest.raises(PointsegError, match=r"invalid config:\n  model\.atrous_rates"):
        load_config(CONFIGS / "cpu_small.yaml", [f"model.atrous_rates={rates}"])


def test_a_set_value_that_is_not_yaml_is_an_error_naming_it() -> None:
    with pytest.raises(PointsegError, match=r"--set 'data\.val=\[1,': the value is not valid YAML \("):
        load_config(CONFIGS / "cpu_small.yaml", ["data.val=[1,"])


def test_output_stride_is_8_or_16() -> None:
    assert load_config(CONFIGS / "cpu_small.yaml").model.output_stride is None
    assert load_config(CONFIGS / "cpu_small.yaml", ["model.output_stride=8"]).model.output_stride == 8
    with pytest.raises(PointsegError, match=r"invalid config:\n  model\.output_stride"):
        load_config(CONFIGS / "cpu_small.yaml", ["model.output_stride=32"])


def test_points_file_settings_are_checked() -> None:
    config = load_config(CONFIGS / "cpu_small.yaml", ["points.file=clicks.geojson", "points.class_field=lc"])
    assert (config.points.file, config.points.class_field, config.points.given) == (
        Path("clicks.geojson"),
        "lc",
        True,
    )
    assert load_config(CONFIGS / "cpu_small.yaml").points.given is False
    with pytest.raises(PointsegError, match=r"points\.directory or points\.file, not both"):
        load_config(CONFIGS / "cpu_small.yaml", ["points.file=clicks.geojson", "points.directory=labels"])
    for bad in ("points.class_field=''", "points.holdout=1", "points.block_size=0"):
        with pytest.raises(PointsegError, match=bad.split("=")[0]):
            load_config(CONFIGS / "cpu_small.yaml", ["points.file=clicks.geojson", bad])


@pytest.mark.parametrize(
    ("override", "message"),
    [("optim.ema_decay=1", "less than 1"), ("optim.ema_decay=-0.1", "greater than or equal to 0")],
)
def test_ema_decay_is_a_decay_below_one(override: str, message: str) -> None:
    with pytest.raises(PointsegError, match=rf"optim.ema_decay: .*{message}"):
        load_config(CONFIGS / "cpu_small.yaml", [override])
    assert load_config(CONFIGS / "cpu_small.yaml").optim.ema_decay == 0  # off unless asked for


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("loss.consistency_weight=-1", "greater than or equal to 0"),
        ("loss.consistency_threshold=1.5", "less than or equal to 1"),
        ("loss.consistency_strength=2", "less than or equal to 1"),
    ],
)
def test_consistency_settings_are_checked_and_off_by_default(override: str, message: str) -> None:
    name = override.split("=")[0]
    with pytest.raises(PointsegError, match=rf"{name}: .*{message}"):
        load_config(CONFIGS / "cpu_small.yaml", [override])
    assert load_config(CONFIGS / "cpu_small.yaml").loss.consistency_weight == 0


def test_d4_test_time_augmentation_is_a_config_choice() -> None:
    assert load_config(CONFIGS / "cpu_small.yaml", ["eval.tta=d4"]).eval.tta == "d4"
    with pytest.raises(PointsegError, match=r"eval.tta: .*'none', 'flips' or 'd4'"):
        load_config(CONFIGS / "cpu_small.yaml", ["eval.tta=d8"])


def test_multi_scale_prediction_is_a_checked_config_list_off_by_default() -> None:
    assert load_config(CONFIGS / "cpu_small.yaml").eval.scales == (1.0,)
    assert load_config(CONFIGS / "cpu_small.yaml", ["eval.scales=[1, 1.5]"]).eval.scales == (1.0, 1.5)
    for value, message in (
        ("[]", "at least 1 item"),
        ("[1, 0]", "greater than 0"),
        ("[5]", "less than or equal to 4"),
    ):
        with pytest.raises(PointsegError, match=rf"eval.scales.*{message}"):
            load_config(CONFIGS / "cpu_small.yaml", [f"eval.scales={value}"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("augment.random_scale=-0.1", "greater than or equal to 0"),
        ("augment.random_scale=2", "less than or equal to 1"),
    ],
)
def test_random_scale_is_checked_and_off_by_default(override: str, message: str) -> None:
    with pytest.raises(PointsegError, match=rf"augment.random_scale: .*{message}"):
        load_config(CONFIGS / "cpu_small.yaml", [override])
    assert load_config(CONFIGS / "cpu_small.yaml").augment.random_scale == 0


def test_the_self_training_config_is_the_logged_sweeps_settings() -> None:
    """Its figures come from a sweep that gave these settings with --set on dubai_cpu_lite0.yaml."""
    overrides = [
        "self_training.rounds=1",
        "self_training.max_epochs=5",
        "self_training.selection=top-share",
        "eval.tta=d4",
    ]
    base = load_config(CONFIGS / "dubai_cpu_lite0.yaml", overrides)
    assert load_config(CONFIGS / "dubai_cpu_lite0_self_training.yaml") == base
