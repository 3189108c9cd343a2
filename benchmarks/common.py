"""Helpers shared by the benchmark scripts: timing statistics, result lines and tiny rasters."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

RESULTS_ENV = "POINTSEG_BENCHMARK_RESULTS"  # optional JSON-lines file that collects every result


@dataclass
class Result:
    """One benchmark target: the measured figure, the target, and whether it holds."""

    name: str
    figure: float
    target: str
    holds: bool
    detail: str = ""

    def line(self) -> str:
        """``name: figure (target ...) HOLDS|MISSES  detail``."""
        verdict = "HOLDS" if self.holds else "MISSES"
        return f"{self.name}: {self.figure:.3f} (target {self.target}) {verdict}  {self.detail}".rstrip()


def report(result: Result) -> Result:
    """Print the result line and append it to ``$POINTSEG_BENCHMARK_RESULTS`` if set."""
    print(result.line(), flush=True)
    path = os.environ.get(RESULTS_ENV)
    if path:
        with open(path, "a") as file:
            file.write(json.dumps(result.__dict__) + "\n")
    return result


def median_seconds(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``run()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_test_raster(path: Path, size: int, bands: int = 3, seed: int = 0) -> Path:
    """A tiled, DEFLATE-compressed uint8 GeoTIFF in UTM, written block by block (never whole in memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    block = 512
    pattern = rng.integers(0, 255, size=(bands, block, block), dtype=np.uint8)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": bands,
        "dtype": "uint8",
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "deflate",
        "crs": CRS.from_epsg(32633),
        "transform": from_origin(400000, 5000000, 0.5, 0.5),
    }
    with rasterio.open(path, "w", **profile) as dataset:
        for row in range(0, size, block):
            for col in range(0, size, block):
                window = rasterio.windows.Window(col, row, min(block, size - col), min(block, size - row))
                dataset.write(pattern[:, : window.height, : window.width], window=window)
    return path


def write_untrained_checkpoint(
    path: Path, tile: int = 64, overlap: float = 0.25, val_miou: float = 0.5, epoch: int = 3
) -> Path:
    """Save an untrained DeepLabV3+ of the small CPU config as `pointseg train` saves one (Lightning format).

    Only the weights are not learned: config, class schema and band statistics come from a real
    `SegmentationTask`, so `load_trained_model` reads it as it reads a trained one, in a fraction of
    a second. Used by tests and by benchmarks, whose figures do not depend on the weights.
    """
    import torch

    from pointseg.config import load_config
    from pointseg.datasets import deepglobe
    from pointseg.training import SegmentationTask

    torch.manual_seed(0)
    config = load_config(
        Path(__file__).resolve().parents[1] / "configs" / "cpu_small.yaml",
        [f"data.root={path.parent}", f"eval.tile={tile}", f"eval.overlap={overlap}"],
    )
    task = SegmentationTask(
        config.model_dump(mode="json", by_alias=True),
        deepglobe.SCHEMA.to_dict(),
        {"mean": [120.0, 110.0, 100.0], "std": [50.0, 50.0, 50.0]},
        load_pretrained=False,
    )
    torch.save(
        {
            "epoch": epoch,
            "hyper_parameters": dict(task.hparams),
            "state_dict": task.state_dict(),
            "callbacks": {
                "ModelCheckpoint{'monitor': 'val_miou'}": {"best_model_score": torch.tensor(val_miou)}
            },
        },
        path,
    )
    return path
