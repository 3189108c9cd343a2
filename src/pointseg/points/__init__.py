"""Point labels: the value type, simulation from dense masks, and point-label files.

- :mod:`~pointseg.points.labels`: :class:`PointLabels`, a few labelled pixels of one image;
- :mod:`~pointseg.points.protocol`: :class:`PointProtocol`, how points are simulated, with its
  settings' ranges, names and slugs;
- :mod:`~pointseg.points.simulate`: drawing points from a dense mask by a protocol;
- :mod:`~pointseg.points.io`: writing GeoJSON, importing GeoJSON, CSV or GeoPackage files onto an
  image's pixel grid.
"""

from pointseg.points.io import (
    PIXEL_COORDINATES,
    POINT_FILE_SUFFIXES,
    ImportReport,
    class_key,
    import_points,
    read_point_classes,
    write_points_geojson,
)
from pointseg.points.labels import PointLabels
from pointseg.points.protocol import (
    SPEC_FORMS,
    STRATEGY_PARAMETERS,
    PointProtocol,
    PointStrategy,
    ProtocolSettings,
)
from pointseg.points.simulate import sample_density, sample_per_class, sample_per_region, simulate_points

__all__ = [
    "PIXEL_COORDINATES",
    "POINT_FILE_SUFFIXES",
    "SPEC_FORMS",
    "STRATEGY_PARAMETERS",
    "ImportReport",
    "PointLabels",
    "PointProtocol",
    "PointStrategy",
    "ProtocolSettings",
    "class_key",
    "import_points",
    "read_point_classes",
    "sample_density",
    "sample_per_class",
    "sample_per_region",
    "simulate_points",
    "write_points_geojson",
]
