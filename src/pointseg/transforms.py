"""Batch augmentation for overhead imagery, run on the training device with kornia.

Geometric transforms (flips, 90-degree rotations, random crops with padding) move the image,
the dense mask, the point labels and the per-pixel maps (expansion weights, the not-padded
mask) together. Overhead imagery has no "up", so all eight flip/rotation combinations are
valid views. Pixels that a crop pads in carry no label and become ``IGNORE_INDEX``, with
weight 0 and not valid. The colour jitter is a mild per-sample brightness/contrast change in
normalised units, so it works for any band count.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from kornia.filters import gaussian_blur2d
from torch import nn

from pointseg.schema import IGNORE_INDEX

LABEL_KEYS = ("mask", "points", "expanded_points")
"""Label maps: moved with the image, ``IGNORE_INDEX`` where padded."""
PIXEL_KEYS = ("point_weights", "valid")
"""Per-pixel weight or bool maps: moved with the image, 0 (False) where padded."""


class BatchAugmentation(nn.Module):
    """Augment a batch ``{"image": (B, C, H, W), "mask"/"points": (B, H, W) int64}`` in place of labels.

    Args:
        flips: Random horizontal and vertical flips.
        rotate90: Random rotation by 0, 90, 180 or 270 degrees (square crops keep their size).
        color_jitter: Strength ``s`` of the jitter: ``x * U(1-s, 1+s) + U(-s, s)`` per sample.
        random_crop: Largest shift of a random crop as a fraction of the side; the crop is padded
            back to the input size, and padded pixels get ``IGNORE_INDEX`` labels.
        random_scale: Largest zoom ``s``: each crop is scaled about its centre by a factor drawn
            between ``1 / (1 + s)`` and ``1 + s`` (image bilinear, labels nearest); pixels a zoom-out
            brings in from outside the crop get ``IGNORE_INDEX`` labels, and a zoom-out can drop a
            clicked pixel that falls between two sampled ones.
    """

    def __init__(
        self,
        flips: bool = True,
        rotate90: bool = True,
        color_jitter: float = 0.1,
        random_crop: float = 0.0,
        random_scale: float = 0.0,
    ):
        super().__init__()
        self.color_jitter = color_jitter
        self.random_crop = random_crop
        self.random_scale = random_scale
        self.flips = flips
        self.rotate90 = rotate90
        self._pipelines: dict[tuple[tuple[int, int], int], K.AugmentationSequential | None] = {}

    def geometric(self, size: tuple[int, int], label_count: int) -> K.AugmentationSequential | None:
        """The geometric pipeline for images of ``size`` with ``label_count`` label maps (None: no step).

        Built once per crop size and label count, then reused for every batch.
        """
        key = (size, label_count)
        if key not in self._pipelines:
            self._pipelines[key] = self._build_geometric(size, label_count)
        return self._pipelines[key]

    def _build_geometric(self, size: tuple[int, int], label_count: int) -> K.AugmentationSequential | None:
        steps: list[K.AugmentationBase2D] = []
        if self.flips:
            steps += [K.RandomHorizontalFlip(), K.RandomVerticalFlip()]
        if self.rotate90 and size[0] == size[1]:
            steps.append(K.RandomRotation90(times=(0, 3), p=1.0))
        if self.random_scale > 0:
            steps.append(
                K.RandomAffine(degrees=0.0, scale=(1 / (1 + self.random_scale), 1 + self.random_scale), p=1.0)
            )
        if self.random_crop > 0:
            padding = max(1, round(self.random_crop * min(size)))
            steps.append(K.RandomCrop(size, padding=padding))
        if not steps:
            return None
        return K.AugmentationSequential(*steps, data_keys=["input", *(["mask"] * label_count)])

    @torch.no_grad()
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Return a new batch dict with augmented ``image`` and label maps (other keys unchanged)."""
        image = batch["image"]
        label_keys = [key for key in LABEL_KEYS if key in batch]
        pixel_keys = [key for key in PIXEL_KEYS if key in batch]
        out = dict(batch)
        geometric = self.geometric((image.shape[-2], image.shape[-1]), len(label_keys) + len(pixel_keys))
        if geometric is not None:
            # Labels travel as float (label + 1) so that padding (0) can be told apart from class 0.
            shifted = [(batch[key].float() + 1).unsqueeze(1) for key in label_keys]
            maps = [batch[key].float().unsqueeze(1) for key in pixel_keys]
            results = geometric(image, *shifted, *maps)
            results = results if isinstance(results, (list, tuple)) else [results]
            image = results[0]
            for key, moved in zip(label_keys, results[1 : 1 + len(label_keys)], strict=True):
                labels = moved.squeeze(1).round().long() - 1
                out[key] = torch.where(labels < 0, torch.full_like(labels, IGNORE_INDEX), labels)
            for key, moved in zip(pixel_keys, results[1 + len(label_keys) :], strict=True):
                values = moved.squeeze(1)
                out[key] = values > 0.5 if batch[key].dtype == torch.bool else values.to(batch[key].dtype)
        if self.color_jitter > 0:
            strength = self.color_jitter
            shape = (image.shape[0], 1, 1, 1)
            gain = 1 + (torch.rand(shape, device=image.device) * 2 - 1) * strength
            offset = (torch.rand(shape, device=image.device) * 2 - 1) * strength
            image = image * gain + offset
        out["image"] = image
        return out


@torch.no_grad()
def strongly_perturbed(image: torch.Tensor, strength: float = 0.5) -> torch.Tensor:
    """A strongly perturbed copy of a normalised ``(B, C, H, W)`` batch, aligned pixel for pixel.

    The student view of consistency training (FixMatch's strong augmentation, photometric only so
    that the teacher's labels stay where they are): per sample and per band a gain in
    ``1 ± strength`` and an offset in ``± strength`` (normalised units: shifts colour as well as
    brightness), a Gaussian blur (sigma 0.1-2 pixels) on half the samples (crops above 13 pixels),
    and on half the samples one rectangle (a quarter to a half of each side) set to 0, the band means.
    """
    batch, bands, height, width = image.shape
    device = image.device
    gain = 1 + (torch.rand(batch, bands, 1, 1, device=device) * 2 - 1) * strength
    offset = (torch.rand(batch, bands, 1, 1, device=device) * 2 - 1) * strength
    out = image * gain + offset
    blurred = torch.rand(batch, device=device) < 0.5
    if blurred.any() and min(height, width) > 13:  # smaller crops are not blurred (reflection padding)
        sigma = 0.1 + torch.rand(int(blurred.sum()), device=device) * 1.9
        sigma = sigma.unsqueeze(1).expand(-1, 2).contiguous()
        # Kernel 13 = 2 * ceil(3 * 2) + 1 reaches three times the largest sigma on each side.
        out[blurred] = gaussian_blur2d(out[blurred], (13, 13), sigma).to(out.dtype)
    for index in torch.nonzero(torch.rand(batch, device=device) < 0.5).flatten().tolist():
        box_h = int(height * (0.25 + 0.25 * torch.rand(()).item()))
        box_w = int(width * (0.25 + 0.25 * torch.rand(()).item()))
        top = int(torch.randint(0, height - box_h + 1, ()).item())
        left = int(torch.randint(0, width - box_w + 1, ()).item())
        out[index, :, top : top + box_h, left : left + box_w] = 0
    return out
