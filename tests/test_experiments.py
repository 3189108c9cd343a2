import contextlib
import csv
import io
import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import pointseg.experiments as experiments
from pointseg.cli import main
from pointseg.errors import PointsegError
from pointseg.experiments import (
    DEFAULT_REGIMES,
    RunResult,
    density_sweep,
    parse_regime,
    parse_regimes,
    plan_density_sweep,
    read_experiment_section,
    results_markdown,
    summarise,
    write_density_summary,
)
from pointseg.runs import RUN_DIR_VARIABLE

CPU_SMALL = Path(__file__).resolve().parents[1] / "configs" / "cpu_small.yaml"


def small_overrides(data: Path) -> list[str]:
    """The shipped small CPU config, pointed at tiny fake rasters and shrunk to seconds."""
    return [
        f"data.root={data}", "data.val=['102']", "data.test=['103']", "data.crop_size=64",
        "data.crops_per_image=2", "data.batch_size=4", "data.num_workers=0", "eval.tile=64",
        "trainer.max_epochs=1", "trainer.precision=32-true", "trainer.log_every_n_steps=1",
    ]  # fmt: skip


@dataclass
class CliSweep:
    out: Path
    code: int
    printed: str


@pytest.fixture(scope="module")
def sweep(fake_deepglobe: Path, tmp_path_factory: pytest.TempPathFactory) -> CliSweep:
    """A sweep run by ``pointseg experiment density``: density 20% and dense masks, seed 0, one epoch."""
    out = tmp_path_factory.mktemp("sweep")
    sets = [arg for value in small_overrides(fake_deepglobe) for arg in ("--set", value)]
    args = ["experiment", "density", "--config", str(CPU_SMALL), "--out", str(out),
            "--regimes", "density:0.2", "dense", "--seeds", "0", "--no-progress", *sets]  # fmt: skip
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.delenv(RUN_DIR_VARIABLE, raising=False)
        code = run_cli(patch, *args)
    return CliSweep(out, code, " ".join(printed.getvalue().split()))


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: object) -> int:
    """Run ``pointseg ARGS...`` in-process; return its exit status."""
    monkeypatch.setattr(sys, "argv", ["pointseg", *map(str, args)])
    try:
        main()
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else int(done.code is not None)
    return 0


def copy_sweep(sweep: Path, tmp_path: Path, copied_run: str | None = None) -> Path:
    """Hard-link a finished sweep (its files are only ever replaced, never written in place) ...

    ... except ``copied_run``, copied for real: resumed training writes its checkpoints in place.
    """
    out = tmp_path / "sweep"
    shutil.copytree(sweep, out, copy_function=os.link)
    if copied_run is not None:
        shutil.rmtree(out / "runs" / copied_run)
        shutil.copytree(sweep / "runs" / copied_run, out / "runs" / copied_run)
    return out


def rerun(
    sweep: CliSweep, out: Path, regimes: Sequence[str] = ("density:0.2", "dense"), *extra: str, **kwargs
):
    """Run the sweep of ``sweep`` again into ``out`` (a copy), from the API."""
    overrides = [*json.loads((sweep.out / "sweep.json").read_text())["overrides"], *extra]
    return density_sweep(CPU_SMALL, out, list(regimes), [0], overrides, progress=False, **kwargs)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def markdown_rows(text: str) -> dict[str, list[str]]:
    """First table of results.md: regime name -> cells."""
    rows = text.split("\n\n")[2].splitlines()[2:]
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    return {row[0]: row[1:] for row in cells}


# ------------------------------------------------------------------------------------------ regimes


@pytest.mark.parametrize(
    ("text", "name", "slug", "settings"),
    [
        ("density:0.01", "1%", "density-0.01", {"strategy": "density", "density": 0.01}),
        ("density:0.1", "10%", "density-0.1", {"strategy": "density", "density": 0.1}),
        ("per-class:10", "10 / class", "per-class-10", {"strategy": "per-class", "per_class": 10}),
        ("per-region:100", "1 / region", "per-region-100", {"strategy": "per-region", "min_area": 100}),
        ("per-region:50", "1 / region (min 50 px)", "per-region-50", {"min_area": 50}),
        ("points:/data/clicked", "points (clicked)", "points-clicked", {"directory": "/data/clicked"}),
    ],
)
def test_point_regimes_parse(text: str, name: str, slug: str, settings: dict) -> None:
    regime = parse_regime(text)
    assert (regime.name, regime.slug, regime.dense) == (name, slug, False)
    assert regime.settings["supervision"] == "points"
    assert settings.items() <= regime.settings["points"].items()


