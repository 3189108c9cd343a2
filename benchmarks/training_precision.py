"""Benchmark: ``trainer.precision: auto`` picks the faster of float32 and bf16 autocast on this CPU.

Times training steps (forward, partial CE on 1 % of the pixels, backward, Adam) of the Dubai CPU
config's network (DeepLabV3+ with EfficientNet-Lite0, BatchNorm, random weights) on 8 crops of 256²,
in float32 and under bf16 autocast, alternating, and divides the median step time of the precision
``auto`` resolves to by the faster one's. Target <= 1.1. The detail gives both times and their ratio:
on an AVX2-only CPU bf16 is emulated and several times slower; with AVX-512 or AMX it is faster.

    python -m benchmarks.training_precision [--steps 3] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import pointseg.torchvision_compat  # noqa: F401  # isort: skip  (shim first: torchvision)
import torch

from benchmarks.common import Result, report
from pointseg.config import TrainerConfig
from pointseg.losses import build_loss
from pointseg.models import build_model
from pointseg.schema import IGNORE_INDEX
from pointseg.training import trainer_precision

CLASSES = 6


def main() -> Result:
    """Time both precisions and report the ratio of ``auto``'s choice to the faster one."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per precision (after one warm-up)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model(
        arch="deeplabv3plus", encoder="tu-efficientnet_lite0", num_classes=CLASSES, weights=None, norm="batch"
    ).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_function = build_loss("pce")
    images = torch.rand(args.batch_size, 3, args.crop, args.crop)
    labels = torch.randint(0, CLASSES, (args.batch_size, args.crop, args.crop))
    labels[torch.rand(labels.shape) > 0.01] = IGNORE_INDEX

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        autocast = torch.autocast("cpu", torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            loss = loss_function(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    step(False), step(True)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.steps):
        for bf16 in (False, True):
            times[bf16].append(step(bf16))
    fp32_s, bf16_s = (statistics.median(times[bf16]) for bf16 in (False, True))
    chosen = trainer_precision(TrainerConfig(precision="auto", accelerator="cpu"))
    chosen_s = bf16_s if chosen == "bf16-mixed" else fp32_s
    ratio = chosen_s / min(fp32_s, bf16_s)
    return report(
        Result(
            "auto precision step / faster precision step",
            ratio,
            "<= 1.1",
            ratio <= 1.1,
            f"auto: {chosen}; step of {args.batch_size} {args.crop}² crops: float32 {fp32_s:.2f} s, "
            f"bf16 autocast {bf16_s:.2f} s (bf16/float32 {bf16_s / fp32_s:.2f}); {torch.get_num_threads()} "
            f"threads, CPU capability {torch.backends.cpu.get_cpu_capability()}",
        )
    )


if __name__ == "__main__":
    main()
