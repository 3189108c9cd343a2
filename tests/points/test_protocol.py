import pytest

from pointseg.errors import PointsegError
from pointseg.points import PointProtocol


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"density": 0}, "density"),
        ({"density": 1.5}, "density"),
        ({"per_class": 0}, "per_class"),
        ({"min_area": 0}, "min_area"),
        ({"seed": -1}, "seed"),
        ({"strategy": "grid"}, "strategy"),
    ],
)
def test_point_protocol_rejects_bad_settings_naming_the_field(settings, field):
    with pytest.raises(PointsegError, match=rf"{field} '?{settings[field]}"):
        PointProtocol(**settings)


def test_point_protocol_describe():
    assert PointProtocol(density=0.01).describe() == "density 1%"
    assert PointProtocol(density=0.005).describe() == "density 0.5%"
    assert PointProtocol("per-class", per_class=10).describe() == "10 per class"
    assert PointProtocol("per-region", min_area=100).describe() == "per region (min area 100 px)"
