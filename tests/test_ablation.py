import csv
from pathlib import Path

import pytest
import yaml

from pointseg.ablation import ablation, read_ablation
from pointseg.errors import PointsegError
from test_experiments import CPU_SMALL, small_overrides


def write_config(tmp_path: Path, section: object) -> Path:
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump({"extends": str(CPU_SMALL), "experiment": {"ablation": section}}))
    return path


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (None, "no experiment.ablation section"),
        ({"regime": "dense", "steps": [{"name": "base"}]}, "expected a point regime"),
        ({"regime": "forest:per-class:10", "steps": [{"name": "base"}]}, "expected a point regime"),
        ({"regime": "per-class:10", "steps": [{"name": "a"}, {"name": "A"}]}, "the name 'a' is used twice"),
        ({"regime": "per-class:10", "steps": []}, "experiment.ablation.steps: List should have at least 1"),
        ({"regime": "per-class:10", "steps": [{"name": "../x"}]}, "experiment.ablation.steps.0.name"),
        (
            {"regime": "per-class:10", "steps": [{"name": "a", "sett": []}]},
            "experiment.ablation.steps.0.sett",
        ),
        ({"regime": "nonsense:1", "steps": [{"name": "a"}]}, "regime 'nonsense:1'"),
        (
            {"regime": "per-class:10", "steps": [{"name": "a", "builds_on": "b"}, {"name": "b"}]},
            "steps.0.builds_on 'b'",
        ),
    ],
)
def test_bad_ablation_sections_name_the_field(tmp_path: Path, section: object, message: str) -> None:
    with pytest.raises(PointsegError, match=message.replace("(", r"\(").replace(".", r"\.")):
        read_ablation(write_config(tmp_path, section))


def test_steps_read_with_their_settings(tmp_path: Path) -> None:
    section = read_ablation(
        write_config(
            tmp_path,
            {
                "regime": "per-class:10",
                "steps": [{"name": "base"}, {"name": "more", "set": ["loss.name=pfce"]}],
            },
        )
    )
    assert [(step.name, step.settings) for step in section.steps] == [
        ("base", []),
        ("more", ["loss.name=pfce"]),
    ]


@pytest.mark.integration
def test_each_step_adds_its_settings_and_the_table_reports_every_run(
    fake_deepglobe: Path, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path,
        {
            "regime": "density:0.2",
            "steps": [
                {"name": "base"},
                {"name": "focal", "set": ["loss.name=pfce"]},
                {"name": "flat", "set": ["augment.flips=false"]},
                {"name": "flat-only", "builds_on": "base", "set": ["augment.flips=false"]},
            ],
        },
    )
    out = tmp_path / "out"
    rows = ablation(
        config, out, [0], small_overrides(fake_deepglobe), progress=False, announce=lambda _: None
    )

    steps = ["base", "focal", "flat", "flat-only"]
    assert [row.name for row in rows] == [*steps, "pixel random forest (points of base)"]
    assert [row.on.name if row.on else None for row in rows] == [None, "base", "focal", "base", None]
    saved = {
        step: yaml.safe_load((out / step / "runs" / "density-0.2-seed0" / "config.yaml").read_text())
        for step in steps
    }
    # each step adds to the one above it, or to the one named by `builds_on`
    assert [saved[s]["loss"]["name"] for s in steps] == ["pce", "pfce", "pfce", "pce"]
    assert [saved[s]["augment"]["flips"] for s in steps] == [True, True, False, False]
    assert (out / "base" / "runs" / "forest-density-0.2-seed0" / "test_evaluation.json").is_file()
    assert not (out / "focal" / "runs" / "forest-density-0.2-seed0").exists()

    with (out / "ablation.csv").open(newline="") as file:
        table = list(csv.DictReader(file))
    for row, step in zip(table[:3], ("base", "focal", "flat"), strict=True):
        with (out / step / "results.csv").open(newline="") as file:
            assert float(row["miou_mean"]) == pytest.approx(float(next(csv.DictReader(file))["miou"]))
    markdown = (out / "ablation.md").read_text()
    lines = {line.split("|")[1].strip(): line for line in markdown.splitlines() if line.startswith("| ")}
    change = (float(table[1]["miou_mean"]) - float(table[0]["miou_mean"])) * 100
    assert f"| {change:+.1f} |" in lines["focal"]
    change = (float(table[3]["miou_mean"]) - float(table[0]["miou_mean"])) * 100
    assert (
        lines["flat-only"].startswith("| flat-only | base |") and f"| {change:+.1f} |" in lines["flat-only"]
    )

    checkpoint = out / "focal" / "runs" / "density-0.2-seed0" / "checkpoints" / "last.ckpt"
    before = checkpoint.stat().st_mtime_ns
    ablation(config, out, [0], small_overrides(fake_deepglobe), progress=False, announce=lambda _: None)
    assert checkpoint.stat().st_mtime_ns == before  # finished steps are kept, not trained again


def test_the_shipped_dubai_ablation_reads_with_its_branches() -> None:
    section = read_ablation(CPU_SMALL.parent / "dubai_ablation.yaml")
    assert [(step.name, step.builds_on) for step in section.steps] == [
        ("base", None),
        ("pretrained", None),
        ("expansion", None),
        ("propagation", "pretrained"),
        ("self-training", "pretrained"),
        ("flips", "pretrained"),
        ("flips+self-training", "flips"),
        ("flips+self-training+balance", None),
        ("flips+top-share-self-training", "flips"),
    ]


def test_cli_errors_keep_their_brackets(tmp_path: Path, cli) -> None:
    config = write_config(tmp_path, None)  # "no experiment.ablation section; expected '...set: [...]'"
    code, _, err = cli("experiment", "ablation", "--config", config, "--out", tmp_path / "out")
    assert code == 1
    assert "error:" in err and "set: [model.weights=imagenet]" in " ".join(err.split())