def test_dense_regime_trains_on_masks_with_cross_entropy() -> None:
    regime = parse_regime("dense")
    assert (regime.name, regime.slug, regime.dense) == ("dense", "dense", True)
    assert (regime.settings["supervision"], regime.settings["loss"]) == ("dense", {"name": "ce"})
    assert regime.settings["self_training"]["rounds"] == 0


def test_self_training_in_the_base_config_applies_to_point_regimes_only(
    fake_deepglobe: Path, tmp_path: Path
) -> None:
    overrides = [*small_overrides(fake_deepglobe), "self_training.rounds=1"]
    plan = plan_density_sweep(CPU_SMALL, tmp_path, ["per-class:5", "dense"], [0], overrides)
    points, dense = (run.config for run in plan.runs)
    assert (points.supervision, points.self_training.rounds) == ("points", 1)
    assert (dense.supervision, dense.self_training.rounds) == ("dense", 0)


def test_a_dense_run_does_not_depend_on_the_sweeps_self_training_settings(
    fake_deepglobe: Path, tmp_path: Path
) -> None:
    """So that a finished dense run is reused by a sweep that only changes how self-training works."""
    plain = plan_density_sweep(CPU_SMALL, tmp_path, ["dense"], [0], small_overrides(fake_deepglobe))
    tuned = [
        *small_overrides(fake_deepglobe),
        "self_training.rounds=1",
        "self_training.selection=top-share",
        "self_training.top_share=0.3",
        "self_training.max_epochs=5",
    ]
    with_self_training = plan_density_sweep(CPU_SMALL, tmp_path, ["dense"], [0], tuned)
    assert with_self_training.runs[0].config == plain.runs[0].config


def test_default_regimes_have_the_reference_names() -> None:
    names = [regime.name for regime in parse_regimes(DEFAULT_REGIMES)]
    assert names == ["1%", "5%", "10%", "10 / class", "50 / class", "1 / region", "dense"]


@pytest.mark.parametrize(
    "text",
    ["density:2", "density:0", "density:abc", "density", "per-class:0", "per-class:1.5", "per-region:x",
     "sparse:3", "dense:1", "points:", ""],
)  # fmt: skip
def test_bad_regime_names_the_string_and_the_accepted_forms(text: str) -> None:
    with pytest.raises(PointsegError, match=re.escape(f"regime {text!r}") + r".*density:FRACTION.*dense"):
        parse_regime(text)


def test_repeated_regime_is_an_error() -> None:
    with pytest.raises(PointsegError, match="same regime"):
        parse_regimes(["density:0.1", "density:0.10"])


# ------------------------------------------------------------------------------------------ planning


def test_plan_reads_regimes_and_seeds_from_the_config(fake_deepglobe: Path, tmp_path: Path) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text(
        f"extends: {CPU_SMALL}\nloss: {{name: pfce}}\n"
        "experiment:\n  regimes: [per-class:5, dense]\n  seeds: [3, 4]\n"
    )
    plan = plan_density_sweep(config, tmp_path / "out", overrides=small_overrides(fake_deepglobe))
    assert [r.spec for r in plan.regimes] == ["per-class:5", "dense"] and plan.seeds == [3, 4]
    assert [run.run_dir.name for run in plan.runs] == [
        "per-class-5-seed3", "per-class-5-seed4", "dense-seed3", "dense-seed4",
    ]  # fmt: skip
    points, dense = plan.runs[1].config, plan.runs[2].config
    assert (points.seed, points.points.seed) == (4, 4)
    assert (points.points.strategy, points.points.per_class) == ("per-class", 5)
    assert (points.supervision, points.loss.name) == ("points", "pfce")  # the base config's loss
    assert (dense.supervision, dense.loss.name) == ("dense", "ce")
    assert plan.runs[0].run_dir == tmp_path / "out" / "runs" / "per-class-5-seed3"
    assert [ref.id for ref in plan.splits["test"]] == ["103_sat"]
    # Command-line regimes and seeds win over the config's.
    plan = plan_density_sweep(config, tmp_path, ["density:0.05"], [7], small_overrides(fake_deepglobe))
    assert [run.run_dir.name for run in plan.runs] == ["density-0.05-seed7"]


