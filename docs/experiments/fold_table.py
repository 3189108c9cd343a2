"""One table across density sweeps that differ only in their held-out test images (folds).

Each SWEEP folder is the ``--out`` of one ``pointseg experiment density`` run; its ``results.csv``
gives one row per regime, and the run folders' ``environment.json`` name the test images. A
SWEEP written ``VARIANT=FOLDER`` (split at the last ``=``) names the settings its runs changed
(``base`` when not named).
The table has one row per regime, variant and fold (the test tiles, the training tiles, the test
mIoU and IoU per class), then per regime and variant the mean over the folds and its standard
deviation, and is written to ``OUT/results.md`` (a temporary file, then renamed):

    python docs/experiments/fold_table.py OUT [VARIANT=]SWEEP [[VARIANT=]SWEEP ...]

The mean over folds is a mean of per-fold macro mIoUs (each from one confusion matrix over its
test images), not the mIoU of one confusion matrix over every fold.
"""

import csv
import json
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1]) if len(sys.argv) > 1 else None
sweeps = [
    argument.rpartition("=")[::2] if "=" in argument else ("base", argument) for argument in sys.argv[2:]
]
if out is None or not sweeps or not all(Path(folder).is_dir() for _, folder in sweeps):
    sys.exit("usage: python docs/experiments/fold_table.py OUT [VARIANT=]SWEEP ... (density sweep folders)")


def groups(sample_ids: list[str]) -> str:
    """``Tile 1, Tile 2`` for ``["Tile 1/image_part_001", "Tile 2/image_part_001", ...]``."""
    return ", ".join(sorted({sample.split("/")[0] for sample in sample_ids}))


rows: list[tuple[str, str, str, str, dict[str, str]]] = []
for variant, folder in sweeps:
    sweep = Path(folder)
    table = sweep / "results.csv"
    try:
        with table.open() as file:
            results = list(csv.DictReader(file))
    except OSError as error:
        sys.exit(f"error: {table}: not readable ({error}); expected the results.csv of a density sweep")
    if not results or not {"regime", "miou", "run_dir"} <= results[0].keys():
        sys.exit(
            f"error: {table}: expected a density sweep's results.csv with regime, miou and run_dir columns"
        )
    splits = None
    for result in results:
        environment = Path(result["run_dir"] or "") / "environment.json"
        if environment.is_file():
            try:
                splits = json.loads(environment.read_text()).get("splits")
            except (OSError, ValueError, AttributeError) as error:
                sys.exit(f"error: {environment}: not a run's environment.json ({error})")
            break
    if not splits or "test" not in splits or "train" not in splits:
        sys.exit(f"error: {sweep}: no run folder with an environment.json naming its train and test images")
    for result in results:
        rows.append((result["regime"], variant, groups(splits["test"]), groups(splits["train"]), result))
if not rows:
    sys.exit("error: the sweeps hold no result rows")
classes = [key.removeprefix("iou_") for key in rows[0][4] if key.startswith("iou_")]
percent = lambda value: f"{100 * float(value):.1f}"  # noqa: E731
lines = [
    "# Test mIoU with each tile held out in turn",
    "",
    "One row per regime and fold: the same config and seed, trained on the training tiles, the best "
    "checkpoint chosen on the validation images, scored on the dense masks of the test tile (macro mIoU "
    "of one confusion matrix over its images). The mean over folds is the mean of those per-fold scores, "
    "with its sample standard deviation.",
    "",
    "| regime | variant | test | training | test mIoU (%) | " + " | ".join(classes) + " |",
    "|---|---|---|---|---:|" + "---:|" * len(classes),
]
for regime, variant, test, train, result in rows:
    per_class = " | ".join(percent(result[f"iou_{name}"]) for name in classes)
    lines.append(f"| {regime} | {variant} | {test} | {train} | {percent(result['miou'])} | {per_class} |")
lines += [
    "",
    "| regime | variant | folds | mean test mIoU (%) | lowest | highest |",
    "|---|---|---:|---:|---:|---:|",
]
for regime, variant in dict.fromkeys((row[0], row[1]) for row in rows):
    scores = [100 * float(row[4]["miou"]) for row in rows if (row[0], row[1]) == (regime, variant)]
    spread = f" ± {statistics.stdev(scores):.1f}" if len(scores) > 1 else ""
    mean = f"{statistics.mean(scores):.1f}{spread}"
    lines.append(f"| {regime} | {variant} | {len(scores)} | {mean} | {min(scores):.1f} | {max(scores):.1f} |")
lines += ["", "Made by `python docs/experiments/fold_table.py " + " ".join(sys.argv[1:]) + "`.", ""]
out.mkdir(parents=True, exist_ok=True)
temporary = out / "results.md.tmp"
temporary.write_text("\n".join(lines))
temporary.replace(out / "results.md")
print(out / "results.md")
