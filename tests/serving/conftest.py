"""A real (untrained) checkpoint for the API and page tests."""

from pathlib import Path

import pytest
from live_server import EPOCH, VAL_MIOU

from fake_data import write_untrained_checkpoint


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_untrained_checkpoint(
        tmp_path_factory.mktemp("serving") / "model.ckpt", val_miou=VAL_MIOU, epoch=EPOCH
    )