def test_plan_defaults_to_all_seven_regimes_and_the_config_seed(fake_deepglobe: Path, tmp_path: Path) -> None:
    plan = plan_density_sweep(CPU_SMALL, tmp_path, overrides=[*small_overrides(fake_deepglobe), "seed=5"])
    assert [r.spec for r in plan.regimes] == list(DEFAULT_REGIMES) and plan.seeds == [5]


def test_plan_needs_a_test_split(fake_deepglobe: Path, tmp_path: Path) -> None:
    with pytest.raises(PointsegError, match="test split is empty"):
        plan_density_sweep(CPU_SMALL, tmp_path, overrides=[*small_overrides(fake_deepglobe), "data.test=[]"])


def test_plan_rejects_a_bad_experiment_section(fake_deepglobe: Path, tmp_path: Path) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text(f"extends: {CPU_SMALL}\nexperiment:\n  regimes: [{{density: 0.01}}]\n")
    with pytest.raises(PointsegError, match=r"experiment\.regimes"):
        plan_density_sweep(config, tmp_path, overrides=small_overrides(fake_deepglobe))


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ([1], "experiment section [1]"),
        ({"regime": ["dense"]}, "experiment.regime ['dense']"),
        ({"seeds": [True]}, "experiment.seeds [True]"),
        ({"seeds": "0"}, "experiment.seeds '0'"),
    ],
)
def test_experiment_section_errors_name_the_field_and_the_value(section: Any, named: str) -> None:
    with pytest.raises(PointsegError) as error:
        read_experiment_section({"experiment": section}, Path("sweep.yaml"))
    assert str(error.value).startswith(f"sweep.yaml: {named}: expected 'experiment: {{regimes:")


def test_experiment_section_is_removed_from_the_config_data() -> None:
    data = {"seed": 1, "experiment": {"regimes": ["dense"], "seeds": [0, 2]}}
    section = read_experiment_section(data, Path("sweep.yaml"))
    assert (section.regimes, section.seeds, data) == (["dense"], [0, 2], {"seed": 1})


# ------------------------------------------------------------------------------------------ sweep


@pytest.mark.integration
def test_cli_sweep_trains_each_regime_and_writes_every_output(sweep: CliSweep) -> None:
    assert sweep.code == 0
    assert "regime 1/2: 20% (density 20%), seed 0" in sweep.printed
    assert "regime 2/2: dense (dense masks), seed 0" in sweep.printed
    assert f"results: {sweep.out}" in sweep.printed
    for name in ("results.csv", "results.md", "density_summary.csv", "density.png", "qualitative.png"):
        assert (sweep.out / name).is_file(), name
    assert sorted(p.name for p in (sweep.out / "runs").iterdir()) == ["dense-seed0", "density-0.2-seed0"]
    record = json.loads((sweep.out / "sweep.json").read_text())  # what was asked, and when
    assert record["regimes"] == ["density:0.2", "dense"] and record["seeds"] == [0]
    assert record["config"] == str(CPU_SMALL) and "eval.tile=64" in record["overrides"] and record["finished"]
    assert "pointseg experiment density --config" in (sweep.out / "results.md").read_text()


@pytest.mark.integration
def test_results_are_test_evaluations_of_the_best_checkpoints(sweep: CliSweep) -> None:
    rows = read_csv(sweep.out / "results.csv")
    assert [(r["regime"], r["slug"], r["seed"]) for r in rows] == [
        ("20%", "density-0.2", "0"),
        ("dense", "dense", "0"),
    ]
    for row in rows:
        run_dir = Path(row["run_dir"])
        evaluation = json.loads((run_dir / "test_evaluation.json").read_text())
        assert evaluation["images"] == ["103_sat"]  # the test image, not the validation image 102
        assert Path(evaluation["checkpoint"]) == run_dir / "checkpoints" / "best.ckpt"
        assert float(row["miou"]) == evaluation["miou"] > 0
        assert float(row["accuracy"]) == evaluation["accuracy"]
        for name, iou in evaluation["per_class_iou"].items():
            assert row[f"iou_{name}"] == ("" if iou is None else str(iou))
        summary = json.loads((run_dir / "summary.json").read_text())
        assert float(row["best_val_miou"]) == summary["best_val_miou"]
        assert int(row["epochs"]) == summary["epochs"] == 1
        assert float(row["train_seconds"]) == summary["train_seconds"] and float(row["eval_seconds"]) > 0


