"""One results table from the `pointseg evaluate --json` reports of a folder.

Each ``NAME.json`` in the folder (a report of ``pointseg evaluate ... --json NAME.json``) becomes a
row: its macro mIoU and per-class IoU, named by the file. The table is written to the folder's
``results.md`` (a temporary file, then renamed):

    python docs/experiments/evaluation_table.py docs/experiments/dubai-lite0-d4
"""

import json
import sys
from pathlib import Path

if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
    sys.exit("usage: python docs/experiments/evaluation_table.py FOLDER (holding evaluate --json reports)")
folder = Path(sys.argv[1])
reports = {}
for path in sorted(folder.glob("*.json")):
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        sys.exit(f"error: {path}: not readable as JSON ({error})")
    if not isinstance(report, dict) or not {"miou", "per_class_iou"} <= report.keys():
        sys.exit(f"error: {path}: expected a pointseg evaluate --json report with miou and per_class_iou")
    reports[path.stem] = report
if not reports:
    sys.exit(f"error: {folder}: no pointseg evaluate --json report (*.json) found")
classes = list(next(iter(reports.values()))["per_class_iou"])
lines = [
    "# Test mIoU of saved checkpoints, scored again by `pointseg evaluate`",
    "",
    "Macro mIoU (mean of per-class IoU, one confusion matrix over every test image) on dense masks; "
    "one row per report in this folder, named by its file, with the test-time augmentation the report "
    "records; each report also names its checkpoint and images.",
    "",
    "| regime | tta | test mIoU (%) | " + " | ".join(classes) + " |",
    "|---|---|---:|" + "---:|" * len(classes),
]
for name, report in reports.items():
    per_class = " | ".join(f"{100 * report['per_class_iou'][label]:.1f}" for label in classes)
    lines.append(
        f"| {name} | {report.get('tta', 'not recorded')} | {100 * report['miou']:.1f} | {per_class} |"
    )
temporary = folder / "results.md.tmp"
temporary.write_text("\n".join(lines) + "\n")
temporary.replace(folder / "results.md")
print("\n".join(lines[4:]))
