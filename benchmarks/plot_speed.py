"""Benchmark: plotting a 2448 x 2448 scene against plotting one of the display size.

Figures subsample images and label maps to at most ``DISPLAY_MAX_SIDE`` pixels per side before
drawing, so the time to write an image | ground truth | prediction figure should not grow with
the scene. The figure is the median time for a 2448² DeepGlobe-sized scene divided by the median
time for an 800² one (9.4x fewer pixels), repeats alternating between the two. Target <= 1.5.
The absolute time for 2448² is printed too (it was under 2 s on 2 idle cores).

    python -m benchmarks.plot_speed [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import Result, report
from pointseg.datasets import deepglobe
from pointseg.plots import DISPLAY_MAX_SIDE, plot_prediction

SCHEMA = deepglobe.SCHEMA


def scene(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``(3, size, size)`` uint8 image of 100-pixel class blocks with noise, and its labels."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, SCHEMA.num_classes, (-(-size // 100), -(-size // 100)), dtype=np.uint8)
    labels = np.kron(blocks, np.ones((100, 100), dtype=np.uint8))[:size, :size]
    colours = np.array(SCHEMA.colors, dtype=np.uint8)[labels] // 2
    image = np.moveaxis(colours, -1, 0) + rng.integers(0, 60, (3, size, size), dtype=np.uint8)
    return image, labels


def main() -> None:
    """Time both sizes alternately and report the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    scenes = {size: scene(size) for size in (2448, DISPLAY_MAX_SIDE)}
    times: dict[int, list[float]] = {size: [] for size in scenes}
    with tempfile.TemporaryDirectory() as work:
        for repeat in range(args.repeats + 1):
            for size, (image, labels) in scenes.items():
                start = time.perf_counter()
                plot_prediction(image, labels, labels, SCHEMA, Path(work) / f"{size}.png")
                if repeat:  # the first round warms up matplotlib's caches
                    times[size].append(time.perf_counter() - start)
    large, small = (statistics.median(times[size]) for size in scenes)
    ratio = large / small
    report(
        Result(
            "figure 2448²/800² (s)",
            ratio,
            "<= 1.5",
            ratio <= 1.5,
            f"{large:.2f} s vs {small:.2f} s per image | truth | prediction figure, median of {args.repeats}",
        )
    )


if __name__ == "__main__":
    main()
