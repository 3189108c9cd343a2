"""Shared test setup. Importing pointseg first applies the torchvision compatibility shim
(see pointseg.torchvision_compat) before any test imports torchmetrics, smp or timm."""

import sys
from collections.abc import Callable

import pytest

import pointseg  # noqa: F401
from pointseg.cli import main

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