@pytest.mark.integration
def test_labelled_fraction_is_measured_on_the_training_images(sweep: CliSweep) -> None:
    rows = {r["slug"]: r for r in read_csv(sweep.out / "results.csv")}
    points = rows["density-0.2"]
    assert float(points["labelled_fraction"]) == pytest.approx(0.2, abs=0.005)
    labels = json.loads((Path(points["run_dir"]) / "experiment.json").read_text())
    assert int(points["points"]) == labels["labelled_pixels"]
    assert labels["valid_pixels"] == 2 * (96 * 96 - 16)  # two training images less their ignored corners
    assert float(rows["dense"]["labelled_fraction"]) == 1.0 and rows["dense"]["points"] == ""


@pytest.mark.integration
def test_summary_and_markdown_agree_with_the_runs(sweep: CliSweep) -> None:
    miou = {r["regime"]: float(r["miou"]) for r in read_csv(sweep.out / "results.csv")}
    summary = {r["regime"]: r for r in read_csv(sweep.out / "density_summary.csv")}
    assert {name: float(row["miou_mean"]) for name, row in summary.items()} == miou
    assert summary["20%"]["labelled_fraction"] != "" and float(summary["dense"]["labelled_fraction"]) == 1.0
    assert summary["20%"]["miou_std"] == "" and (summary["dense"]["dense"], summary["20%"]["dense"]) == (
        "true",
        "false",
    )
    text = (sweep.out / "results.md").read_text()
    table = markdown_rows(text)
    assert table["dense"][:3] == ["100%", f"{miou['dense'] * 100:.1f}", "100.0%"]  # one seed: no ±
    assert re.fullmatch(r"20(\.\d+)?%", table["20%"][0])
    assert table["20%"][1:3] == [f"{miou['20%'] * 100:.1f}", f"{miou['20%'] / miou['dense'] * 100:.1f}%"]
    assert "## Test IoU per class (%)" in text and "| urban_land |" in text
    assert "CPU " in text and "torch " in text and "2 run(s) took" in text


@pytest.mark.integration
def test_two_seeds_report_mean_and_sample_std(fake_deepglobe: Path, tmp_path: Path) -> None:
    regimes = ["per-class:10", "density:0.2", "dense"]
    plan = plan_density_sweep(CPU_SMALL, tmp_path, regimes, [0, 1], small_overrides(fake_deepglobe))
    miou = {"per-class-10": (0.2, 0.3), "density-0.2": (0.4, 0.5), "dense": (0.6, 0.8)}
    fraction = {"per-class-10": 1.23e-5, "density-0.2": 0.2, "dense": 1.0}
    results = []
    for run in plan.runs:
        value = miou[run.regime.slug][run.seed]
        per_class = dict.fromkeys(plan.schema.classes, value)
        labelled = fraction[run.regime.slug]
        results.append(RunResult(run.regime, run.seed, run.run_dir, labelled, None, value, 0.9, per_class,
                                 None, 1, 60.0, 6.0))  # fmt: skip
    summaries = summarise(results)
    table = markdown_rows(results_markdown(plan, summaries))
    assert table["10 / class"] == ["0.00123%", "25.0 ± 7.1", "35.7%", "1.00"]
    assert table["20%"] == ["20%", "45.0 ± 7.1", "64.3%", "1.00"]
    assert table["dense"] == ["100%", "70.0 ± 14.1", "100.0%", "1.00"]
    assert "6 run(s) took 6.6 min (training 6.0, test evaluation 0.6)" in results_markdown(plan, summaries)
    write_density_summary(tmp_path / "summary.csv", summaries)
    stds = [float(row["miou_std"]) for row in read_csv(tmp_path / "summary.csv")]
    assert stds == pytest.approx([0.1 / 2**0.5, 0.1 / 2**0.5, 0.2 / 2**0.5])


@pytest.mark.integration
def test_rerun_of_a_finished_sweep_only_rewrites_reports(
    sweep: CliSweep, tmp_path: Path, monkeypatch
) -> None:
    out = copy_sweep(sweep.out, tmp_path)
    (out / "results.md").unlink()
    monkeypatch.setattr(experiments, "train", lambda *a, **k: pytest.fail("trained again"))
    monkeypatch.setattr(experiments, "total_report", lambda *a, **k: pytest.fail("evaluated again"))
    rerun(sweep, out)
    assert (out / "results.md").is_file()


