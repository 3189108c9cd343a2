"""docs/experiments/fold_table.py: one table over density sweeps that hold out different tiles."""

import csv
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "experiments" / "fold_table.py"


def write_sweep(folder: Path, test_tile: str, train_tiles: list[str], scores: dict[str, float]) -> Path:
    """A density sweep's results.csv and one run folder's environment.json."""
    run = folder / "runs" / "per-class-10-seed0"
    run.mkdir(parents=True)
    splits = {
        "train": [f"{tile}/image_part_001" for tile in train_tiles],
        "test": [f"{test_tile}/image_part_002"],
    }
    (run / "environment.json").write_text(json.dumps({"splits": splits}))
    with (folder / "results.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, ["regime", "miou", "iou_land", "iou_water", "run_dir"])
        writer.writeheader()
        for regime, miou in scores.items():
            run_dir = run if regime == "10 / class" else folder / "runs" / "forest"
            writer.writerow(
                {"regime": regime, "miou": miou, "iou_land": miou / 2, "iou_water": 1.0, "run_dir": run_dir}
            )
    return folder


def test_rows_per_fold_and_mean_per_regime_and_variant(tmp_path: Path) -> None:
    first = write_sweep(
        tmp_path / "a", "Tile 5", ["Tile 1", "Tile 7"], {"10 / class": 0.3, "forest (10 / class)": 0.4}
    )
    second = write_sweep(
        tmp_path / "b", "Tile 7", ["Tile 1", "Tile 5"], {"10 / class": 0.5, "forest (10 / class)": 0.4}
    )
    zoomed = write_sweep(tmp_path / "c", "Tile 7", ["Tile 1", "Tile 5"], {"10 / class": 0.6})
    out = tmp_path / "table"
    command = [sys.executable, str(SCRIPT), str(out), str(first), str(second), f"zoom=0.5={zoomed}"]
    subprocess.run(command, check=True, capture_output=True)
    lines = (out / "results.md").read_text().splitlines()
    assert "| 10 / class | base | Tile 5 | Tile 1, Tile 7 | 30.0 | 15.0 | 100.0 |" in lines
    assert "| 10 / class | zoom=0.5 | Tile 7 | Tile 1, Tile 5 | 60.0 | 30.0 | 100.0 |" in lines
    assert "| 10 / class | base | 2 | 40.0 ± 14.1 | 30.0 | 50.0 |" in lines
    assert "| forest (10 / class) | base | 2 | 40.0 ± 0.0 | 40.0 | 40.0 |" in lines
    assert "| 10 / class | zoom=0.5 | 1 | 60.0 | 60.0 | 60.0 |" in lines
    assert not list(out.glob("*.tmp"))


def test_a_folder_without_results_is_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "table"), str(empty)], capture_output=True, text=True
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"{empty / 'results.csv'}: not readable" in result.stderr
    missing = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "table"), str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode != 0 and "usage:" in missing.stderr


def test_a_results_table_without_the_sweep_columns_is_named(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "results.csv").write_text("name,score\na,1\n")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "table"), str(sweep)], capture_output=True, text=True
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "regime, miou and run_dir columns" in result.stderr
    assert not (tmp_path / "table").exists()
