"""Shared test setup. Importing pointseg first applies the torchvision compatibility shim
(see pointseg.torchvision_compat) before any test imports torchmetrics, smp or timm."""

from pathlib import Path

import pointseg  # noqa: F401

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
