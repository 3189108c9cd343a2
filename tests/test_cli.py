import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from fake_data import rgb_mask, write_deepglobe, write_folder_dataset, write_raster
from pointseg.datasets import deepglobe
from pointseg.raster import read_mask
from pointseg.schema import IGNORE_INDEX


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def label_map(path: Path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read(1)


# ---------------------------------------------------------------- data check


def test_data_check_good_dataset(cli, tmp_path) -> None:
    write_deepglobe(tmp_path, count=2, size=32)
    code, out, err = cli("data", "check", tmp_path, "--format", "deepglobe")
    assert (code, err) == (0, "")
    flat = " ".join(out.split())  # rich wraps at the terminal width
    assert "2 image(s), 2 sample(s)" in flat
    assert "sizes: 32x32 (2)" in flat
    assert re.search(r"\(ignored\) │ 32 │ 1\.6%", flat)  # 2 x 16 px of unknown among 2048
    assert "no problems found" in flat


def test_data_check_lists_every_problem_and_exits_1(cli, tmp_path) -> None:
    write_deepglobe(tmp_path, count=4, size=16)
    bad = rgb_mask(np.zeros((16, 16), dtype=np.uint8), deepglobe.SCHEMA)
    bad[:, 0, 0] = (7, 7, 7)
    write_raster(tmp_path / "100_mask.png", bad)
    write_raster(tmp_path / "101_mask.png", rgb_mask(np.zeros((16, 20), dtype=np.uint8), deepglobe.SCHEMA))
    (tmp_path / "102_mask.png").unlink()
    (tmp_path / "103_sat.jpg").write_text("garbage")
    code, out, _ = cli("data", "check", tmp_path, "-f", "deepglobe")
    assert code == 1
    assert "4 problem(s):" in out
    for name, what in [
        ("100_mask.png", "#070707 (7, 7, 7): 1 px"),
        ("101_mask.png", "is 20x16 px"),
        ("102_sat.jpg", "missing mask"),
        ("103_sat.jpg", "not a readable raster"),
    ]:
        [line] = [line for line in out.splitlines() if str(tmp_path / name) in line]
        assert what in line, line


def test_data_check_input_errors(cli, tmp_path) -> None:
    code, _, err = cli("data", "check", tmp_path / "absent", "-f", "deepglobe")
    assert code == 1
    assert err.startswith(f"error: {tmp_path / 'absent'}: no such folder")
    root, _ = write_folder_dataset(tmp_path / "folder", bands=3, dtype="uint8", count=1)
    code, _, err = cli("data", "check", root, "-f", "folder")
    assert code == 1
    assert "needs a class schema file (--schema" in err
    code, _, err = cli("data", "check", root, "-f", "kaggle")
    assert code == 1
    assert "unknown dataset format 'kaggle'" in err


def test_errors_without_traceback_through_python_m(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pointseg", "data", "check", str(tmp_path / "absent"), "-f", "dubai"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert str(tmp_path / "absent") in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- points simulate


def test_points_simulate_density(cli, tmp_path) -> None:
    root = write_deepglobe(tmp_path / "data", count=3, size=64)
    out = tmp_path / "points"
    code, stdout, err = cli("points", "simulate", root, "-f", "deepglobe", "--out", out, "--density", "0.01")
    assert (code, err) == (0, "")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{i}_sat.{suffix}" for i in (100, 101, 102) for suffix in ("png", "geojson")] + ["summary.json"]
    )
    summary = json.loads((out / "summary.json").read_text())
    totals = np.zeros(6, dtype=np.int64)
    valid_pixels = 0
    for i in (100, 101, 102):
        points = label_map(out / f"{i}_sat.png")
        mask = read_mask(root / f"{i}_mask.png", deepglobe.SCHEMA)
        labelled = points != IGNORE_INDEX
        valid = int((mask != IGNORE_INDEX).sum())
        assert valid == 64 * 64 - 16
        assert labelled.sum() == round(0.01 * valid) == summary["points_per_image"][f"{i}_sat"] == 41
        np.testing.assert_array_equal(points[labelled], mask[labelled])
        assert len(json.loads((out / f"{i}_sat.geojson").read_text())["features"]) == labelled.sum()
        totals += np.bincount(points[labelled], minlength=6)
        valid_pixels += valid
    assert list(summary["points_per_class"].values()) == totals.tolist()
    assert summary["points"] == totals.sum() == 123
    assert abs(summary["labelled_fraction_of_valid_pixels"] - 0.01) <= 0.0005  # within 0.05 percentage points
    assert summary["labelled_fraction_of_valid_pixels"] == 123 / valid_pixels
    assert f"123 points (density 1%, seed 0) on 3 image(s) -> {out}" in stdout.replace("\n", "")


def test_points_simulate_per_class_counts_are_exact(cli, tmp_path) -> None:
    root = write_deepglobe(tmp_path / "data", count=2, size=64)
    out = tmp_path / "points"
    code, _, _ = cli(
        "points",
        "simulate",
        root,
        "-f",
        "deepglobe",
        "--out",
        out,
        "--strategy",
        "per-class",
        "--per-class",
        "7",
    )
    assert code == 0
    expected = np.zeros(6, dtype=np.int64)
    for i in (100, 101):
        mask = read_mask(root / f"{i}_mask.png", deepglobe.SCHEMA)
        present = np.bincount(mask[mask != IGNORE_INDEX], minlength=6) > 0  # each class present has >= 64 px
        points = label_map(out / f"{i}_sat.png")
        np.testing.assert_array_equal(np.bincount(points[points != IGNORE_INDEX], minlength=6), 7 * present)
        expected += 7 * present
    assert (
        list(json.loads((out / "summary.json").read_text())["points_per_class"].values()) == expected.tolist()
    )


def test_points_simulate_georeferenced_images_write_geotiffs(cli, tmp_path) -> None:
    root, schema_path = write_folder_dataset(tmp_path / "data", bands=13, dtype="float32")
    out = tmp_path / "points"
    code, _, _ = cli("points", "simulate", root, "-f", "folder", "--schema", schema_path, "--out", out)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "scene_0.geojson",
        "scene_0.tif",
        "scene_1.geojson",
        "scene_1.tif",
        "summary.json",
    ]
    for i in range(2):
        with (
            rasterio.open(out / f"scene_{i}.tif") as labels,
            rasterio.open(root / "images" / f"scene_{i}.tif") as image,
        ):
            assert (labels.crs, labels.transform, labels.shape) == (image.crs, image.transform, image.shape)


