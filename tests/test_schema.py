import json
import re

import numpy as np
import pytest
import yaml

from pointseg.errors import PointsegError
from pointseg.schema import IGNORE_INDEX, ClassSchema, format_color, pack_rgb, parse_color, unpack_rgb

RGB_SCHEMA = ClassSchema(
    name="toy",
    classes=("water", "forest", "urban"),
    colors=((0, 0, 255), (0, 255, 0), (255, 0, 0)),
    ignore_colors=((0, 0, 0), (155, 155, 155)),
)
INDEX_SCHEMA = ClassSchema(
    name="toy-index",
    classes=("a", "b", "c"),
    colors=((255, 0, 0), (0, 255, 0), (0, 0, 255)),
    mask_encoding="index",
    mask_values=(1, 2, 3),
    ignore_values=(0,),
)


def colour_mask(rows: list[list[tuple[int, int, int]]]) -> np.ndarray:
    """``(3, H, W)`` uint8 mask from rows of RGB tuples."""
    return np.moveaxis(np.array(rows, dtype=np.uint8), -1, 0)


def test_parse_and_format_color() -> None:
    assert parse_color("#6EC1E4", "x") == (0x6E, 0xC1, 0xE4)
    assert parse_color("#6ec1e4", "x") == (0x6E, 0xC1, 0xE4)
    assert parse_color([60, 16, 152], "x") == (60, 16, 152)
    assert format_color((60, 16, 152)) == "#3C1098 (60, 16, 152)"
    assert unpack_rgb(int(pack_rgb(np.array([60, 16, 152], dtype=np.uint8)))) == (60, 16, 152)


@pytest.mark.parametrize(
    "value", ["#GGHHII", "#12345", "6EC1E4", [1, 2], [0, 0, 256], [0, -1, 0], [1.0, 2, 3], None]
)
def test_parse_color_rejects_malformed_values(value: object) -> None:
    with pytest.raises(PointsegError, match=r"^where: colour .* is not '#RRGGBB'"):
        parse_color(value, "where")


def test_rgb_decode_maps_classes_and_ignore_colours() -> None:
    raw = colour_mask(
        [
            [(0, 0, 255), (0, 255, 0), (255, 0, 0)],
            [(0, 0, 0), (155, 155, 155), (0, 0, 255)],
        ]
    )
    labels = RGB_SCHEMA.decode_mask(raw, "m.png")
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, [[0, 1, 2], [IGNORE_INDEX, IGNORE_INDEX, 0]])


def test_rgb_decode_unknown_colour_names_file_colour_and_exact_pixel_count() -> None:
    raw = np.zeros((3, 40, 50), dtype=np.uint8)
    raw[2] = 255  # water everywhere
    raw[:, :30, :41] = np.array([18, 52, 86], dtype=np.uint8)[:, None, None]  # 1,230 px of #123456
    raw[:, 39, 49] = (1, 2, 3)  # 1 px of #010203
    with pytest.raises(PointsegError) as caught:
        RGB_SCHEMA.decode_mask(raw, "/data/tile_7_mask.png")
    message = str(caught.value)
    assert message.startswith("/data/tile_7_mask.png: 2 mask colour(s) not in the 'toy' schema")
    assert "#123456 (18, 52, 86): 1,230 px" in message
    assert "#010203 (1, 2, 3): 1 px" in message
    assert "water #0000FF" in message  # says what was expected
    assert "#9B9B9B" in message  # and what is ignored


def test_rgb_decode_rejects_single_band_mask() -> None:
    with pytest.raises(PointsegError, match=r"m\.tif: mask has shape \(1, 2, 2\); .* RGB"):
        RGB_SCHEMA.decode_mask(np.zeros((1, 2, 2), dtype=np.uint8), "m.tif")


def test_index_decode_with_mask_values_and_ignore_values() -> None:
    raw = np.array([[1, 2, 3], [0, 3, 1]], dtype=np.uint8)
    np.testing.assert_array_equal(INDEX_SCHEMA.decode_mask(raw, "m.tif"), [[0, 1, 2], [IGNORE_INDEX, 2, 0]])
    np.testing.assert_array_equal(
        INDEX_SCHEMA.decode_mask(raw[None], "m.tif"), [[0, 1, 2], [IGNORE_INDEX, 2, 0]]
    )


