"""Where a dataset gets the sparse point labels of a sample: simulated from its mask, or a folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from pointseg.datasets.samples import SampleRef
from pointseg.errors import PointsegError
from pointseg.points import PointLabels, PointProtocol, simulate_points
from pointseg.raster import read_window


class PointSource(Protocol):
    """Where a dataset gets the sparse point labels of a sample."""

    def points_for(self, ref: SampleRef, dense_labels: np.ndarray | None) -> PointLabels:
        """Point labels over the whole sample (``ref.window`` or the whole image)."""
        ...


@dataclass
class SimulatedPoints:
    """Points drawn once per sample from its dense mask with a fixed protocol and seed."""

    protocol: PointProtocol

    def points_for(self, ref: SampleRef, dense_labels: np.ndarray | None) -> PointLabels:
        """Simulate points for ``ref``; the same seed and id always give the same points."""
        if dense_labels is None:
            raise PointsegError(f"{ref.image_path}: no dense mask to simulate points from")
        return simulate_points(dense_labels, self.protocol, ref.id)


@dataclass
class PointsDirectory:
    """Points read from ``<directory>/<id>.tif`` or ``<id>.png`` (as ``pointseg points`` writes them)."""

    directory: Path

    def points_for(self, ref: SampleRef, dense_labels: np.ndarray | None) -> PointLabels:
        """Read the point label map of ``ref``."""
        for suffix in (".tif", ".png"):
            path = self.directory / f"{ref.id}{suffix}"
            if path.is_file():
                label_map = read_window(path)
                if label_map.shape[0] != 1:
                    raise PointsegError(f"{path}: point label map has {label_map.shape[0]} bands, expected 1")
                return PointLabels.from_label_map(label_map[0])
        raise PointsegError(
            f"{self.directory}: no point labels for sample '{ref.id}' (expected {ref.id}.tif or {ref.id}.png)"
        )
