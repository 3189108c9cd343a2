"""Shared test setup: the ``cli`` runner and a small fake DeepGlobe folder.

The pointseg modules that import smp, timm, torchmetrics or Lightning apply the torchvision
compatibility shim themselves (see pointseg.torchvision_compat); tests import those packages
only after the pointseg module they test."""

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fake_data import write_deepglobe
from pointseg.cli import main
from pointseg.runs import RUN_DIR_VARIABLE

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run ``pointseg ARGS...`` in-process like the console script; return (status, stdout, stderr)."""

    def run(*args: object) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["pointseg", *map(str, args)])
        capsys.readouterr()  # drop what the test printed before
        try:
            main()
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else int(done.code is not None)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="module")
def fake_deepglobe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 96² DeepGlobe-style images with masks, built once per test module."""
    return write_deepglobe(tmp_path_factory.mktemp("deepglobe"), count=4, size=96)


@pytest.fixture(autouse=True)
def _fresh_run_dir_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run folder named by an earlier test's environment must not leak into the next test."""
    monkeypatch.delenv(RUN_DIR_VARIABLE, raising=False)
