"""How often the pixels that superpixel expansion adds carry the right class, on Dubai training tiles.

Draws the ablation's points (10 per class, seed 0; or one per region of at least 100 px with a third
argument ``per-region``) on the first 12 training images of configs/dubai_cpu_small.yaml, expands
them as training would, and compares the expanded pixels with the dense masks:

    python docs/experiments/expansion_precision.py slic 400
    python docs/experiments/expansion_precision.py felzenszwalb 100
    python docs/experiments/expansion_precision.py felzenszwalb 100 per-region
"""

import sys
from pathlib import Path

from pointseg.config import apply_overrides, parse_config, read_config_data
from pointseg.datasets import split_samples
from pointseg.label_expansion import PointExpansion
from pointseg.raster import open_raster, read_mask, read_pixels
from pointseg.schema import IGNORE_INDEX
from pointseg.training import point_source

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "dubai_cpu_small.yaml"

PROTOCOLS = {
    "per-class": ["points.strategy=per-class", "points.per_class=10"],
    "per-region": ["points.strategy=per-region", "points.min_area=100"],
}
method, size = sys.argv[1], int(sys.argv[2])
protocol = sys.argv[3] if len(sys.argv) > 3 else "per-class"
if protocol not in PROTOCOLS:
    sys.exit(f"points {protocol!r}: expected one of {list(PROTOCOLS)}")
data = apply_overrides(read_config_data(CONFIG), PROTOCOLS[protocol])
config = parse_config(data, str(CONFIG))
schema, splits = split_samples(config.data)
source = point_source(config, schema)
assert source is not None
expansion = PointExpansion(method, 0.5, size)  # type: ignore[arg-type]
points = expanded = right = 0
for ref in splits["train"][:12]:
    with open_raster(ref.image_path) as dataset:
        image = read_pixels(dataset)
    assert ref.mask_path is not None
    mask = read_mask(ref.mask_path, schema)
    clicked = source.points_for(ref, mask).to_label_map()
    labels = expansion.expand(image, clicked)
    scored = (labels != IGNORE_INDEX) & (mask != IGNORE_INDEX)
    points += int((clicked != IGNORE_INDEX).sum())
    expanded += int(scored.sum())
    right += int((labels[scored] == mask[scored]).sum())
print(f"{method} {size} px: {points} points, {expanded} labelled pixels, {right / expanded:.1%} right")
