"""Benchmark (c): peak memory of ``predict`` does not grow with the raster.

Predicts a 4096² and a 16384² GeoTIFF (16x the pixels) with the same small model, each in a fresh
process, and prints the ratio of their peak resident memory. Target: <= 1.2. A tiny model is
used on purpose: this measures the I/O and blending path, not the network.

    python -m benchmarks.predict_memory
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import Result, report, write_test_raster


def measure(raster: Path, out: Path, tile: int, overlap: float) -> dict[str, float]:
    """Predict ``raster`` in this process with a tiny model; return peak RSS (MiB) and seconds."""
    import time

    import torch

    from pointseg.inference import InferenceModel
    from pointseg.normalization import BandStats
    from pointseg.prediction import predict_files
    from pointseg.schema import ClassSchema

    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 6, 1)
    ).eval()

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return network(batch)

    schema = ClassSchema("bench", tuple(f"c{i}" for i in range(6)), tuple((i * 40, 0, 0) for i in range(6)))
    model = InferenceModel(forward, schema, BandStats((127.0,) * 3, (60.0,) * 3), tile, overlap, {})
    start = time.perf_counter()
    predict_files(model, [raster], out, batch_size=4)
    seconds = time.perf_counter() - start
    return {"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds}


def main() -> Result:
    """Run both sizes in fresh processes and report the ratio."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", type=int, default=4096)
    parser.add_argument("--large", type=int, default=16384)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: run one measurement
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.out, args.tile, args.overlap)))
        sys.exit(0)
    with tempfile.TemporaryDirectory() as work:
        peaks = {}
        for size in (args.small, args.large):
            raster = write_test_raster(Path(work) / f"input_{size}.tif", size)
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.predict_memory",
                    "--measure",
                    str(raster),
                    "--out",
                    str(Path(work) / f"out_{size}"),
                    "--tile",
                    str(args.tile),
                    "--overlap",
                    str(args.overlap),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            peaks[size] = json.loads(done.stdout.strip().splitlines()[-1])
            raster.unlink()
    small, large = peaks[args.small], peaks[args.large]
    ratio = large["peak_mib"] / small["peak_mib"]
    detail = (
        f"peak RSS {large['peak_mib']:.0f} MiB at {args.large}² "
        f"vs {small['peak_mib']:.0f} MiB at {args.small}² "
        f"({(args.large / args.small) ** 2:.0f}x the pixels; "
        f"{large['seconds']:.0f} s vs {small['seconds']:.0f} s)"
    )
    return report(Result("predict peak memory 16384²/4096²", ratio, "<= 1.2", ratio <= 1.2, detail))


if __name__ == "__main__":
    main()
