"""pointseg: land-cover segmentation from sparse point labels."""

from pointseg.torchvision_compat import ensure_torchvision_importable

ensure_torchvision_importable()

__version__ = "0.1.0"
