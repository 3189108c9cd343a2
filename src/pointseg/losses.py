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
from typing import Any

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

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return the partial CE of ``(B, C, H, W)`` logits against ``(B, H, W)`` labels.

        ``weight``: class weights for this call instead of the module's.
        """
        weight = self.weight if weight is None else weight
        return partial_cross_entropy(logits, target, ignore_index=self.ignore_index, weight=weight)


class PartialFocalCrossEntropyLoss(_WeightedLoss):
    """Module form of :func:`partial_focal_cross_entropy`; ``forward(logits, target)``."""

    def __init__(
        self, gamma: float = 2.0, ignore_index: int = IGNORE_INDEX, weight: Tensor | None = None
    ) -> None:
        super().__init__(ignore_index=ignore_index, weight=weight)
        self.gamma = gamma

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return the partial focal CE of ``(B, C, H, W)`` logits against ``(B, H, W)`` labels.

        ``weight``: class weights for this call instead of the module's.
        """
        weight = self.weight if weight is None else weight
        return partial_focal_cross_entropy(
            logits, target, gamma=self.gamma, ignore_index=self.ignore_index, weight=weight
        )

    def extra_repr(self) -> str:
        """Show the settings in ``repr(module)``."""
        return f"gamma={self.gamma}, ignore_index={self.ignore_index}"


