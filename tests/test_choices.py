import pytest

from pointseg.choices import MAX_OVERLAP, OutputFormat, Overlap, Precision, Tile, check
from pointseg.errors import PointsegError


def test_a_choice_is_one_of_the_literals_values() -> None:
    assert check(Precision, "bf16", "--precision") == "bf16"
    assert check(OutputFormat, "both", "--format") == "both"
    with pytest.raises(PointsegError, match=r"^--precision 'fp8': expected one of fp32, bf16$"):
        check(Precision, "fp8", "--precision")


@pytest.mark.parametrize("tile", [32, 64, 512, 2048])
def test_tiles_are_multiples_of_32(tile: int) -> None:
    assert check(Tile, tile, "--tile") == tile


@pytest.mark.parametrize("tile", [0, 16, 50, 500, -64])
def test_other_tiles_are_refused_naming_the_option(tile: int) -> None:
    with pytest.raises(PointsegError, match=rf"^--tile {tile}: expected a multiple of 32 pixels"):
        check(Tile, tile, "--tile")


@pytest.mark.parametrize("overlap", [0.0, 0.25, MAX_OVERLAP])
def test_overlaps_from_zero_to_half(overlap: float) -> None:
    assert check(Overlap, overlap, "overlap") == overlap


@pytest.mark.parametrize("overlap", [-0.1, 0.51, 0.75, 1.0])
def test_other_overlaps_are_refused(overlap: float) -> None:
    with pytest.raises(
        PointsegError, match=rf"^eval.overlap {overlap}: expected a fraction between 0 and 0.5$"
    ):
        check(Overlap, overlap, "eval.overlap")
