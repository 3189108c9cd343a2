"""A real checkpoint and a real uvicorn server for the API tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import uvicorn
from starlette.types import ASGIApp

from pointseg.config import load_config
from pointseg.datasets import deepglobe
from pointseg.training import SegmentationTask

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "cpu_small.yaml"
VAL_MIOU = 0.5
EPOCH = 3


def write_checkpoint(path: Path) -> Path:
    """Save an untrained DeepLabV3+ of the small config as `pointseg train` saves one (Lightning format).

    Only the weights are not learned: the hyper-parameters (config, class schema, band statistics)
    come from a real `SegmentationTask`, with its state dict, epoch and best validation score, so
    `load_trained_model` reads it as it reads a trained one. It takes a fraction of a second.
    """
    torch.manual_seed(0)
    config = load_config(CONFIG, [f"data.root={path.parent}", "eval.tile=64", "eval.overlap=0.25"])
    task = SegmentationTask(
        config.model_dump(mode="json", by_alias=True),
        deepglobe.SCHEMA.to_dict(),
        {"mean": [120.0, 110.0, 100.0], "std": [50.0, 50.0, 50.0]},
        load_pretrained=False,
    )
    torch.save(
        {
            "epoch": EPOCH,
            "hyper_parameters": dict(task.hparams),
            "state_dict": task.state_dict(),
            "callbacks": {
                "ModelCheckpoint{'monitor': 'val/miou'}": {"best_model_score": torch.tensor(VAL_MIOU)}
            },
        },
        path,
    )
    return path


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("serving") / "model.ckpt")


@contextmanager
def running_server(app: ASGIApp) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on 127.0.0.1 and a free port; yield its base URL.

    Uvicorn's loggers propagate (no log config), so ``caplog`` sees what the server logs.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