def test_points_simulate_same_seed_gives_identical_files(cli, tmp_path) -> None:
    root = write_deepglobe(tmp_path / "data", count=2, size=32)
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        code, _, _ = cli(
            "points",
            "simulate",
            root,
            "-f",
            "deepglobe",
            "--out",
            tmp_path / name,
            "--seed",
            seed,
            "--density",
            "0.1",
        )
        assert code == 0
        runs[name] = snapshot(tmp_path / name)
    assert runs["a"] == runs["b"]
    assert runs["a"]["100_sat.png"] != runs["c"]["100_sat.png"]


def test_points_simulate_bad_mask_leaves_out_folder_unchanged(cli, tmp_path) -> None:
    root = write_deepglobe(tmp_path / "data", count=3, size=32)
    bad = rgb_mask(np.zeros((32, 32), dtype=np.uint8), deepglobe.SCHEMA)
    bad[:, 5:7, :] = np.array([9, 9, 9], dtype=np.uint8)[:, None, None]
    write_raster(root / "101_mask.png", bad)  # the second of three
    out = tmp_path / "points"
    out.mkdir()
    (out / "100_sat.png").write_bytes(b"from an earlier run")
    (out / "notes.txt").write_bytes(b"mine")
    code, _, err = cli("points", "simulate", root, "-f", "deepglobe", "--out", out, "--overwrite")
    assert code == 1
    assert err.startswith(f"error: {root / '101_mask.png'}: 1 mask colour(s) not in the 'deepglobe' schema")
    assert "#090909 (9, 9, 9): 64 px" in err
    assert snapshot(out) == {"100_sat.png": b"from an earlier run", "notes.txt": b"mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "points"]  # no staging folder left


def test_points_simulate_refuses_a_used_folder_unless_told_to_replace_it(cli, tmp_path) -> None:
    root = write_deepglobe(tmp_path / "data", count=2, size=32)
    out = tmp_path / "points"
    out.mkdir()
    (out / "stale.png").write_bytes(b"from another run")
    code, _, err = cli("points", "simulate", root, "-f", "deepglobe", "--out", out)
    assert code == 1 and "folder is not empty" in err and "--overwrite" in err
    assert snapshot(out) == {"stale.png": b"from another run"}
    code, _, _ = cli("points", "simulate", root, "-f", "deepglobe", "--out", out, "--overwrite")
    assert code == 0
    assert sorted(snapshot(out)) == [
        "100_sat.geojson",
        "100_sat.png",
        "101_sat.geojson",
        "101_sat.png",
        "summary.json",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "points"]  # nothing retired left behind


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--strategy", "random"], "strategy 'random'; expected one of density, per-class, per-region"),
        (["--density", "0"], "density 0.0; expected a fraction of the valid pixels in (0, 1]"),
        (["--density", "1.5"], "density 1.5"),
        (["--per-class", "0", "--strategy", "per-class"], "per_class 0; expected an integer >= 1"),
        (["--min-area", "0"], "min_area 0"),
        (["--seed", "-1"], "seed -1"),
    ],
)
def test_points_simulate_bad_protocol(cli, tmp_path, option: list[str], expected: str) -> None:
    root = write_deepglobe(tmp_path / "data", count=1, size=16)
    code, _, err = cli("points", "simulate", root, "-f", "deepglobe", "--out", tmp_path / "points", *option)
    assert code == 1
    assert expected in err
    assert not (tmp_path / "points").exists()


