"""Run every benchmark, each in its own process, and print one line per target.

    python -m benchmarks            # all, about 20 minutes on 2 CPU cores
    python -m benchmarks --only predict_memory api_load

Each line gives the figure, the target and whether it holds; the exit status is 1 if any misses.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS_ENV

BENCHMARKS = (
    "training_loop",
    "training_precision",
    "predict_speed",
    "predict_memory",
    "api_load",
    "plot_speed",
    "click_to_map",
)


def main() -> int:
    """Run the benchmarks and print the summary."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as work:
        results_file = Path(work) / "results.jsonl"
        environment = {**os.environ, RESULTS_ENV: str(results_file), "PYTHONWARNINGS": "ignore"}
        failed = []
        for name in args.only:
            print(f"--- {name}", flush=True)
            done = subprocess.run(
                [sys.executable, "-m", f"benchmarks.{name}"],
                env=environment,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            if done.returncode != 0:
                failed.append(name)
                print(done.stdout[-3000:])
        results = (
            [json.loads(line) for line in results_file.read_text().splitlines()]
            if results_file.exists()
            else []
        )
    print(f"\n=== {len(results)} targets in {(time.monotonic() - started) / 60:.1f} min")
    for result in results:
        verdict = "HOLDS" if result["holds"] else "MISSES"
        print(
            f"{result['name']}: {result['figure']:.3f} (target {result['target']}) {verdict}  "
            f"{result['detail']}"
        )
    for name in failed:
        print(f"{name}: did not finish (see its output above)")
    return 0 if results and all(r["holds"] for r in results) and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
