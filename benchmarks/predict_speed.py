"""Benchmarks (a) and (b): the prediction pipeline's speed against the bare model.

(a) ``pointseg predict``'s throughput (megapixels/s, reading, blending and writing a COG included)
    divided by the bare forward pass of the same model function over the same tiles, held in memory,
    at overlap 0: the ratio is the pipeline's own overhead. Target >= 0.9.
(b) The fast path (inference_mode, channels_last, and bf16 autocast where the CPU computes bfloat16
    natively) against fp32 eager forward over the same tiles. Target >= 1.5x with bf16; on a CPU
    without native bf16 (no AVX-512 or AMX) the fast path stays in fp32, and the target is >= 0.95x
    (no slower than eager).

Both use the default network (DeepLabV3+, ResNet-50, GroupNorm), random weights, on one run's
medians; the repeats alternate between the two sides so that machine noise hits both.

    python -m benchmarks.predict_speed [--encoder resnet50] [--size 2048] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import Result, report, write_test_raster
from pointseg.inference import InferenceModel, fast_bfloat16, torch_forward
from pointseg.models import build_model
from pointseg.normalization import BandStats
from pointseg.prediction import predict_files
from pointseg.schema import ClassSchema

SCHEMA = ClassSchema("bench", tuple(f"class{i}" for i in range(6)), tuple((40 * i, 0, 0) for i in range(6)))
STATS = BandStats((127.0,) * 3, (60.0,) * 3)


def alternate(first, second, repeats: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Median seconds of two callables, run alternately after one warm-up each."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for run, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            run()
            bucket.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> list[Result]:
    """Run (a) and (b) and print one line each."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--encoder", default="resnet50")
    parser.add_argument(
        "--size", type=int, default=2048, help="raster side; tiles of --tile cover it exactly"
    )
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    network = build_model(SCHEMA.num_classes, 3, encoder=args.encoder).eval()
    tiles_per_side = args.size // args.tile
    batches = [
        torch.randn(args.batch_size, 3, args.tile, args.tile)
        for _ in range(tiles_per_side**2 // args.batch_size)
    ]
    megapixels = args.size**2 / 1e6
    results = []
    with tempfile.TemporaryDirectory() as work:
        raster = write_test_raster(Path(work) / "scene.tif", args.size)
        model = InferenceModel(torch_forward(network), SCHEMA, STATS, args.tile, 0.0, {})

        def pipeline() -> None:
            predict_files(model, [raster], Path(work) / "out", batch_size=args.batch_size)

        def bare_forward() -> None:
            for batch in batches:
                model.forward(batch)

        pipeline_s, bare_s = alternate(pipeline, bare_forward, args.repeats)
        ratio = bare_s / pipeline_s
        results.append(
            report(
                Result(
                    "(a) predict / bare forward, overlap 0",
                    ratio,
                    ">= 0.9",
                    ratio >= 0.9,
                    f"{megapixels / pipeline_s:.2f} vs {megapixels / bare_s:.2f} Mpx/s; {args.encoder}, "
                    f"{tiles_per_side**2} tiles of {args.tile}², batch {args.batch_size}",
                )
            )
        )

    native = fast_bfloat16("cpu")
    fast = torch_forward(network, "cpu", "bf16" if native else "fp32")
    target = 1.5 if native else 0.95

    def fast_path() -> None:
        for batch in batches:
            fast(batch)

    def fp32_eager() -> None:
        with torch.no_grad():
            for batch in batches:
                network(batch)

    fast_s, eager_s = alternate(fast_path, fp32_eager, args.repeats)
    speedup = eager_s / fast_s
    results.append(
        report(
            Result(
                f"(b) {'bf16' if native else 'fp32'} fast path / fp32 eager",
                speedup,
                f">= {target}",
                speedup >= target,
                f"{megapixels / fast_s:.2f} vs {megapixels / eager_s:.2f} Mpx/s; "
                f"native bf16 on this CPU: {native}",
            )
        )
    )
    return results


if __name__ == "__main__":
    main()