def test_index_decode_default_values_are_class_indices() -> None:
    schema = ClassSchema(name="s", classes=("a", "b"), colors=((1, 1, 1), (2, 2, 2)), mask_encoding="index")
    assert schema.stored_values == (0, 1)
    np.testing.assert_array_equal(schema.decode_mask(np.array([[1, 0]], dtype=np.uint8), "m"), [[1, 0]])


def test_index_decode_unknown_value_counts_pixels() -> None:
    raw = np.ones((10, 10), dtype=np.uint8)
    raw[:3, :4] = 7
    with pytest.raises(PointsegError) as caught:
        INDEX_SCHEMA.decode_mask(raw, "masks/scene.tif")
    message = str(caught.value)
    assert message.startswith("masks/scene.tif: 1 mask value(s) not in the 'toy-index' schema: 7: 12 px")
    assert "a=1, b=2, c=3" in message
    assert "ignored: 0" in message


def test_uint16_masks() -> None:
    schema = ClassSchema(
        name="wide",
        classes=("low", "high"),
        colors=((0, 0, 0), (9, 9, 9)),
        mask_encoding="index",
        mask_values=(1000, 65535),
        ignore_values=(300,),
    )
    raw = np.array([[1000, 65535], [300, 1000]], dtype=np.uint16)
    np.testing.assert_array_equal(schema.decode_mask(raw, "m"), [[0, 1], [IGNORE_INDEX, 0]])
    # Other integer dtypes are accepted when their values fit in 0..65535.
    np.testing.assert_array_equal(schema.decode_mask(raw.astype(np.int32), "m"), [[0, 1], [IGNORE_INDEX, 0]])
    with pytest.raises(PointsegError, match=r"m: 1 mask value\(s\) .*: 1001: 1 px"):
        schema.decode_mask(np.array([[1001, 1000]], dtype=np.uint16), "m")
    with pytest.raises(PointsegError, match=r"m: mask dtype int32 with values -1\.\.1000"):
        schema.decode_mask(np.array([[-1, 1000]], dtype=np.int32), "m")
    with pytest.raises(PointsegError, match=r"m: mask dtype float32"):
        schema.decode_mask(np.array([[1.0]], dtype=np.float32), "m")


def test_colorize_uses_class_colours_and_black_for_ignored() -> None:
    image = RGB_SCHEMA.colorize(np.array([[0, 1], [2, IGNORE_INDEX]], dtype=np.uint8))
    assert image.shape == (2, 2, 3)
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, [[[0, 0, 255], [0, 255, 0]], [[255, 0, 0], [0, 0, 0]]])


@pytest.mark.parametrize("schema", [RGB_SCHEMA, INDEX_SCHEMA], ids=["rgb", "index"])
def test_to_dict_from_dict_round_trip(schema: ClassSchema) -> None:
    assert ClassSchema.from_dict(schema.to_dict()) == schema
    assert ClassSchema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_load_round_trip_through_files(tmp_path, suffix: str) -> None:
    path = tmp_path / f"schema{suffix}"
    data = INDEX_SCHEMA.to_dict()
    path.write_text(json.dumps(data) if suffix == ".json" else yaml.safe_dump(data))
    assert ClassSchema.load(path) == INDEX_SCHEMA


def test_load_documented_yaml_example(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "mask_encoding: rgb\n"
        "classes:\n"
        "  - {name: building, color: [60, 16, 152]}\n"
        "  - {name: road, color: '#6EC1E4'}\n"
        "ignore_colors: ['#9B9B9B']\n"
    )
    schema = ClassSchema.load(path)
    assert schema.name == "mine"  # defaults to the file stem
    assert schema.classes == ("building", "road")
    assert schema.colors == ((60, 16, 152), (0x6E, 0xC1, 0xE4))
    assert schema.ignore_colors == ((0x9B, 0x9B, 0x9B),)


def write_schema(tmp_path, classes: list[dict], **extra: object):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "classes": classes, **extra}))
    return path


