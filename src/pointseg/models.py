"""Segmentation networks: DeepLabV3+/DeepLabV3 from segmentation_models_pytorch, GroupNorm by default.

:func:`build_model` always creates the smp model with ``encoder_weights=None`` (smp's default,
``"imagenet"``, downloads from the Hugging Face Hub and hangs for a long time without a network)
and then loads weights itself: from a local file, from a package that ships them (see
:mod:`pointseg.pretrained`), or, after a quick connectivity check, from the hub through smp/timm.

Why GroupNorm: point labels make for small batches, and smp's DeepLabV3(+) decoder hard-codes
``nn.BatchNorm2d``, including after the ASPP image-pooling branch whose input is ``1 x 1``. In
training mode BatchNorm over a ``(1, C, 1, 1)`` tensor has a single value per channel and raises
``ValueError: Expected more than 1 value per channel when training``, so batch size 1 fails
outright, and small batches give noisy statistics. GroupNorm normalises each sample on its own and
behaves the same in training and evaluation. With a pretrained encoder, ``norm="frozen"`` keeps its
ImageNet BatchNorm statistics fixed instead (GroupNorm cannot reuse them: copying the affine
parameters of a BatchNorm into a GroupNorm does not reproduce what the layer computed).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import pickle
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

import pointseg.torchvision_compat  # noqa: F401  # isort: skip  (shim first: torchvision)
import segmentation_models_pytorch as smp
import torch
from huggingface_hub import constants as hf_constants
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from segmentation_models_pytorch.encoders import TimmUniversalEncoder, get_encoder
from segmentation_models_pytorch.encoders import encoders as smp_encoders
from segmentation_models_pytorch.encoders._utils import patch_first_conv
from timm.layers import BatchNormAct2d, GroupNormAct, freeze_batch_norm_2d
from timm.models import get_pretrained_cfg, is_model, is_model_pretrained
from torch import Tensor, nn

from pointseg.choices import Norm
from pointseg.errors import PointsegError
from pointseg.pretrained import offline_weights

logger = logging.getLogger(__name__)

ARCHITECTURES: dict[str, type[smp.base.SegmentationModel]] = {
    "deeplabv3plus": smp.DeepLabV3Plus,
    "deeplabv3": smp.DeepLabV3,
}
"""Architecture names accepted by :func:`build_model`."""

NORMS: tuple[str, ...] = get_args(Norm)
"""Normalisation layers accepted by :func:`build_model`."""

GROUP_COUNTS = (32, 16, 8, 4, 2, 1)
"""GroupNorm uses the first of these that divides the channel count."""

NETWORK_TIMEOUT_S = 3.0
"""Seconds to wait for the weights host before concluding there is no network."""

_BATCHNORM_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def build_model(
    num_classes: int,
    in_channels: int = 3,
    arch: str = "deeplabv3plus",
    encoder: str = "resnet50",
    norm: str = "group",
    weights: str | None = None,
    atrous_rates: Sequence[int] | None = None,
    output_stride: int | None = None,
) -> nn.Module:
    """Create a segmentation network.

    Args:
        num_classes: Number of output classes ``C``.
        in_channels: Number of input bands.
        arch: ``"deeplabv3plus"`` (smp ``DeepLabV3Plus``, output stride 16) or ``"deeplabv3"``
            (smp ``DeepLabV3``, output stride 8).
        encoder: Any smp encoder name (``"resnet50"``, ``"efficientnet-b4"``, ...) or ``"tu-"``
            followed by a timm model name (``"tu-convnext_tiny"``).
        norm: ``"group"`` (default): every ``BatchNorm2d``, in encoder, decoder and heads, becomes
            a ``GroupNorm`` (see :func:`convert_batchnorm_to_groupnorm`); ``"batch"``: keep smp's
            BatchNorm, which fails in training at batch size 1 (see the module docstring);
            ``"frozen"``: the encoder's BatchNorms become torchvision's ``FrozenBatchNorm2d``
            (timm's ``FrozenBatchNormAct2d`` where an activation is fused), which keep the loaded
            statistics and affine parameters fixed and normalise the same way in training and
            evaluation, while the decoder and heads, which have nothing pretrained, use GroupNorm.
        weights: ``None`` or ``"none"`` for random initialisation; the path of a local state dict
            (``.pth``, ``.pt``, ``.bin``, ``.safetensors``; a checkpoint holding one under
            ``"state_dict"`` also works) for the encoder or the whole model; or a hub name that
            smp knows for this encoder, e.g. ``"imagenet"`` (for ``"tu-"`` encoders any hub name
            means timm's pretrained weights for the tag in the encoder name). Pairs shipped in an
            installed package (:data:`pointseg.pretrained.OFFLINE_WEIGHTS`:
            ``"tu-efficientnet_lite0"``, ``_lite1`` or ``_lite2`` with ``"imagenet"``) load
            without a network. Pretrained weights for 3 bands are adapted to ``in_channels`` the
            way smp does it.
        atrous_rates: Dilation rates of the ASPP module's three atrous branches; ``None``: smp's
            ``(12, 24, 36)``. At output stride 16 a 256-pixel crop gives a 16x16 feature map, so
            rates above 15 reach only padding in training (DeepLabV3 used ``(6, 12, 18)`` there).
        output_stride: 8 or 16: how far the encoder downsamples, its last stages dilated instead
            of strided beyond that; ``None``: the architecture's (16 for ``deeplabv3plus``, 8 for
            ``deeplabv3``). Stride 8 keeps finer detail at several times the compute.

    Returns:
        An ``nn.Module`` mapping ``(B, in_channels, H, W)`` float images to ``(B, C, H, W)``
        logits; ``H`` and ``W`` must be multiples of ``model.encoder.output_stride``.

    Raises:
        PointsegError: for an unknown architecture, encoder or norm; a weights file that is
            missing, unreadable or has no tensor matching the model; a hub name the encoder does
            not have; or hub weights requested without a network (raised within a few seconds).
    """
    if num_classes < 1 or in_channels < 1:
        raise PointsegError(
            f"num_classes={num_classes}, in_channels={in_channels}: expected positive integers"
        )
    if arch not in ARCHITECTURES:
        raise PointsegError(f"architecture {arch!r} is not known; expected one of {list(ARCHITECTURES)}")
    if norm not in NORMS:
        raise PointsegError(f"norm {norm!r} is not known; expected one of {list(NORMS)}")
    _check_encoder_name(encoder)

    if atrous_rates is not None and (len(atrous_rates) != 3 or min(atrous_rates) < 1):
        raise PointsegError(f"atrous rates {list(atrous_rates)}: expected three positive integers")
    if output_stride not in (None, 8, 16):
        raise PointsegError(f"output stride {output_stride}: expected 8 or 16")
    decoder: dict[str, Any] = {} if atrous_rates is None else {"decoder_atrous_rates": tuple(atrous_rates)}
    if output_stride is not None:
        decoder["encoder_output_stride"] = output_stride
    model = ARCHITECTURES[arch](
        encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=num_classes, **decoder
    )
    if weights is not None and weights.lower() != "none":
        _load_weights(model, encoder, weights, in_channels, ignore_batchnorm_statistics=norm == "group")
    if norm == "frozen":
        freeze_batch_norm_2d(model.get_submodule("encoder"))  # in place: the encoder is no BatchNorm
    if norm in ("group", "frozen"):
        convert_batchnorm_to_groupnorm(model)
    return model


def _load_weights(
    model: nn.Module, encoder: str, weights: str, in_channels: int, ignore_batchnorm_statistics: bool
) -> None:
    """Load ``weights`` (a local file, or a hub name shipped offline or downloaded) into ``model``."""
    path = Path(weights).expanduser()
    if path.is_file():
        load_weights_file(model, path, ignore_batchnorm_statistics=ignore_batchnorm_statistics)
        return
    if path.suffix.lower() in (".pth", ".pt", ".bin", ".safetensors", ".ckpt") or "/" in weights:
        raise PointsegError(f"weights file {weights} does not exist")
    shipped = offline_weights(encoder, weights)
    if shipped is not None:
        source = f"{weights} weights of {encoder} (shipped offline)"
        load_state(model, shipped, source, ignore_batchnorm_statistics=ignore_batchnorm_statistics)
        return
    pretrained = _download_encoder(encoder, weights, in_channels)
    model.get_submodule("encoder").load_state_dict(pretrained.state_dict())


def _check_encoder_name(encoder: str) -> None:
    """Raise PointsegError unless smp (or timm, for ``tu-`` names) knows ``encoder``."""
    if encoder.startswith("tu-"):
        if not is_model(encoder[3:]):
            raise PointsegError(
                f"encoder {encoder!r}: timm has no model {encoder[3:]!r}; see timm.list_models(), "
                "e.g. 'tu-resnet50', 'tu-convnext_tiny', 'tu-efficientnet_b0'"
            )
        return
    names = smp.encoders.get_encoder_names()
    if encoder not in names:
        close = difflib.get_close_matches(encoder, names, n=3) or ["resnet50", "resnet18", "efficientnet-b4"]
        raise PointsegError(
            f"encoder {encoder!r} is not known to segmentation_models_pytorch; did you mean "
            f"{' or '.join(repr(n) for n in close)}? Any of the {len(names)} smp encoders "
            "(smp.encoders.get_encoder_names()) or 'tu-<timm model>' works"
        )


def convert_batchnorm_to_groupnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` with a ``GroupNorm`` over the same channels.

    The number of groups is the largest of 32, 16, 8, 4, 2, 1 that divides the channel count
    (e.g. 32 for 64 or 256 channels, 16 for DeepLabV3+'s 48-channel skip branch). The BatchNorm's
    affine scale and shift (``weight``, ``bias``) and ``eps`` are copied, so pretrained values
    survive; its running statistics are dropped, since GroupNorm has none. timm's
    ``BatchNormAct2d`` (BatchNorm with a fused activation) becomes timm's ``GroupNormAct`` with the
    same activation and drop layers.

    Args:
        module: A model; changed in place.

    Returns:
        ``module`` itself, or the replacement if ``module`` is itself a ``BatchNorm2d``.
    """
    if isinstance(module, nn.BatchNorm2d):
        return _group_norm_like(module)
    for name, child in module.named_children():
        replacement = convert_batchnorm_to_groupnorm(child)
        if replacement is not child:
            setattr(module, name, replacement)
    return module


def _group_norm_like(batch_norm: nn.BatchNorm2d) -> nn.GroupNorm:
    channels = batch_norm.num_features
    groups = next(g for g in GROUP_COUNTS if channels % g == 0)
    reference = batch_norm.weight if batch_norm.affine else batch_norm.running_mean
    factory: dict[str, Any] = (
        {} if reference is None else {"device": reference.device, "dtype": reference.dtype}
    )
    group_norm: nn.GroupNorm
    if isinstance(batch_norm, BatchNormAct2d):
        group_norm = GroupNormAct(channels, groups, eps=batch_norm.eps, affine=batch_norm.affine, **factory)
        group_norm.act = batch_norm.act
        group_norm.drop = batch_norm.drop
    else:
        group_norm = nn.GroupNorm(groups, channels, eps=batch_norm.eps, affine=batch_norm.affine, **factory)
    if batch_norm.affine:
        with torch.no_grad():
            group_norm.weight.copy_(batch_norm.weight)
            group_norm.bias.copy_(batch_norm.bias)
    group_norm.train(batch_norm.training)
    return group_norm


def load_weights_file(model: nn.Module, path: Path, ignore_batchnorm_statistics: bool = False) -> None:
    """Load a local state dict into ``model`` or into its encoder, whichever it fits best.

    The file may hold the whole model's state dict, the encoder's (as smp publishes them, keys
    like ``conv1.weight``), a timm model's (for ``tu-`` encoders), or any of these under a common
    key prefix such as ``model.`` or inside a checkpoint's ``"state_dict"``. Tensors are matched by
    name and shape and loaded non-strictly; a first convolution made for a different number of
    input bands is adapted with smp's ``patch_first_conv`` (bands repeated and rescaled). The
    numbers of loaded, missing and unexpected tensors are logged.

    Args:
        model: An smp segmentation model (with ``.encoder``).
        path: ``.safetensors`` file, or any file ``torch.load`` reads with ``weights_only=True``.
        ignore_batchnorm_statistics: Do not count BatchNorm running statistics as missing (they are
            dropped anyway when converting to GroupNorm).

    Raises:
        PointsegError: if the file cannot be read, holds no tensors, or none of them matches.
    """
    load_state(model, _read_state_dict(path), str(path), ignore_batchnorm_statistics)


def load_state(
    model: nn.Module, state: Mapping[str, Tensor], source: str, ignore_batchnorm_statistics: bool = False
) -> None:
    """Load a state dict into ``model`` or into its encoder, whichever it fits best.

    This is :func:`load_weights_file` for a state dict already in memory; see there for how
    tensors are matched, adapted and reported.

    Args:
        model: An smp segmentation model (with ``.encoder``).
        state: ``name -> Tensor``.
        source: Where ``state`` comes from, for messages (a path, or a description).
        ignore_batchnorm_statistics: Do not count BatchNorm running statistics as missing.

    Raises:
        PointsegError: if none of the tensors matches.
    """
    encoder = model.get_submodule("encoder")
    targets: dict[str, nn.Module] = {"model": model, "encoder": encoder}
    if isinstance(encoder, TimmUniversalEncoder):
        targets["timm encoder"] = encoder.get_submodule("model")
    prefixes = {""} | {key.split(".", 1)[0] + "." for key in state if "." in key}
    best: tuple[int, str, str, dict[str, Tensor], str] = (0, "", "", {}, "")
    for target_name, target in targets.items():
        own = target.state_dict()
        for prefix in sorted(prefixes):
            candidate = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
            candidate, adapted = _adapt_first_conv(target, candidate)
            matched = {k: v for k, v in candidate.items() if k in own and own[k].shape == v.shape}
            if len(matched) > best[0]:
                best = (len(matched), target_name, prefix, matched, adapted)
    count, target_name, prefix, matched, adapted = best
    if count == 0:
        model_keys = list(model.state_dict())[:3]
        raise PointsegError(
            f"{source}: none of its {len(state)} tensors matches the model or its encoder by name and "
            f"shape (file has e.g. {list(state)[:3]}; the model has e.g. {model_keys}). Expected a "
            f"state dict saved from {getattr(model, 'name', type(model).__name__)} or from its encoder"
        )
    target = targets[target_name]
    # BatchNorm's step counter is never worth a warning; the statistics only when they are dropped.
    statistics = _BATCHNORM_STATISTICS if ignore_batchnorm_statistics else _BATCHNORM_STATISTICS[-1:]
    skipped = {
        f"{name}.{stat}"
        for name, module in target.named_modules()
        if isinstance(module, nn.BatchNorm2d)
        for stat in statistics
    }
    missing = [key for key in target.state_dict() if key not in matched and key not in skipped]
    unexpected = [key for key in state if not (key.startswith(prefix) and key[len(prefix) :] in matched)]
    target.load_state_dict(matched, strict=False)
    summary = (
        f"{source}: loaded {count} tensors into the {target_name}"
        + (f" (file prefix {prefix!r})" if prefix else "")
        + f"; {len(missing)} missing, {len(unexpected)} unexpected or mismatched"
        + adapted
    )
    if missing:
        logger.warning("%s; missing e.g. %s", summary, missing[:5])
    else:
        logger.info("%s%s", summary, f"; unexpected e.g. {unexpected[:5]}" if unexpected else "")


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Read a flat ``name -> Tensor`` mapping from a weights file."""
    data: Any
    try:
        if path.suffix.lower() == ".safetensors":
            data = load_safetensors(path, device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, SafetensorError, EOFError, pickle.UnpicklingError) as error:
        raise PointsegError(
            f"{path}: cannot read weights ({error}). Expected a state dict saved with torch.save "
            "(tensors only) or a .safetensors file"
        ) from error
    if isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        data = data["state_dict"]
    tensors = (
        {str(k): v for k, v in data.items() if isinstance(v, Tensor)} if isinstance(data, Mapping) else {}
    )
    if not tensors:
        raise PointsegError(f"{path}: holds {type(data).__name__} without tensors; expected a state dict")
    return tensors


def _adapt_first_conv(target: nn.Module, state: dict[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    """Adapt the first-conv weight in ``state`` to ``target``'s number of input bands.

    Returns:
        The state dict (a copy if changed) and a note on what was adapted ("" if nothing).
    """
    first = next(((name, m) for name, m in target.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        return state, ""
    key = f"{first[0]}.weight" if first[0] else "weight"
    weight, conv = state.get(key), first[1]
    if (
        weight is None
        or weight.ndim != 4
        or weight.shape[1] == conv.in_channels
        or weight.shape[0] != conv.out_channels
        or tuple(weight.shape[2:]) != conv.kernel_size
        or conv.groups != 1
    ):
        return state, ""
    patched = nn.Conv2d(weight.shape[1], weight.shape[0], (weight.shape[2], weight.shape[3]), bias=False)
    patched.weight = nn.Parameter(weight.float())
    patch_first_conv(patched, new_in_channels=conv.in_channels, default_in_channels=weight.shape[1])
    note = f"; adapted {key} from {weight.shape[1]} to {conv.in_channels} input bands"
    return {**state, key: patched.weight.detach()}, note


def _download_encoder(encoder: str, weights: str, in_channels: int) -> nn.Module:
    """Build ``encoder`` with hub weights through smp, after checking that the host is reachable."""
    if encoder.startswith("tu-"):
        timm_name = encoder[3:]
        if not is_model_pretrained(timm_name):
            raise PointsegError(
                f"encoder {encoder!r}: timm has no pretrained weights for {timm_name!r}; use weights=None "
                "or a local file"
            )
        config = get_pretrained_cfg(timm_name)
        repo = getattr(config, "hf_hub_id", None)
        url = getattr(config, "url", None) if not repo else None
        url = url or hf_constants.ENDPOINT
    else:
        available = smp_encoders[encoder]["pretrained_settings"]
        if weights not in available:
            raise PointsegError(
                f"weights {weights!r}: encoder {encoder!r} has hub weights {list(available)}; "
                "or pass None for random initialisation or the path of a local weights file"
            )
        repo = available[weights]["repo_id"]
        url = hf_constants.ENDPOINT
    hint = f"`hf download {repo} model.safetensors --local-dir DIR`" if repo else url
    reason = "HF_HUB_OFFLINE is set" if hf_constants.HF_HUB_OFFLINE else _unreachable_reason(url)
    if reason is not None:
        raise PointsegError(
            f"cannot download encoder weights {weights!r} for {encoder}: no network ({reason}). "
            f"Download them where you have a connection (e.g. {hint}) and pass the local file path "
            "as weights"
        )
    hub_weights: str | bool = True if encoder.startswith("tu-") else weights
    return get_encoder(encoder, in_channels=in_channels, weights=hub_weights)


def _unreachable_reason(url: str, timeout: float = NETWORK_TIMEOUT_S) -> str | None:
    """Return why ``url``'s host cannot be reached within ``timeout`` seconds, or None if it can.

    Sends one HEAD request (honouring ``https_proxy``); any HTTP answer, even an error status,
    counts as reachable. The request runs in a daemon thread so that a slow DNS lookup, which
    socket timeouts do not cover, cannot make this wait longer than ``timeout``.
    """
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            outcome.append(f"cannot reach {urlsplit(url).netloc or url}: {reason}")

    thread = threading.Thread(target=probe, name="pointseg-network-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"no answer from {urlsplit(url).netloc or url} within {timeout:g} s"
    return outcome[0]


@contextlib.contextmanager
def running_statistics_kept(module: nn.Module) -> Iterator[None]:
    """Within the block, BatchNorm layers keep their running statistics (training still uses the batch).

    Every ``_BatchNorm`` stops tracking there (``track_running_stats = False``): in training mode it
    normalises by the batch as before, but neither the running mean and variance nor the batch counter
    (which a cumulative average, ``momentum=None``, weighs by) change. Used for perturbed copies of the
    crops, whose colours would otherwise shift the statistics that evaluation normalises with.
    """
    layers = [layer for layer in module.modules() if isinstance(layer, nn.modules.batchnorm._BatchNorm)]
    tracking = [layer.track_running_stats for layer in layers]
    try:
        for layer in layers:
            layer.track_running_stats = False
        yield
    finally:
        for layer, tracked in zip(layers, tracking, strict=True):
            layer.track_running_stats = tracked
