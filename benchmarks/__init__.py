"""Speed and memory benchmarks that print ratios measured in one run (see README.md).

Importing pointseg first applies its torchvision compatibility shim before Lightning is imported.
"""

import pointseg  # noqa: F401