def test_points_simulate_usage_error(cli, tmp_path) -> None:
    code, _, err = cli(
        "points", "simulate", tmp_path, "-f", "deepglobe", "--out", tmp_path / "p", "--density", "lots"
    )
    assert code == 2
    assert "--density" in err


# ---------------------------------------------------------------- points import


@pytest.fixture
def simulated(cli, tmp_path):
    """A folder dataset with points simulated at 5% (80 points per image)."""
    root, schema_path = write_folder_dataset(tmp_path / "data", bands=3, dtype="uint8")
    code, _, _ = cli(
        "points",
        "simulate",
        root,
        "-f",
        "folder",
        "--schema",
        schema_path,
        "--out",
        tmp_path / "sim",
        "--density",
        "0.05",
    )
    assert code == 0
    return root, schema_path, tmp_path / "sim"


def test_points_import_reproduces_the_label_map(cli, tmp_path, simulated) -> None:
    root, schema_path, sim = simulated
    out = tmp_path / "imported"
    code, stdout, err = cli(
        "points",
        "import",
        sim / "scene_0.geojson",
        "--image",
        root / "images" / "scene_0.tif",
        "--schema",
        schema_path,
        "--out",
        out,
    )
    assert (code, err) == (0, "")
    assert "kept 80 of 80 points" in stdout
    np.testing.assert_array_equal(label_map(out / "scene_0.tif"), label_map(sim / "scene_0.tif"))
    assert json.loads((out / "summary.json").read_text())["points"] == 80


def test_points_import_class_field(cli, tmp_path, simulated) -> None:
    root, schema_path, sim = simulated
    collection = json.loads((sim / "scene_0.geojson").read_text())
    for feature in collection["features"]:
        properties = feature["properties"]
        feature["properties"] = {"landcover": f" {properties['class'].upper()} "}
    points = tmp_path / "landcover.geojson"
    points.write_text(json.dumps(collection))
    image = root / "images" / "scene_0.tif"
    out = tmp_path / "imported"
    args = ("points", "import", points, "--image", image, "--schema", schema_path, "--out", out)
    code, _, err = cli(*args)
    assert code == 1 and not out.exists(), err
    assert "found neither class nor class_index" in err
    code, stdout, err = cli(*args, "--class-field", "landcover")
    assert (code, err) == (0, "")
    assert "kept 80 of 80 points" in stdout
    np.testing.assert_array_equal(label_map(out / "scene_0.tif"), label_map(sim / "scene_0.tif"))