@pytest.mark.integration
def test_trained_run_without_test_report_is_only_evaluated(
    sweep: CliSweep, tmp_path: Path, monkeypatch
) -> None:
    out = copy_sweep(sweep.out, tmp_path)
    report = out / "runs" / "density-0.2-seed0" / "test_evaluation.json"
    before = json.loads(report.read_text())
    report.unlink()
    monkeypatch.setattr(experiments, "train", lambda *a, **k: pytest.fail("trained again"))
    announced: list[str] = []
    rerun(sweep, out, announce=announced.append)
    after = json.loads(report.read_text())
    assert after["miou"] == before["miou"] and after["images"] == ["103_sat"]
    assert announced == [
        "regime 1/2: 20% (density 20%), seed 0: trained, evaluating",
        "regime 2/2: dense (dense masks), seed 0: finished, kept",
    ]


@pytest.mark.integration
def test_interrupted_training_is_resumed(sweep: CliSweep, tmp_path: Path, monkeypatch) -> None:
    out = copy_sweep(sweep.out, tmp_path, copied_run="dense-seed0")
    run_dir = out / "runs" / "dense-seed0"
    (run_dir / "summary.json").unlink()  # as if killed after the last checkpoint was written
    (run_dir / "test_evaluation.json").unlink()
    calls: list[Path | None] = []
    real_train = experiments.train

    def spy(config, resume=None, progress=True):  # type: ignore[no-untyped-def]
        calls.append(resume)
        return real_train(config, resume=resume, progress=progress)

    monkeypatch.setattr(experiments, "train", spy)
    announced: list[str] = []
    rerun(sweep, out, announce=announced.append)
    assert announced[1] == "regime 2/2: dense (dense masks), seed 0: resuming training"
    assert calls == [run_dir]
    assert (run_dir / "summary.json").is_file() and (run_dir / "test_evaluation.json").is_file()
    assert [r["run_dir"] for r in read_csv(out / "results.csv")][1] == str(run_dir)


@pytest.mark.integration
def test_run_stopped_before_its_last_checkpoint_is_reported(sweep: CliSweep, tmp_path: Path) -> None:
    out = copy_sweep(sweep.out, tmp_path)
    run_dir = out / "runs" / "dense-seed0"
    for name in ("summary.json", "test_evaluation.json", "checkpoints/last.ckpt"):
        (run_dir / name).unlink()
    with pytest.raises(
        PointsegError, match=r"dense-seed0: training stopped before writing checkpoints/last\.ckpt"
    ):
        rerun(sweep, out)


@pytest.mark.integration
def test_run_folder_with_other_settings_is_refused(sweep: CliSweep, tmp_path: Path) -> None:
    out = copy_sweep(sweep.out, tmp_path)
    with pytest.raises(PointsegError, match=r"dense-seed0 was trained with other settings \(optim\.lr\)"):
        rerun(sweep, out, ["dense"], "optim.lr=0.1")


