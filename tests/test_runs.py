import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pointseg.config import TrainConfig, dump_config, load_config
from pointseg.errors import PointsegError
from pointseg.runs import (
    RUN_DIR_VARIABLE,
    collect_metrics,
    continue_run_folder,
    new_run_dir,
    preserved_environment,
    resolve_resume,
    resume_settings,
    run_report,
    shared_run_dir,
    start_run_folder,
    write_json,
)

CPU_SMALL = Path(__file__).resolve().parents[1] / "configs" / "cpu_small.yaml"


def config_for(out: Path, *extra: str) -> TrainConfig:
    return load_config(CPU_SMALL, [f"output_dir={out}", "run_name=run", "data.root=/data/dg", *extra])


def make_run(out: Path, *, checkpoint: bool = True, extra: tuple[str, ...] = ()) -> Path:
    """A run folder as `pointseg train` leaves it (a fake checkpoint file: nothing here loads it)."""
    run_dir = out / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(dump_config(config_for(out, *extra)))
    if checkpoint:
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    return run_dir


def test_a_run_with_a_checkpoint_is_never_taken_over(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    with pytest.raises(PointsegError, match=f"already holds a run.*--resume {run_dir}"):
        new_run_dir(config_for(tmp_path))


def test_a_folder_of_something_else_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(PointsegError, match=r"no config\.yaml of a pointseg run"):
        new_run_dir(config_for(tmp_path))


def test_a_run_stopped_before_its_first_checkpoint_is_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = make_run(tmp_path, checkpoint=False)
    (run_dir / "logs" / "version_0").mkdir(parents=True)
    (run_dir / "logs" / "version_0" / "metrics.csv").write_text("epoch,train_loss_step\n0,1.0\n")
    (run_dir / "notes.txt").write_text("the user's own file")
    config = config_for(tmp_path, "optim.lr=0.01")
    assert new_run_dir(config) == run_dir
    start_run_folder(run_dir, config, {"host": "here"})
    assert "stopped before its first checkpoint" in capsys.readouterr().err
    assert not (run_dir / "logs").exists()  # its partial history does not mix with the new run's
    assert (run_dir / "notes.txt").is_file()
    assert load_config(run_dir / "config.yaml").optim.lr == 0.01
    assert resolve_resume(run_dir).checkpoint is None  # --resume starts such a run again


def test_resume_takes_a_run_folder_or_a_checkpoint_inside_it(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert resolve_resume(run_dir) == resolve_resume(last)
    assert resolve_resume(run_dir).run_dir == run_dir and resolve_resume(run_dir).checkpoint == last


def test_resume_refuses_what_is_not_a_run_folder(tmp_path: Path) -> None:
    downloads = tmp_path / "Downloads"
    downloads.mkdir()
    stray = downloads / "model.ckpt"
    stray.write_bytes(b"weights")
    with pytest.raises(PointsegError, match="must lie in the checkpoints/ folder of a run folder"):
        resolve_resume(stray)
    with pytest.raises(PointsegError, match="not a pointseg run folder"):
        resolve_resume(downloads)
    (tmp_path / "other" / "checkpoints").mkdir(parents=True)
    (tmp_path / "other" / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    with pytest.raises(PointsegError, match="not a pointseg run folder"):
        resolve_resume(tmp_path / "other" / "checkpoints" / "last.ckpt")
    with pytest.raises(PointsegError, match="no checkpoint"):
        resolve_resume(tmp_path / "missing")
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "Downloads",
        "checkpoints",
        "last.ckpt",
        "model.ckpt",
        "other",
    ]


def test_resume_settings_come_from_the_run_changed_only_by_set(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, extra=("optim.lr=0.01",))
    assert resume_settings(run_dir, None, []) == load_config(run_dir / "config.yaml")
    longer = resume_settings(run_dir, None, ["trainer.max_epochs=80"])
    assert longer.trainer.max_epochs == 80 and longer.optim.lr == 0.01
    other = tmp_path / "other.yaml"
    other.write_text(dump_config(config_for(tmp_path, "optim.lr=0.5", "trainer.max_epochs=80")))
    with pytest.raises(
        PointsegError, match=r"differs from the run's .*config.yaml in optim.lr, trainer.max_epochs"
    ):
        resume_settings(run_dir, other, [])
    with pytest.raises(PointsegError, match=r"in optim.lr;"):
        resume_settings(run_dir, other, ["trainer.max_epochs=80"])
    given = resume_settings(run_dir, other, ["optim.lr=0.5", "trainer.max_epochs=80"])
    assert (given.optim.lr, given.trainer.max_epochs) == (0.5, 80)


def test_a_run_with_a_moving_average_resumes_only_with_one(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, extra=("optim.ema_decay=0.99",))
    assert resume_settings(run_dir, None, ["optim.ema_decay=0.9"]).optim.ema_decay == 0.9
    with pytest.raises(
        PointsegError, match=r"config.yaml: the run keeps a moving average .*ema_decay 0.99\)"
    ):
        resume_settings(run_dir, None, ["optim.ema_decay=0"])
    plain = tmp_path / "plain.yaml"
    plain.write_text(dump_config(config_for(tmp_path)))
    with pytest.raises(PointsegError, match=r"resumes only with optim\.ema_decay above 0"):
        resume_settings(run_dir, plain, ["optim.ema_decay=0"])
    started_without = make_run(tmp_path / "without")
    assert resume_settings(started_without, None, ["optim.ema_decay=0.99"]).optim.ema_decay == 0.99


def test_a_resumed_session_keeps_the_earlier_config(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    before = (run_dir / "config.yaml").read_text()
    continue_run_folder(run_dir, load_config(run_dir / "config.yaml"), {"host": "here"})
    assert [p.name for p in run_dir.glob("config*.yaml")] == ["config.yaml"]  # same settings: no copy
    continue_run_folder(run_dir, config_for(tmp_path, "trainer.max_epochs=80"), {"host": "here"})
    (kept,) = run_dir.glob("config-before-*.yaml")
    assert kept.read_text() == before
    assert load_config(run_dir / "config.yaml").trainer.max_epochs == 80
    assert len(list(run_dir.glob("environment-resume-*.json"))) >= 1


def test_shared_run_dir_is_set_only_inside_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    with shared_run_dir(Path("runs/a")):
        assert os.environ[RUN_DIR_VARIABLE] == str(Path("runs/a"))
    assert RUN_DIR_VARIABLE not in os.environ
    monkeypatch.setenv(RUN_DIR_VARIABLE, "outer")
    with shared_run_dir(Path("runs/b")):
        pass
    assert os.environ[RUN_DIR_VARIABLE] == "outer"


def test_preserved_environment_undoes_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POINTSEG_TEST_KEPT", "1")
    monkeypatch.delenv("POINTSEG_TEST_ADDED", raising=False)
    with preserved_environment():
        os.environ["POINTSEG_TEST_ADDED"] = "x"
        os.environ["POINTSEG_TEST_KEPT"] = "2"
    assert "POINTSEG_TEST_ADDED" not in os.environ and os.environ["POINTSEG_TEST_KEPT"] == "1"


def test_collect_metrics_merges_sessions_in_order(tmp_path: Path) -> None:
    for version, text in ((10, "epoch,val_miou,lr\n2,0.3,0.1\n"), (2, "epoch,val_miou\n0,0.1\n1,0.2\n")):
        folder = tmp_path / "logs" / f"version_{version}"
        folder.mkdir(parents=True)
        (folder / "metrics.csv").write_text(text)
    with collect_metrics(tmp_path).open() as file:
        rows = list(csv.DictReader(file))
    assert [(r["epoch"], r["val_miou"], r["lr"]) for r in rows] == [
        ("0", "0.1", ""),
        ("1", "0.2", ""),
        ("2", "0.3", "0.1"),
    ]


def test_run_report_names_the_best_checkpoint_and_the_next_command(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, extra=("data.test=['103', '104']",))
    best = str(run_dir / "checkpoints" / "best.ckpt")
    write_json(run_dir / "summary.json", {"best_checkpoint": best, "best_val_miou": 0.41234})
    lines = run_report(run_dir, load_config(run_dir / "config.yaml"))
    assert "best val mIoU: 0.4123" in lines
    assert f"best checkpoint: {best}" in lines
    command = f"pointseg evaluate --checkpoint {best} --data /data/dg --format deepglobe"
    assert f"next: {command} --select 103 --select 104" in lines


def test_run_report_evaluates_on_the_test_list_a_dataset_ships(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, extra=("data.format=landcoverai", "data.root=/data/lc", "data.test=[]"))
    best = str(run_dir / "checkpoints" / "best.ckpt")
    write_json(run_dir / "summary.json", {"best_checkpoint": best})
    lines = run_report(run_dir, load_config(run_dir / "config.yaml"))
    command = f"pointseg evaluate --checkpoint {best} --data /data/lc --format landcoverai --split test"
    assert f"next: {command}" in lines


def test_separately_started_processes_without_a_job_id_need_a_run_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun without --rdzv-id
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(PointsegError, match=r"WORLD_SIZE=2.*--set run_name=NAME"):
        new_run_dir(config_for(tmp_path, "run_name=null"))
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(PointsegError, match=r"trainer.num_nodes=2.*--set run_name=NAME"):
        new_run_dir(config_for(tmp_path, "run_name=null", "trainer.num_nodes=2"))
    assert new_run_dir(config_for(tmp_path, "trainer.num_nodes=2")) == tmp_path / "run"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "4711")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert new_run_dir(config_for(tmp_path, "run_name=null")).name.startswith("job4711-deepglobe-")


def test_a_single_process_without_a_run_name_is_named_by_its_start_time(tmp_path: Path, monkeypatch) -> None:
    for variable in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID", "WORLD_SIZE"):
        monkeypatch.delenv(variable, raising=False)
    name = new_run_dir(config_for(tmp_path, "run_name=null")).name
    assert name[:8].isdigit() and name[8] == "-" and "-deepglobe-" in name


def test_runs_imports_no_training_stack() -> None:
    code = "import sys, pointseg.runs; print(sorted({'lightning', 'pointseg.training'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