@pytest.mark.parametrize(
    ("classes", "extra", "expected"),
    [
        ([{"name": "a", "color": "#FF0000"}, {"name": "b"}], {}, r"classes\[1\] \('b'\): missing 'color'"),
        ([{"name": "a", "color": "#FF00ZZ"}], {}, r"classes\[0\]: colour '#FF00ZZ' is not '#RRGGBB'"),
        (
            [{"name": "a", "color": "#FF0000"}, {"name": "a", "color": "#00FF00"}],
            {},
            r"class names repeat: \['a', 'a'\]",
        ),
        (
            [{"name": "a", "color": "#FF0000"}, {"name": "b", "color": [255, 0, 0]}],
            {},
            r"mask colour\(s\) used more than once: #FF0000 \(255, 0, 0\)",
        ),
        (
            [{"name": "a", "color": "#FF0000"}],
            {"ignore_colors": ["#ff0000"]},
            r"mask colour\(s\) used more than once: #FF0000",
        ),
        ([{"color": "#FF0000"}], {}, r"classes\[0\]: expected a mapping with a string 'name'"),
        (
            [{"name": "a", "color": "#FF0000", "value": "x"}],
            {"mask_encoding": "index"},
            r"classes\[0\]: 'value' must be an integer",
        ),
        (
            [{"name": "a", "color": "#FF0000", "value": 1}, {"name": "b", "color": "#00FF00"}],
            {"mask_encoding": "index"},
            r"give 'value' for every class or for none",
        ),
        (
            [{"name": "a", "color": "#FF0000", "value": 1}, {"name": "b", "color": "#00FF00", "value": 1}],
            {"mask_encoding": "index"},
            r"mask values must be distinct",
        ),
        ([{"name": "a", "color": "#FF0000"}], {"mask_encoding": "palette"}, r"mask_encoding 'palette'"),
        (
            [{"name": "a", "color": "#FF0000"}],
            {"ignore_values": ["0"]},
            r"'ignore_values' must be a list of integers",
        ),
        ([{"name": "a", "color": "#FF0000"}], {"ignore_colors": ["grey"]}, r"ignore_colors: colour 'grey'"),
        (
            [{"name": "a", "color": "#FF0000"}],
            {"ignore_colors": "#9B9B9B"},
            r"'ignore_colors' must be a list",
        ),
        ([], {}, r"'classes' must be a non-empty list"),
    ],
    ids=[
        "missing-color",
        "bad-colour",
        "duplicate-names",
        "repeated-colour",
        "colour-also-ignored",
        "no-name",
        "bad-value",
        "partial-values",
        "repeated-values",
        "bad-encoding",
        "bad-ignore-values",
        "bad-ignore-colour",
        "ignore-colour-not-a-list",
        "no-classes",
    ],
)
def test_malformed_schema_files_name_file_and_field(tmp_path, classes, extra, expected) -> None:
    path = write_schema(tmp_path, classes, **extra)
    with pytest.raises(PointsegError) as caught:
        ClassSchema.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert re.search(expected, message), message


def test_load_missing_and_unparsable_files(tmp_path) -> None:
    with pytest.raises(PointsegError, match=r"nope\.yaml: cannot read class schema"):
        ClassSchema.load(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.json"
    broken.write_text("{classes: ")
    with pytest.raises(PointsegError, match=r"broken\.json: not valid JSON"):
        ClassSchema.load(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(PointsegError, match=r"list\.yaml: expected a mapping with 'classes', found list"):
        ClassSchema.load(listing)


def test_a_non_utf8_schema_file_is_an_error_naming_the_file(tmp_path) -> None:
    """Regression (issue 11): a UnicodeDecodeError traceback."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\nclasses: [{name: a, color: '#FF0000'}]\n".encode("latin-1"))
    with pytest.raises(
        PointsegError, match=rf"^{re.escape(str(path))}: not UTF-8 text .*expected a YAML or JSON"
    ):
        ClassSchema.load(path)


@pytest.mark.parametrize(
    ("classes", "extra", "expected"),
    [
        (
            [{"name": "a", "color": "#FF0000"}],
            {"ignore_color": []},
            "unknown key 'ignore_color'; expected only",
        ),
        (
            [{"name": "a", "colour": "#FF0000"}],
            {},
            "unknown key 'classes[0].colour'; expected only name, color, value",
        ),
        ([{"name": "a", "color": "#FF0000"}], {"name": 7}, "'name' must be a string, found 7"),
    ],
)
def test_unknown_keys_and_wrong_types_in_schema_files(tmp_path, classes, extra, expected) -> None:
    path = write_schema(tmp_path, classes, **extra)
    with pytest.raises(PointsegError) as caught:
        ClassSchema.load(path)
    assert str(caught.value).startswith(f"{path}: {expected}")
