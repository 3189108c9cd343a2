"""Losses for training from sparse point labels, and the ordinary dense cross-entropy.

The mathematics lives in pure functions (:func:`partial_cross_entropy`,
:func:`partial_focal_cross_entropy`, :func:`dense_cross_entropy`), each computing the labelled
negative log-likelihood through ``F.cross_entropy(..., ignore_index=IGNORE_INDEX,
reduction="sum"/"none")`` as segmentation_models_pytorch's functional losses do; the
``nn.Module`` classes only hold settings and call them. :func:`build_loss` picks one by name.

Every loss takes ``logits`` of shape ``(B, C, H, W)`` (unnormalised class scores) and ``target``
of shape ``(B, H, W)`` (int64 class indices in ``0..C-1``, or ``IGNORE_INDEX`` = 255 on pixels
without a label). The partial losses are computed in float32 even when the logits are bfloat16
or float16, and even inside an autocast region.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointseg.errors import PointsegError
from pointseg.schema import IGNORE_INDEX

LOSS_NAMES = ("pce", "pfce", "ce")
"""Names accepted by :func:`build_loss`: partial CE, partial focal CE, dense CE."""


def _class_weight(logits: Tensor, target: Tensor, weight: Tensor | None) -> Tensor | None:
    """Check the shapes; return the class weights as float32 on the logits' device (or None).

    Raises:
        ValueError: if ``logits`` is not ``(B, C, H, W)`` or ``target`` not ``(B, H, W)``.
        PointsegError: if ``weight`` does not have one value per class.
    """
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"expected logits (B, C, H, W) and target (B, H, W), got {tuple(logits.shape)} "
            f"and {tuple(target.shape)}"
        )
    num_classes = logits.shape[1]
    if weight is None:
        return None
    if weight.shape != (num_classes,):
        raise PointsegError(
            f"class_weights has {weight.numel()} value(s) but the model predicts {num_classes} "
            "classes; give one weight per class"
        )
    return weight.to(device=logits.device, dtype=torch.float32)


def _per_labelled_pixel(total: Tensor, target: Tensor, ignore_index: int, eps: float) -> Tensor:
    """Divide a sum over labelled pixels by their count (+ ``eps``)."""
    return total / ((target != ignore_index).sum() + eps)


def partial_cross_entropy(
    logits: Tensor,
    target: Tensor,
    ignore_index: int = IGNORE_INDEX,
    weight: Tensor | None = None,
    eps: float = 1e-8,
) -> Tensor:
    r"""Cross-entropy averaged over the labelled pixels only (partial CE).

    .. math::

        L = \frac{\sum_{i \in \Omega_L} w_{y_i} \, (-\log p_{i, y_i})}{|\Omega_L| + \epsilon}

    where :math:`\Omega_L` is the set of labelled pixels (``target != ignore_index``) over the
    whole batch and :math:`p_i = \mathrm{softmax}(\text{logits}_i)`.

    With class weights the normaliser stays the number of labelled pixels
    :math:`|\Omega_L|`. This is not the normalisation of ``torch.nn.functional.cross_entropy``,
    which divides a weighted sum by the sum of the weights :math:`\sum_i w_{y_i}`; dividing by the
    pixel count keeps the loss scale independent of which classes a batch happens to contain, so
    a weight of 2 really doubles that class's contribution.

    Args:
        logits: ``(B, C, H, W)`` unnormalised scores, any float dtype.
        target: ``(B, H, W)`` int64 labels in ``0..C-1``; ``ignore_index`` marks unlabelled pixels.
        ignore_index: Label of unlabelled pixels (default ``IGNORE_INDEX`` = 255).
        weight: Optional ``(C,)`` class weights; each pixel's loss is multiplied by
            ``weight[target]``.
        eps: Added to the labelled-pixel count so that an all-unlabelled batch gives 0, not NaN.

    Returns:
        Scalar float32 loss in nats per labelled pixel. It is 0, with an all-zero gradient, when no
        pixel is labelled; unlabelled pixels always receive exactly zero gradient.

    Raises:
        PointsegError: if ``weight`` does not have one value per class.
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        class_weight = _class_weight(logits, target, weight)
        # Ignored pixels contribute 0 to the sum and receive exactly zero gradient.
        total = F.cross_entropy(
            logits.float(), target.long(), weight=class_weight, ignore_index=ignore_index, reduction="sum"
        )
        return _per_labelled_pixel(total, target, ignore_index, eps)


