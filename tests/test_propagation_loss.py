import math

import pytest
import torch

from pointseg.losses import PropagationLoss, propagation_loss

# exp(-d2 / (2 * sigma**2)) = 2 ** -d2: a squared distance of 1 halves the kernel.
HALVING_SIGMA = math.sqrt(1 / (2 * math.log(2)))


def test_zero_for_a_prediction_constant_over_the_image() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 1, 1).expand(2, 5, 16, 12).contiguous()  # soft, not one-hot
    image = torch.randn(2, 3, 16, 12)
    assert propagation_loss(logits, image).item() == 0.0


def test_hand_worked_3x3_example() -> None:
    # Centre pixel p = (0.75, 0.25), its 8 neighbours p = (0.5, 0.5): each pair costs
    # 0.5 * (0.25**2 + 0.25**2) = 0.0625. Radius 1, spatial kernel 1/2 for the 4 side neighbours and
    # 1/4 for the 4 diagonal ones: 0.0625 * (4 * 0.5 + 4 * 0.25) = 0.1875 over 9 pixels.
    logits = torch.zeros(1, 2, 3, 3)
    logits[0, 0, 1, 1] = math.log(3)
    flat = torch.zeros(1, 1, 3, 3)
    loss = propagation_loss(logits, flat, radius=1, sigma_colour=1.0, sigma_xy=HALVING_SIGMA)
    assert loss.item() == pytest.approx(0.1875 / 9, rel=1e-6)
    # A centre colour 1 away from its neighbours halves every term.
    bright_centre = flat.clone()
    bright_centre[0, 0, 1, 1] = 1.0
    loss = propagation_loss(
        logits, bright_centre, radius=1, sigma_colour=HALVING_SIGMA, sigma_xy=HALVING_SIGMA
    )
    assert loss.item() == pytest.approx(0.1875 / 2 / 9, rel=1e-6)
    # Invalid pixels take no part: with only the centre and its right neighbour valid, one pair at 1/2.
    valid = torch.zeros(1, 3, 3, dtype=torch.bool)
    valid[0, 1, 1:] = True
    loss = propagation_loss(logits, flat, valid, radius=1, sigma_colour=1.0, sigma_xy=HALVING_SIGMA)
    assert loss.item() == pytest.approx(0.0625 * 0.5 / 2, rel=1e-6)


def test_finite_in_bf16() -> None:
    torch.manual_seed(0)
    logits = (torch.randn(2, 6, 32, 32) * 30).bfloat16().requires_grad_()
    image = torch.randn(2, 3, 32, 32).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = propagation_loss(logits, image)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad.float()).all()


def test_gradient_only_where_the_kernel_is_non_zero() -> None:
    # Every pixel has a colour far from all others (kernel underflows to exactly 0), except two
    # horizontal neighbours that share a colour: only they receive gradient.
    torch.manual_seed(0)
    image = (torch.arange(36, dtype=torch.float32) * 100).reshape(1, 1, 6, 6)
    image[0, 0, 2, 3] = image[0, 0, 2, 2]
    logits = torch.randn(1, 4, 6, 6, requires_grad=True)
    loss = propagation_loss(logits, image, radius=2, sigma_colour=1.0)
    loss.backward()
    assert logits.grad is not None
    touched = logits.grad.abs().sum(1)[0] > 0
    assert touched.nonzero().tolist() == [[2, 2], [2, 3]]


def test_colour_edges_stop_propagation_and_similar_neighbours_agree() -> None:
    # Left half dark, right half bright; the prediction differs only across the edge: no loss.
    image = torch.zeros(1, 3, 8, 8)
    image[..., 4:] = 10.0
    logits = torch.zeros(1, 2, 8, 8)
    logits[0, 0, :, :4] = 5.0
    assert propagation_loss(logits, image, sigma_colour=0.5).item() < 1e-12
    logits[0, 0, 0, 0] = -5.0  # one disagreeing pixel inside the dark half costs something
    assert propagation_loss(logits, image, sigma_colour=0.5).item() > 0.01


def test_shapes_and_settings_are_checked() -> None:
    logits = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError, match="image"):
        propagation_loss(logits, torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match="valid"):
        propagation_loss(logits, torch.zeros(1, 3, 4, 4), torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="radius 0"):
        propagation_loss(logits, torch.zeros(1, 3, 4, 4), radius=0)


def test_module_calls_the_function() -> None:
    torch.manual_seed(0)
    logits, image = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    module = PropagationLoss(radius=1, sigma_colour=0.7, sigma_xy=1.5)
    assert module(logits, image) == propagation_loss(logits, image, radius=1, sigma_colour=0.7, sigma_xy=1.5)
    assert "radius=1" in repr(module)
