"""The names of the dataset formats, as a type that option parsers and configs can use.

:data:`pointseg.datasets.registry.DATASETS` holds one adapter per name (a test checks they agree).
"""

from typing import Literal

DatasetFormat = Literal["deepglobe", "landcoverai", "dubai", "folder"]