def test_points_import_of_pixel_geojson(cli, tmp_path) -> None:
    root = write_deepglobe(tmp_path / "data", count=1, size=32)
    code, _, _ = cli(
        "points", "simulate", root, "-f", "deepglobe", "--out", tmp_path / "sim", "--density", "0.05"
    )
    assert code == 0
    code, _, _ = cli(
        "points",
        "import",
        tmp_path / "sim" / "100_sat.geojson",
        "--image",
        root / "100_sat.jpg",
        "-f",
        "deepglobe",
        "--out",
        tmp_path / "imported",
    )
    assert code == 0
    np.testing.assert_array_equal(
        label_map(tmp_path / "imported" / "100_sat.png"), label_map(tmp_path / "sim" / "100_sat.png")
    )


def test_points_import_of_a_file_without_points_is_an_error(cli, tmp_path) -> None:
    root = write_deepglobe(tmp_path / "data", count=1, size=32)
    header_only = tmp_path / "points.csv"
    header_only.write_text("col,row,class\n")
    code, _, err = cli(
        "points", "import", header_only, "--image", root / "100_sat.jpg", "-f", "deepglobe",
        "--out", tmp_path / "imported",
    )  # fmt: skip
    assert code == 1
    assert err.startswith(f"error: {header_only}: holds no points; expected at least one clicked point")
    assert not (tmp_path / "imported").exists()


def add_outside_point(path: Path) -> Path:
    collection = json.loads(path.read_text())
    x, y = collection["features"][0]["geometry"]["coordinates"]
    collection["features"].append(
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [x + 10_000, y]},  # 1 km east of a 400 m image
            "properties": {"class": "a", "class_index": 0},
        }
    )
    edited = path.with_name("edited.geojson")
    edited.write_text(json.dumps(collection))
    return edited


def test_points_import_point_outside_the_image(cli, tmp_path, simulated) -> None:
    root, schema_path, sim = simulated
    points = add_outside_point(sim / "scene_0.geojson")
    out = tmp_path / "imported"
    code, _, err = cli(
        "points",
        "import",
        points,
        "--image",
        root / "images" / "scene_0.tif",
        "--schema",
        schema_path,
        "--out",
        out,
    )
    assert code == 1
    assert err.startswith(f"error: {points}: 1 of 81 points are invalid")
    assert "outside the image (feature 81)" in err
    assert "--skip-invalid" in err
    assert not out.exists()

    code, stdout, _ = cli(
        "points",
        "import",
        points,
        "--image",
        root / "images" / "scene_0.tif",
        "--schema",
        schema_path,
        "--out",
        out,
        "--skip-invalid",
    )
    assert code == 0
    assert "kept 80 of 81 points; dropped 1 outside the image (feature 81)" in stdout
    assert "80 points written" in stdout
    np.testing.assert_array_equal(label_map(out / "scene_0.tif"), label_map(sim / "scene_0.tif"))


def test_points_import_needs_classes(cli, tmp_path, simulated) -> None:
    root, _, sim = simulated
    code, _, err = cli(
        "points",
        "import",
        sim / "scene_0.geojson",
        "--image",
        root / "images" / "scene_0.tif",
        "--out",
        tmp_path / "imported",
    )
    assert code == 1
    assert err.startswith("error: no classes given: give --schema FILE, or --format ") and "None" not in err
    assert not (tmp_path / "imported").exists()