def partial_focal_cross_entropy(
    logits: Tensor,
    target: Tensor,
    gamma: float = 2.0,
    ignore_index: int = IGNORE_INDEX,
    weight: Tensor | None = None,
    eps: float = 1e-8,
) -> Tensor:
    r"""Softmax focal loss averaged over the labelled pixels only (partial focal CE).

    .. math::

        L = \frac{\sum_{i \in \Omega_L} w_{y_i} (1 - p_{i, y_i})^\gamma \, (-\log p_{i, y_i})}
                 {|\Omega_L| + \epsilon}

    This is the multi-class (softmax) focal loss: :math:`p_{i, y_i} = \exp(-\mathrm{CE}_i)` is the
    softmax probability of the labelled class. It is not the sigmoid one-vs-rest focal loss of
    ``segmentation_models_pytorch.losses.FocalLoss``. With ``gamma=0`` it equals
    :func:`partial_cross_entropy`. Weights and normalisation are as in
    :func:`partial_cross_entropy`.

    Args:
        logits: ``(B, C, H, W)`` unnormalised scores, any float dtype.
        target: ``(B, H, W)`` int64 labels in ``0..C-1``; ``ignore_index`` marks unlabelled pixels.
        gamma: Focusing exponent, >= 0; larger values down-weight pixels that are already right.
        ignore_index: Label of unlabelled pixels (default ``IGNORE_INDEX`` = 255).
        weight: Optional ``(C,)`` class weights.
        eps: Added to the labelled-pixel count so that an all-unlabelled batch gives 0, not NaN.

    Returns:
        Scalar float32 loss per labelled pixel; 0 with an all-zero gradient when no pixel is
        labelled.

    Raises:
        PointsegError: if ``weight`` does not have one value per class.
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        class_weight = _class_weight(logits, target, weight)
        # Per-pixel -log p_t; 0, with zero gradient, at ignored pixels.
        nll = F.cross_entropy(logits.float(), target.long(), ignore_index=ignore_index, reduction="none")
        # 1 - p_t = 1 - exp(-CE), computed as -expm1(-CE) to keep precision when CE is small. The
        # floor keeps the gradient of x**gamma finite where p_t rounds to 1 (also for 0 < gamma < 1).
        one_minus_pt = (-torch.expm1(-nll)).clamp_min(torch.finfo(torch.float32).tiny)
        per_pixel = one_minus_pt.pow(gamma) * nll
        if class_weight is not None:
            labelled = target != ignore_index
            per_pixel = per_pixel * class_weight[torch.where(labelled, target, 0).long()]
        return _per_labelled_pixel(per_pixel.sum(), target, ignore_index, eps)


def dense_cross_entropy(
    logits: Tensor,
    target: Tensor,
    ignore_index: int = IGNORE_INDEX,
    weight: Tensor | None = None,
) -> Tensor:
    """Standard cross-entropy for dense masks: ``F.cross_entropy`` with ``ignore_index``.

    The mean is torch's: over non-ignored pixels, and with class weights the weighted sum divided
    by the sum of the pixels' weights. It is NaN when every pixel is ignored; use
    :func:`partial_cross_entropy` for sparse labels.

    Args:
        logits: ``(B, C, H, W)`` unnormalised scores.
        target: ``(B, H, W)`` int64 labels; ``ignore_index`` (default 255) marks ignored pixels.
        ignore_index: Label of ignored pixels.
        weight: Optional ``(C,)`` class weights.

    Returns:
        Scalar float32 loss.
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        class_weight = _class_weight(logits, target, weight)
        return F.cross_entropy(logits.float(), target, weight=class_weight, ignore_index=ignore_index)