def test_cli_takes_several_values_after_one_flag_and_rejects_a_bad_regime(
    fake_deepglobe: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    code = run_cli(
        monkeypatch, "experiment", "density", "--config", CPU_SMALL, "--out", tmp_path,
        "--regimes", "density:0.2", "dense", "denser", "--seeds", "0", "1",
        "--set", f"data.root={fake_deepglobe}",
    )  # fmt: skip
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1
    assert "error: regime 'denser': expected density:FRACTION" in err
    assert not (tmp_path / "runs").exists()


def test_cli_reports_a_config_that_is_not_utf8_in_one_line(tmp_path: Path, cli) -> None:
    config = tmp_path / "latin1.yaml"
    config.write_bytes("data: {format: deepglobe, root: données}\n".encode("latin-1"))
    code, out, err = cli("experiment", "density", "--config", config, "--out", tmp_path / "out")
    assert code == 1 and out == ""
    assert err.startswith("error: ") and "UTF-8" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_device_is_one_of_the_choices(tmp_path: Path, cli) -> None:
    code, _, err = cli("experiment", "density", "--config", CPU_SMALL, "--out", tmp_path, "--device", "tpu")
    assert code == 1
    assert "error: --device 'tpu': expected one of cpu, cuda" in " ".join(err.split())


@pytest.mark.integration
def test_test_evaluation_shows_progress_over_the_test_images(
    sweep: CliSweep, tmp_path: Path, monkeypatch
) -> None:
    out = copy_sweep(sweep.out, tmp_path)
    (out / "runs" / "dense-seed0" / "test_evaluation.json").unlink()
    monkeypatch.setattr(experiments, "train", lambda *a, **k: pytest.fail("trained again"))
    seen: list[tuple[str, int, str]] = []

    @contextlib.contextmanager
    def track(description: str, total: int):  # type: ignore[no-untyped-def]
        yield lambda name: seen.append((description, total, name))

    rerun(sweep, out, track=track)
    assert seen == [("evaluating on test", 1, "103_sat")]


# ------------------------------------------------------------------------------------------ forest


def test_forest_regime_uses_the_points_of_its_point_regime() -> None:
    forest, points = parse_regime("forest:per-class:10"), parse_regime("per-class:10")
    assert (forest.name, forest.slug, forest.forest, forest.dense) == (
        "forest (10 / class)", "forest-per-class-10", True, False,
    )  # fmt: skip
    assert forest.settings == points.settings and not points.forest
    assert parse_regimes(["per-class:10", "forest:per-class:10"])  # distinct regimes


@pytest.mark.parametrize(
    "text", ["forest", "forest:", "forest:dense", "forest:forest:density:0.1", "forest:x:1"]
)
def test_bad_forest_regime_is_an_error(text: str) -> None:
    with pytest.raises(PointsegError, match=re.escape(f"regime {text!r}")):
        parse_regime(text)


@pytest.mark.integration
def test_forest_regime_is_scored_on_test_masks_without_a_checkpoint(
    fake_deepglobe: Path, tmp_path: Path
) -> None:
    from pointseg.baselines import evaluate_pixel_forest
    from pointseg.training import point_source

    out = tmp_path / "sweep"
    regimes = ["forest:per-class:5", "forest:density:0.2"]
    results = density_sweep(CPU_SMALL, out, regimes, [0], small_overrides(fake_deepglobe), progress=False)
    assert [r.regime.slug for r in results] == ["forest-per-class-5", "forest-density-0.2"]
    plan = plan_density_sweep(CPU_SMALL, out, regimes, [0], small_overrides(fake_deepglobe))
    for result, run in zip(results, plan.runs, strict=True):
        assert not list(result.run_dir.glob("checkpoints/*.ckpt"))
        evaluation = json.loads((result.run_dir / "test_evaluation.json").read_text())
        assert evaluation["checkpoint"] is None and evaluation["images"] == ["103_sat"]
        # The same points and the same scoring as evaluate_pixel_forest called directly.
        report = evaluate_pixel_forest(
            plan.splits["train"], plan.splits["test"], plan.schema, point_source(run.config), seed=0
        )
        assert result.miou == pytest.approx(report.miou) and 0 < result.miou <= 1
        assert result.labelled_fraction > 0 and result.points
    rows = read_csv(out / "results.csv")
    assert [row["regime"] for row in rows] == ["forest (5 / class)", "forest (20%)"]
    assert float(rows[1]["labelled_fraction"]) == pytest.approx(0.2, abs=0.02)
    summary = read_csv(out / "density_summary.csv")
    assert [row["method"] for row in summary] == ["forest", "forest"]
    markdown = (out / "results.md").read_text()
    assert "forest (5 / class)" in markdown_rows(markdown) and "pixel random forest baseline" in markdown
    assert (out / "density.png").is_file()
    # A finished forest run is kept on a rerun.
    stamp = (results[0].run_dir / "test_evaluation.json").stat().st_mtime_ns
    density_sweep(CPU_SMALL, out, regimes, [0], small_overrides(fake_deepglobe), progress=False)
    assert (results[0].run_dir / "test_evaluation.json").stat().st_mtime_ns == stamp


@pytest.mark.integration
def test_self_training_rounds_are_run_and_their_last_model_is_scored(
    fake_deepglobe: Path, tmp_path: Path
) -> None:
    overrides = [*small_overrides(fake_deepglobe), "self_training.rounds=1", "self_training.threshold=0.2"]
    [result] = density_sweep(CPU_SMALL, tmp_path, ["density:0.2"], [0], overrides, progress=False)
    round_dir = result.run_dir / "self-training-1"
    evaluation = json.loads((result.run_dir / "test_evaluation.json").read_text())
    assert Path(evaluation["checkpoint"]).parent == round_dir / "checkpoints"
    summaries = [json.loads((path / "summary.json").read_text()) for path in (result.run_dir, round_dir)]
    assert result.epochs == sum(s["epochs"] for s in summaries) == 2
    assert result.train_seconds == pytest.approx(sum(s["train_seconds"] for s in summaries))
    assert result.best_val_miou == summaries[1]["best_val_miou"]
