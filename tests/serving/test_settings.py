"""ServeSettings: validated once, carried to workers as one JSON environment variable."""

from pathlib import Path

import pytest

from pointseg.errors import PointsegError
from pointseg.serving.settings import SETTINGS_VARIABLE, ServeSettings


def test_settings_survive_the_environment(checkpoint: Path) -> None:
    settings = ServeSettings.checked(checkpoint=checkpoint, max_queue=2, request_timeout=7.5, torch_threads=3)
    environment = settings.to_environment()
    assert list(environment) == [SETTINGS_VARIABLE]
    assert ServeSettings.from_environment(environment) == settings


def test_bad_settings_are_one_clear_error(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(PointsegError, match=r"missing\.ckpt: no such checkpoint file"):
        ServeSettings.checked(checkpoint=tmp_path / "missing.ckpt")
    with pytest.raises(PointsegError, match="device 'tpu': expected cpu or cuda"):
        ServeSettings.checked(checkpoint=checkpoint, device="tpu")
    with pytest.raises(PointsegError, match="max_queue 0: Input should be greater than or equal to 1"):
        ServeSettings.checked(checkpoint=checkpoint, max_queue=0)
    with pytest.raises(PointsegError, match="request_timeout -1"):
        ServeSettings.checked(checkpoint=checkpoint, request_timeout=-1)


def test_a_missing_or_broken_environment_names_the_variable() -> None:
    with pytest.raises(PointsegError, match=f"{SETTINGS_VARIABLE} is not set; use pointseg serve"):
        ServeSettings.from_environment({})
    with pytest.raises(PointsegError, match=SETTINGS_VARIABLE):
        ServeSettings.from_environment({SETTINGS_VARIABLE: '{"checkpoint": 3'})


def test_a_workspace_alone_is_enough_and_nothing_at_all_is_one_clear_error(tmp_path: Path) -> None:
    settings = ServeSettings.checked(workspace=tmp_path)
    assert settings.checkpoint is None and settings.workspace == tmp_path.resolve()
    assert ServeSettings.from_environment(settings.to_environment()) == settings
    with pytest.raises(PointsegError, match=r"nothing to serve: give --checkpoint CKPT .* --workspace DIR"):
        ServeSettings.checked()
    with pytest.raises(PointsegError, match=r"--workspace .*missing: no such folder"):
        ServeSettings.checked(workspace=tmp_path / "missing")


def test_a_workspace_is_served_by_one_worker(tmp_path: Path) -> None:
    from pointseg.serving.server import serve

    with pytest.raises(PointsegError, match="--workers 2 with --workspace"):
        serve(ServeSettings.checked(workspace=tmp_path), workers=2)