def test_points_simulate_overwrite_never_replaces_a_file(cli, tmp_path) -> None:
    """Regression (issue 11): ``--overwrite --out FILE`` deleted the file and put a folder there."""
    root = write_deepglobe(tmp_path / "data", count=1, size=16)
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    for extra in ([], ["--overwrite"]):
        code, _, err = cli("points", "simulate", root, "-f", "deepglobe", "--out", out, *extra)
        assert code == 1
        assert err.startswith(f"error: {out}: is a file, not a folder")
        assert out.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.txt"]


def test_points_simulate_overwrite_keeps_the_folder_permissions(cli, tmp_path) -> None:
    """Regression (issue 11): the replaced folder became drwx------."""
    root = write_deepglobe(tmp_path / "data", count=1, size=16)
    out = tmp_path / "points"
    out.mkdir()
    (out / "stale.png").write_bytes(b"old")
    out.chmod(0o750)
    code, _, _ = cli("points", "simulate", root, "-f", "deepglobe", "--out", out, "--overwrite")
    assert code == 0
    assert not (out / "stale.png").exists()
    assert stat.S_IMODE(out.stat().st_mode) == 0o750


def test_points_simulate_prints_progress_lines_when_stdout_is_not_a_terminal(cli, tmp_path) -> None:
    root = write_deepglobe(tmp_path / "data", count=3, size=16)
    code, out, _ = cli("points", "simulate", root, "-f", "deepglobe", "--out", tmp_path / "points")
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("simulating points:")]
    assert [line.split(" (")[0] for line in lines] == [f"simulating points: {i}/3 images" for i in (1, 2, 3)]
    assert all(re.search(r"\d+:\d\d elapsed, about \d+:\d\d left$", line) for line in lines)
    assert lines[-1].endswith("about 0:00 left")


def test_points_commands_report_a_non_utf8_schema_as_an_error_line(cli, tmp_path) -> None:
    """Regression (issue 11): a UnicodeDecodeError traceback."""
    schema = tmp_path / "latin1.yaml"
    schema.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    code, _, err = cli(
        "points", "simulate", tmp_path, "-f", "folder", "--schema", schema, "--out", tmp_path / "p"
    )
    assert code == 1
    assert err.startswith(f"error: {schema}: not UTF-8 text")
    assert "Traceback" not in err


# ---------------------------------------------------------------- start-up


HELP_WITHOUT_TORCH = """
import runpy, sys
sys.argv = ["pointseg", "--help"]
try:
    {run}
except SystemExit as done:
    assert done.code in (0, None), done.code
heavy = [name for name in ("torch", "lightning", "matplotlib", "rasterio") if name in sys.modules]
print("heavy:", heavy)
"""


@pytest.mark.parametrize(
    "run",
    [
        "from pointseg.cli import main; main()",  # what the `pointseg` console script runs
        "runpy.run_module('pointseg', run_name='__main__')",  # python -m pointseg
    ],
)
def test_help_imports_no_torch(run: str) -> None:
    code = HELP_WITHOUT_TORCH.format(run=run)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Commands" in result.stdout and "evaluate" in result.stdout
    assert result.stdout.strip().endswith("heavy: []")


def test_data_check_with_points_counts_images_without_masks(cli, tmp_path) -> None:
    write_deepglobe(tmp_path, count=3, size=16)
    for mask in tmp_path.glob("*_mask.png"):
        mask.unlink()
    points = tmp_path / "clicks.geojson"
    points.write_text('{"type": "FeatureCollection", "features": []}')
    code, out, _ = cli("data", "check", tmp_path, "-f", "deepglobe", "--points", points)
    flat = " ".join(out.split())
    assert code == 0, out
    assert "3 image(s), 3 sample(s)" in flat and "info: 3 image(s) without a mask" in flat
    assert "no problems found" in flat
    code, out, _ = cli("data", "check", tmp_path, "-f", "deepglobe")
    flat = " ".join(out.split())
    assert code == 1 and "3 image(s), 3 sample(s)" in flat and "3 problem(s):" in flat
    code, _, err = cli("data", "check", tmp_path, "-f", "deepglobe", "--points", tmp_path / "none.geojson")
    assert code == 1 and "--points" in err and "none.geojson" in err
