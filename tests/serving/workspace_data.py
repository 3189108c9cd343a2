"""A tiny labelling workspace made by code: a georeferenced GeoTIFF, a PNG without a CRS, a tiny model."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from fastapi.testclient import TestClient

from fake_data import UTM, block_labels, image_for, write_raster
from pointseg.mapping import MapSettings
from pointseg.serving.project_training import TrainingDefaults

TRANSFORM = Affine(10, 0, 500_000, 0, -10, 5_000_000)
COLORS = np.array([(30, 60, 200), (30, 150, 40), (180, 50, 50)])
CLASSES = [
    {"name": "water", "color": "#1E3CC8"},
    {"name": "forest", "color": "#1E9628"},
    {"name": "urban", "color": "#B43232"},
]
TINY = TrainingDefaults(
    MapSettings(
        epochs=2,
        crop_size=64,
        crops_per_image=2,
        batch_size=2,
        tile=64,
        block_size=8,
        encoder="resnet18",
        weights=None,
        norm="group",
    ),
    warm_epochs=1,
)
"""A model that trains in seconds on the CPU."""


def scene_labels() -> np.ndarray:
    """The classes of ``scene.tif``: 8-pixel blocks of 3 classes, 64 x 64."""
    return block_labels(64, 64, 3, seed=2)


def write_workspace(root: Path) -> Path:
    """``root/maps/scene.tif`` (UTM, 10 m pixels, 64 x 64) and ``root/plain.png`` (no CRS, 60 x 40)."""
    write_raster(root / "maps" / "scene.tif", image_for(scene_labels(), COLORS, seed=2), UTM, TRANSFORM)
    write_raster(root / "plain.png", image_for(block_labels(40, 60, 2, seed=3), COLORS, seed=3))
    (root / "notes.txt").write_text("not an image")
    return root


def grid_clicks(labels: np.ndarray, step: int = 6) -> list[dict[str, Any]]:
    """A click at the centre of every ``step``-th pixel, with its true class name."""
    return [
        {"row": row + 0.5, "col": col + 0.5, "class": CLASSES[int(labels[row, col])]["name"]}
        for row in range(3, labels.shape[0], step)
        for col in range(3, labels.shape[1], step)
    ]


def new_project(client: TestClient, image: str = "maps/scene.tif", clicks: bool = True) -> str:
    """A project on a workspace image with the three classes (and the grid of clicks); its id."""
    created = client.post("/api/projects", json={"name": "test", "image": image})
    assert created.status_code == 201, created.text
    project = created.json()["id"]
    assert client.put(f"/api/projects/{project}/classes", json={"classes": CLASSES}).status_code == 200
    if clicks:
        for click in grid_clicks(scene_labels()):
            assert client.post(f"/api/projects/{project}/points", json=click).status_code == 201
    return project


def wait_for(client: TestClient, job: str, timeout: float = 300) -> dict[str, Any]:
    """Poll a job until it finishes (a bound against a hang, not a speed check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(f"/api/jobs/{job}").json()
        if state["state"] in ("done", "failed", "cancelled"):
            return state
        time.sleep(0.2)
    raise AssertionError(f"job {job} did not finish within {timeout} s")