class _WeightedLoss(nn.Module):
    """Holds ``ignore_index`` and an optional ``(C,)`` class-weight buffer."""

    weight: Tensor | None

    def __init__(self, ignore_index: int = IGNORE_INDEX, weight: Tensor | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        # Not persistent: class weights come from the settings, not from checkpoints.
        self.register_buffer(
            "weight", None if weight is None else weight.detach().float().clone(), persistent=False
        )

    def extra_repr(self) -> str:
        """Show the settings in ``repr(module)``."""
        return f"ignore_index={self.ignore_index}"


class PartialCrossEntropyLoss(_WeightedLoss):
    """Module form of :func:`partial_cross_entropy`; ``forward(logits, target)``."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return the partial CE of ``(B, C, H, W)`` logits against ``(B, H, W)`` labels."""
        return partial_cross_entropy(logits, target, ignore_index=self.ignore_index, weight=self.weight)


class PartialFocalCrossEntropyLoss(_WeightedLoss):
    """Module form of :func:`partial_focal_cross_entropy`; ``forward(logits, target)``."""

    def __init__(
        self, gamma: float = 2.0, ignore_index: int = IGNORE_INDEX, weight: Tensor | None = None
    ) -> None:
        super().__init__(ignore_index=ignore_index, weight=weight)
        self.gamma = gamma

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return the partial focal CE of ``(B, C, H, W)`` logits against ``(B, H, W)`` labels."""
        return partial_focal_cross_entropy(
            logits, target, gamma=self.gamma, ignore_index=self.ignore_index, weight=self.weight
        )

    def extra_repr(self) -> str:
        """Show the settings in ``repr(module)``."""
        return f"gamma={self.gamma}, ignore_index={self.ignore_index}"


class CrossEntropyLoss(_WeightedLoss):
    """Module form of :func:`dense_cross_entropy`; ``forward(logits, target)``."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return the dense CE of ``(B, C, H, W)`` logits against ``(B, H, W)`` labels."""
        return dense_cross_entropy(logits, target, ignore_index=self.ignore_index, weight=self.weight)


def build_loss(
    name: str,
    gamma: float = 2.0,
    class_weights: Sequence[float] | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> nn.Module:
    """Create a loss module by name.

    Args:
        name: ``"pce"`` (partial cross-entropy), ``"pfce"`` (partial focal cross-entropy) or
            ``"ce"`` (dense cross-entropy).
        gamma: Focusing exponent for ``"pfce"`` (>= 0); ignored by the others.
        class_weights: Optional weight per class (one per class, each >= 0).
        ignore_index: Label of unlabelled/ignored pixels (default ``IGNORE_INDEX`` = 255).

    Returns:
        An ``nn.Module`` called as ``loss(logits (B, C, H, W), target (B, H, W))``.

    Raises:
        PointsegError: for an unknown name, a negative ``gamma`` or a negative/non-finite weight.
    """
    weight = None
    if class_weights is not None:
        weight = torch.tensor([float(w) for w in class_weights], dtype=torch.float32)
        if weight.numel() == 0 or not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()):
            raise PointsegError(
                f"class_weights {list(class_weights)!r}: expected one finite, non-negative number per class"
            )
    if name == "pce":
        return PartialCrossEntropyLoss(ignore_index=ignore_index, weight=weight)
    if name == "pfce":
        if not gamma >= 0:
            raise PointsegError(f"focal loss gamma {gamma!r}: expected a number >= 0")
        return PartialFocalCrossEntropyLoss(gamma=gamma, ignore_index=ignore_index, weight=weight)
    if name == "ce":
        return CrossEntropyLoss(ignore_index=ignore_index, weight=weight)
    choices = ", ".join(repr(n) for n in LOSS_NAMES)
    raise PointsegError(f"loss {name!r} is not known; expected one of {choices}")
