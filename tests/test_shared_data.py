"""The end-to-end checks on the real samples in ../shared/data (see its README)."""

import json
import re
import shutil
import sys

import numpy as np
import pytest
import rasterio

from fake_data import SHARED_DATA
from pointseg.cli import main
from pointseg.datasets import deepglobe
from pointseg.raster import read_mask
from pointseg.schema import IGNORE_INDEX

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"the shared real data is not at {SHARED_DATA}"),
]
DEEPGLOBE = SHARED_DATA / "deepglobe" / "train"
DUBAI = SHARED_DATA / "dubai_aerial"


def run(monkeypatch, capsys, *args: object) -> str:
    monkeypatch.setattr(sys, "argv", ["pointseg", *map(str, args)])
    capsys.readouterr()
    main()  # raises SystemExit on any error or problem
    return capsys.readouterr().out


def printed_shares(out: str) -> dict[str, str]:
    return dict(re.findall(r"│ (\S+)\s*│\s*[\d,]+ │\s*([\d.]+%) │", out))


def test_deepglobe_check_matches_the_readme(monkeypatch, capsys) -> None:
    out = run(monkeypatch, capsys, "data", "check", DEEPGLOBE, "--format", "deepglobe")
    assert "10 image(s), 10 sample(s)" in out
    assert "2448x2448 (10)" in out
    assert printed_shares(out) == {
        "urban_land": "26.6%",
        "agriculture": "7.7%",
        "rangeland": "21.8%",
        "forest": "10.8%",
        "water": "24.6%",
        "barren": "7.9%",
        "(ignored)": "0.7%",
    }
    assert "no problems found" in out


def test_dubai_check_matches_the_readme(monkeypatch, capsys) -> None:
    out = run(monkeypatch, capsys, "data", "check", DUBAI, "--format", "dubai")
    assert "54 image(s), 54 sample(s)" in out
    shares = printed_shares(out)
    assert {k: shares[k] for k in ("building", "land", "road", "vegetation", "water")} == {
        "land": "55.8%",
        "water": "15.8%",
        "building": "10.9%",
        "vegetation": "8.8%",
        "road": "8.5%",
    }
    assert "no problems found" in out


def test_points_simulate_on_deepglobe(monkeypatch, capsys, tmp_path) -> None:
    out_dir = tmp_path / "points"
    run(
        monkeypatch,
        capsys,
        "points",
        "simulate",
        DEEPGLOBE,
        "-f",
        "deepglobe",
        "--out",
        out_dir,
        "--density",
        "0.01",
    )
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["images"] == 10
    assert abs(summary["labelled_fraction_of_valid_pixels"] - 0.01) < 1e-5
    for image_id in sorted(summary["points_per_image"])[:2]:
        mask = read_mask(DEEPGLOBE / image_id.replace("_sat", "_mask.png"), deepglobe.SCHEMA)
        with rasterio.open(out_dir / f"{image_id}.png") as dataset:
            points = dataset.read(1)
        labelled = points != IGNORE_INDEX
        valid = int((mask != IGNORE_INDEX).sum())
        assert labelled.sum() == summary["points_per_image"][image_id] == round(0.01 * valid)
        np.testing.assert_array_equal(points[labelled], mask[labelled])  # every point on its class
    shutil.rmtree(out_dir)  # 80 MB of GeoJSON
