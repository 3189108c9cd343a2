"""Make ``import torchvision`` work when its compiled ops cannot load.

PyPI's torchvision wheels are CUDA builds. Next to a CPU-only torch their extension
``torchvision/_C`` fails to load, so ``torchvision::nms`` is never defined and
``import torchvision`` raises ``RuntimeError: operator torchvision::nms does not exist``
(pytorch/vision#9085). segmentation-models-pytorch, timm, torchmetrics and Lightning all
import torchvision.

Importing this module applies the shim (:func:`ensure_torchvision_importable`). Every pointseg
module that imports one of those packages imports this module first, as its first import::

    import pointseg.torchvision_compat  # noqa: F401  # isort: skip  (shim first: torchvision)

so the shim costs nothing (torch is not even imported) until a module that needs it is
imported: ``import pointseg`` and ``pointseg --help`` stay free of torch.

The fix registers only the op *schemas* that torchvision's import-time fake-kernel
registrations need (``nms`` and ``qnms``). Calling them would still fail, but pointseg
never does: it needs torchvision for imports only.

Where torchvision's extension loads normally (a matching CPU or CUDA build), or where
torchvision is not installed, this does nothing.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

import torch

_MISSING_OP_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)

# Keeps the registered schemas alive: torch removes a Library's definitions when it is collected.
_shim_library: torch.library.Library | None = None


def torchvision_needs_shim() -> bool:
    """Return whether torchvision is installed but its compiled extension ``_C`` cannot load.

    Loading the extension is the first thing ``import torchvision`` does, and loading is
    idempotent, so trying it here changes nothing for a working install.
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    package_dir = Path(spec.origin).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        extension = package_dir / f"_C{suffix}"
        if extension.exists():
            try:
                torch.ops.load_library(str(extension))
            except OSError:
                return True
            return False
    return True


def ensure_torchvision_importable() -> bool:
    """Register the missing torchvision op schemas if, and only if, they are needed.

    Returns:
        True if the schemas were registered by this call, False if nothing was needed
        (torchvision absent, already imported, already patched, or its extension loads).
    """
    global _shim_library
    if _shim_library is not None or "torchvision" in sys.modules:
        return False
    if not torchvision_needs_shim():
        return False
    _shim_library = torch.library.Library("torchvision", "DEF")
    for schema in _MISSING_OP_SCHEMAS:
        _shim_library.define(schema)
    return True


ensure_torchvision_importable()
