from pointseg.colors import palette_colormap
from pointseg.datasets import deepglobe
from pointseg.schema import IGNORE_INDEX


def test_palette_has_the_class_colours_opaque_and_ignore_transparent() -> None:
    colormap = palette_colormap(deepglobe.SCHEMA)
    assert [colormap[i] for i in range(deepglobe.SCHEMA.num_classes)] == [
        (*color, 255) for color in deepglobe.SCHEMA.colors
    ]
    assert colormap[IGNORE_INDEX] == (0, 0, 0, 0)
