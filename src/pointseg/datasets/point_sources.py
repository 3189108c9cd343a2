"""Where a dataset gets the sparse point labels of a sample: simulated from its mask, a folder or a file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from pointseg.datasets.samples import SampleRef
from pointseg.errors import PointsegError
from pointseg.points import PointLabels, PointProtocol, simulate_points
from pointseg.raster import raster_info, read_window
from pointseg.schema import ClassSchema


class PointSource(Protocol):
    """Where a dataset gets the sparse point labels of a sample."""

    def check(self, refs: Sequence[SampleRef]) -> None:
        """Raise now, naming the image, if the points of any of ``refs`` cannot be had later."""
        ...

    def points_for(self, ref: SampleRef, dense_labels: np.ndarray | None) -> PointLabels:
        """Point labels over the whole sample (``ref.window`` or the whole image)."""
        ...


@dataclass
class SimulatedPoints:
    """Points drawn once per sample from its dense mask with a fixed protocol and seed."""

    protocol: PointProtocol

    def check(self, refs: Sequence[SampleRef]) -> None:
        """Raise unless every sample has a dense mask to simulate points from.

        Raises:
            PointsegError: naming the first image without a mask.
        """
        for ref in refs:
            if ref.mask_path is None:
                raise PointsegError(f"{ref.image_path}: no dense mask to simulate points from")

    def points_for(self, ref: SampleRef, dense_labels: np.ndarray | None) -> PointLabels:
        """Simulate points for ``ref``; the same seed and id always give the same points."""
        if dense_labels is None:
            raise PointsegError(f"{ref.image_path}: no dense mask to simulate points from")
        return simulate_points(dense_labels, self.protocol, ref.id)


@dataclass
class PointsDirectory:
    """Points read from ``<directory>/<id>.tif`` or ``<id>.png`` (as ``pointseg points`` writes them)."""

    directory: Path

    def check(self, refs: Sequence[SampleRef]) -> None:
        """Check, before any sample is read, that every sample has a readable point label map.

        Each map must exist, be a non-empty raster of one band and have its sample's size; only
        headers are read.

        Raises:
            PointsegError: naming the folder or the file, and the image whose points are missing
                or wrong.
        """
        if not self.directory.is_dir():
            raise PointsegError(
                f"{self.directory}: no such folder; expected point label maps <id>.tif or <id>.png "
                "(as `pointseg points simulate` or `pointseg points import` write them)"
            )
        for ref in refs:
            path = self._path(ref)
            if path.stat().st_size == 0:
                raise PointsegError(f"{path}: empty file; expected the point label map of {ref.image_path}")
            labels = raster_info(path)
            if labels.count != 1:
                raise PointsegError(f"{path}: point label map has {labels.count} bands, expected 1")
            if ref.window is not None:
                height, width = int(ref.window.height), int(ref.window.width)
            else:
                image = raster_info(ref.image_path)
                height, width = image.height, image.width
            if (labels.height, labels.width) != (height, width):
                raise PointsegError(
                    f"point labels of '{ref.id}' are {labels.height}x{labels.width}, "
                    f"the image is {height}x{width} ({path} for {ref.image_path})"
                )

    def points_for(self, ref: SampleRef, dense_labels: np.ndarray | None) -> PointLabels:
        """Read the point label map of ``ref``."""
        path = self._path(ref)
        label_map = read_window(path)
        if label_map.shape[0] != 1:
            raise PointsegError(f"{path}: point label map has {label_map.shape[0]} bands, expected 1")
        return PointLabels.from_label_map(label_map[0])

    def _path(self, ref: SampleRef) -> Path:
        """The point label map of ``ref``: ``<id>.tif`` or else ``<id>.png``.

        Raises:
            PointsegError: naming the sample and its image if there is neither.
        """
        for suffix in (".tif", ".png"):
            path = self.directory / f"{ref.id}{suffix}"
            if path.is_file():
                return path
        raise PointsegError(
            f"{self.directory}: no point labels for sample '{ref.id}' "
            f"(expected {ref.id}.tif or {ref.id}.png) for image {ref.image_path}"
        )


@dataclass
class PointsFile:
    """Points clicked in a GIS: one ``.geojson``, ``.csv`` or ``.gpkg`` for all images (as ``map`` reads).

    Each image gets the points inside it, placed on its pixel grid by
    :func:`pointseg.points.import_points`; a point inside none of the images checked together is
    an error, as are unknown classes, duplicates and conflicts.

    Attributes:
        path: The points file.
        schema: The classes the names refer to.
        class_field: Attribute holding the class name (compared case-insensitively).
    """

    path: Path
    schema: ClassSchema
    class_field: str = "class"
    placed: dict[str, PointLabels] = field(default_factory=dict, repr=False)

    def check(self, refs: Sequence[SampleRef]) -> None:
        """Place the points on every sample of ``refs`` not placed yet, before training starts.

        Samples checked together share the file: check all the images it covers at once.

        Raises:
            PointsegError: naming the file, for a missing file, invalid points, a sample that is
                a window of an image, or an image without any point.
        """
        from pointseg.mapping import MapSettings, place_points

        todo = [ref for ref in refs if ref.id not in self.placed]
        if not todo:
            return
        if not self.path.is_file():
            raise PointsegError(f"{self.path}: no such points file; expected a .geojson, .csv or .gpkg")
        windowed = next((ref for ref in todo if ref.window is not None), None)
        if windowed is not None:
            raise PointsegError(
                f"{self.path}: sample '{windowed.id}' is a window of {windowed.image_path}; a points file "
                "labels whole images (use a dataset format whose samples are whole images)"
            )
        placed, _ = place_points(
            {ref.image_path: self.path for ref in todo},
            self.schema,
            MapSettings(class_field=self.class_field),
        )
        self.placed.update({ref.id: placed[ref.image_path] for ref in todo})

    def points_for(self, ref: SampleRef, dense_labels: np.ndarray | None) -> PointLabels:
        """The points of ``ref`` (placed by :meth:`check` if not yet)."""
        self.check([ref])
        return self.placed[ref.id]