class CrossEntropyLoss(_WeightedLoss):
    """Module form of :func:`dense_cross_entropy`; ``forward(logits, target)``."""

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return the dense CE of ``(B, C, H, W)`` logits against ``(B, H, W)`` labels.

        ``weight``: class weights for this call instead of the module's.
        """
        weight = self.weight if weight is None else weight
        return dense_cross_entropy(logits, target, ignore_index=self.ignore_index, weight=weight)


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


def batch_class_balance(
    target: Tensor,
    num_classes: int,
    pixel_weight: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    r"""Class weights that give every class present among a batch's labelled pixels the same share.

    .. math::

        w_c = \frac{\sum_i v_i}{K \sum_{i: y_i = c} v_i}

    over the labelled pixels :math:`i` (``target != ignore_index``), with :math:`K` the number of
    classes present and :math:`v_i` the pixel weights (1 when ``pixel_weight`` is None); absent
    classes get 0. Passed as ``weight`` to :func:`partial_cross_entropy` (or, with the same
    ``pixel_weight``, to :func:`weighted_partial_cross_entropy`), the loss becomes the mean over the
    present classes of each class's mean loss, so a class with few points (roads among one point per
    region) weighs as much as one with many. No gradient flows through the weights.

    Args:
        target: ``(B, H, W)`` int64 labels; ``ignore_index`` marks unlabelled pixels.
        num_classes: ``C``.
        pixel_weight: Optional ``(B, H, W)`` non-negative weight per pixel.
        ignore_index: Label of unlabelled pixels.

    Returns:
        ``(C,)`` float32 weights on ``target``'s device; all 0 when no pixel is labelled.
    """
    labelled = target != ignore_index
    classes = target[labelled].long()
    weights = torch.ones(classes.shape) if pixel_weight is None else pixel_weight[labelled].cpu()

    per_class = torch.zeros(num_classes)
    per_class.index_add_(0, classes.cpu(), weights.detach().float())
    present = per_class > 0
    balance = torch.zeros_like(per_class)
    balance[present] = per_class.sum() / (present.sum() * per_class[present])
    return balance.to(target.device)


def weighted_partial_cross_entropy(
    logits: Tensor,
    target: Tensor,
    pixel_weight: Tensor,
    ignore_index: int = IGNORE_INDEX,
    weight: Tensor | None = None,
    eps: float = 1e-8,
) -> Tensor:
    r"""Partial cross-entropy with a weight per pixel (e.g. expanded point labels).

    .. math::

        L = \frac{\sum_{i \in \Omega_L} v_i \, w_{y_i} \, (-\log p_{i, y_i})}
                 {\sum_{i \in \Omega_L} v_i + \epsilon}

    where :math:`v_i` is ``pixel_weight`` (1 on clicked points, below 1 on pixels labelled by
    superpixel expansion, see :func:`pointseg.label_expansion.expand_points`) and :math:`w` the
    optional class weights. The normaliser is the sum of the pixel weights, so with all pixel
    weights 1 this is :func:`partial_cross_entropy`.

    Args:
        logits: ``(B, C, H, W)`` unnormalised scores, any float dtype.
        target: ``(B, H, W)`` int64 labels in ``0..C-1``; ``ignore_index`` marks unlabelled pixels.
        pixel_weight: ``(B, H, W)`` non-negative weights; ignored where ``target`` is
            ``ignore_index``.
        ignore_index: Label of unlabelled pixels (default ``IGNORE_INDEX`` = 255).
        weight: Optional ``(C,)`` class weights.
        eps: Added to the weight sum so that an all-unlabelled batch gives 0, not NaN.

    Returns:
        Scalar float32 loss; 0 with an all-zero gradient when no pixel is labelled.

    Raises:
        ValueError: if ``pixel_weight`` is not shaped like ``target``.
        PointsegError: if ``weight`` does not have one value per class.
    """
    if pixel_weight.shape != target.shape:
        raise ValueError(
            f"expected pixel_weight shaped like target {tuple(target.shape)}, got {tuple(pixel_weight.shape)}"
        )
    with torch.autocast(device_type=logits.device.type, enabled=False):
        class_weight = _class_weight(logits, target, weight)
        # Per-pixel weighted NLL; ignored pixels are exactly 0 with zero gradient.
        nll = F.cross_entropy(
            logits.float(), target.long(), weight=class_weight, ignore_index=ignore_index, reduction="none"
        )
        confidence = torch.where(target != ignore_index, pixel_weight.float(), torch.zeros_like(nll))
        return (nll * confidence).sum() / (confidence.sum() + eps)


def propagation_loss(
    logits: Tensor,
    image: Tensor,
    valid: Tensor | None = None,
    radius: int = 2,
    sigma_colour: float = 0.5,
    sigma_xy: float = 2.0,
    eps: float = 1e-8,
) -> Tensor:
    r"""Pairwise loss that pushes neighbouring pixels of similar colour to the same class.

    A gated-CRF-like energy (Obukhov et al., "Gated CRF loss for weakly supervised semantic
    image segmentation", 2019) with the quadratic relaxation of the Potts model:

    .. math::

        L = \frac{1}{|V| + \epsilon} \sum_{\{i, j\} \subset V,\ 0 < \|x_i - x_j\|_\infty \le r}
            K_{ij} \, \tfrac12 \|p_i - p_j\|^2, \qquad
        K_{ij} = \exp\Big(-\frac{\|c_i - c_j\|^2}{2\sigma_c^2} - \frac{\|x_i - x_j\|^2}{2\sigma_{xy}^2}\Big)

    over each unordered pair of valid pixels ``i, j`` in a ``(2r+1) x (2r+1)`` window, where
    :math:`p = \mathrm{softmax}(\text{logits})`, :math:`c` the image bands and :math:`x` the
    pixel position. For one-hot predictions the pair term is the Potts cost ``[y_i != y_j]``;
    unlike Potts' linear relaxation it is zero for any prediction that is constant over the
    image. It needs no labels: used next to a partial loss, it carries the points' classes to
    unlabelled pixels of the same colour, and it stops at colour edges, where the kernel vanishes.

    Args:
        logits: ``(B, C, H, W)`` unnormalised scores, any float dtype.
        image: ``(B, D, H, W)`` image the kernel compares, in the units of ``sigma_colour``
            (pointseg's normalised bands: standard deviations per band).
        valid: Optional ``(B, H, W)`` bool, the pixels that take part (e.g. not padding); all
            pixels if None.
        radius: Window radius ``r`` in pixels (>= 1).
        sigma_colour: Colour bandwidth :math:`\sigma_c` (> 0).
        sigma_xy: Spatial bandwidth :math:`\sigma_{xy}` in pixels (> 0).
        eps: Added to the valid-pixel count so that a batch without valid pixels gives 0.

    Returns:
        Scalar float32 loss per valid pixel; computed in float32 even for bfloat16 or float16
        logits and inside an autocast region.

    Raises:
        ValueError: for mismatched shapes or a non-positive radius or bandwidth.
    """
    batch, _, height, width = logits.shape
    if image.ndim != 4 or image.shape[0] != batch or image.shape[2:] != logits.shape[2:]:
        raise ValueError(
            f"expected logits (B, C, H, W) and image (B, D, H, W) of one size, got {tuple(logits.shape)} "
            f"and {tuple(image.shape)}"
        )
    if valid is not None and valid.shape != (batch, height, width):
        raise ValueError(f"expected valid (B, H, W) = {(batch, height, width)}, got {tuple(valid.shape)}")
    if radius < 1 or not sigma_colour > 0 or not sigma_xy > 0:
        raise ValueError(f"radius {radius}, sigma_colour {sigma_colour}, sigma_xy {sigma_xy}: expected > 0")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        probs = F.softmax(logits.float(), dim=1)
        colours = image.detach().float()
        gate = (torch.ones_like(probs[:, 0]) if valid is None else valid.float()).detach()
        total = probs.new_zeros(())
        # Each unordered pair once: offsets (dy, dx) in the lower half of the window.
        for dy in range(radius + 1):
            for dx in range(-radius, radius + 1):
                if dy == 0 and dx <= 0:
                    continue
                first, second = _window_pair(dy, dx, height, width)
                colour_distance = (colours[first] - colours[second]).pow(2).sum(1)
                kernel = torch.exp(
                    -colour_distance / (2 * sigma_colour**2) - (dy * dy + dx * dx) / (2 * sigma_xy**2)
                )
                kernel = kernel * gate[first] * gate[second]
                energy = 0.5 * (probs[first] - probs[second]).pow(2).sum(1)
                total = total + (kernel * energy).sum()
        return total / (gate.sum() + eps)


def _window_pair(dy: int, dx: int, height: int, width: int) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Indexes ``[..., rows, cols]`` of the pixels ``i`` and of their neighbours ``i + (dy, dx)``.

    Indexing a ``(..., H, W)`` tensor with either gives two aligned ``(..., H - dy, W - |dx|)`` views.
    """
    columns = (
        (slice(0, width - dx), slice(dx, width)) if dx >= 0 else (slice(-dx, width), slice(0, width + dx))
    )
    return (..., slice(0, height - dy), columns[0]), (..., slice(dy, height), columns[1])


class PropagationLoss(nn.Module):
    """Module form of :func:`propagation_loss`; ``forward(logits, image, valid=None)``."""

    def __init__(self, radius: int = 2, sigma_colour: float = 0.5, sigma_xy: float = 2.0) -> None:
        super().__init__()
        self.radius = radius
        self.sigma_colour = sigma_colour
        self.sigma_xy = sigma_xy

    def forward(self, logits: Tensor, image: Tensor, valid: Tensor | None = None) -> Tensor:
        """Return the propagation loss of ``(B, C, H, W)`` logits over a ``(B, D, H, W)`` image."""
        return propagation_loss(
            logits, image, valid, radius=self.radius, sigma_colour=self.sigma_colour, sigma_xy=self.sigma_xy
        )

    def extra_repr(self) -> str:
        """Show the settings in ``repr(module)``."""
        return f"radius={self.radius}, sigma_colour={self.sigma_colour}, sigma_xy={self.sigma_xy}"


def confident_consistency_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    threshold: float,
    valid: Tensor | None = None,
    eps: float = 1e-8,
) -> Tensor:
    r"""Cross-entropy of a student view against the teacher view's confident labels (FixMatch).

    .. math::

        L = \frac{1}{|V| + \epsilon} \sum_{i \in V} [\max_c q_{i,c} \ge \tau]\,
            \big(-\log p_{i, \hat y_i}\big), \qquad \hat y_i = \arg\max_c q_{i,c}

    where :math:`q = \mathrm{softmax}(\text{teacher\_logits})` (no gradient flows through it),
    :math:`p = \mathrm{softmax}(\text{student\_logits})`, :math:`\tau` the ``threshold`` and :math:`V`
    the valid pixels (Sohn et al., "FixMatch", 2020, per pixel as in Yang et al., "UniMatch", 2023). The
    mean runs over every valid pixel, confident or not, so the loss grows with the teacher's coverage.
    It needs no labels: the teacher is the model on the weakly augmented crop, the student the same
    model on a strongly perturbed copy of it, so the two views must be aligned pixel for pixel.

    Args:
        student_logits: ``(B, C, H, W)`` scores on the strong view, any float dtype.
        teacher_logits: ``(B, C, H, W)`` scores on the weak view (detached here).
        threshold: Confidence :math:`\tau` in ``[0, 1]`` a teacher pixel needs to count.
        valid: Optional ``(B, H, W)`` bool, the pixels that take part (e.g. not padding).
        eps: Added to the valid-pixel count so that a batch without valid pixels gives 0.

    Returns:
        Scalar float32 loss, computed in float32 even for bfloat16 logits or inside autocast.

    Raises:
        ValueError: for mismatched shapes or a threshold outside ``[0, 1]``.
    """
    if student_logits.ndim != 4 or teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"expected student and teacher logits (B, C, H, W) of one shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    batch, _, height, width = student_logits.shape
    if valid is not None and valid.shape != (batch, height, width):
        raise ValueError(f"expected valid (B, H, W) = {(batch, height, width)}, got {tuple(valid.shape)}")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold {threshold}: expected a probability in [0, 1]")
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        confidence, pseudo_labels = F.softmax(teacher_logits.detach().float(), dim=1).max(dim=1)
        gate = confidence >= threshold
        if valid is not None:
            gate = gate & valid.bool()
        nll = F.cross_entropy(student_logits.float(), pseudo_labels, reduction="none")
        pixels = torch.ones_like(nll).sum() if valid is None else valid.float().sum()
        return (nll * gate.float()).sum() / (pixels + eps)
