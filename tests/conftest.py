"""Shared test setup. Importing pointseg first applies the torchvision compatibility shim
(see pointseg.torchvision_compat) before any test imports torchmetrics, smp or timm."""

import pointseg  # noqa: F401
