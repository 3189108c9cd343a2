import math

import pytest
import torch

from pointseg.errors import PointsegError
from pointseg.losses import (
    CrossEntropyLoss,
    PartialCrossEntropyLoss,
    PartialFocalCrossEntropyLoss,
    batch_class_balance,
    build_loss,
    confident_consistency_loss,
    dense_cross_entropy,
    partial_cross_entropy,
    partial_focal_cross_entropy,
    weighted_partial_cross_entropy,
)
from pointseg.schema import IGNORE_INDEX

LN2, LN3, LN5 = math.log(2), math.log(3), math.log(5)
U = IGNORE_INDEX


def two_class_example() -> tuple[torch.Tensor, torch.Tensor]:
    """One 2x2 image, 2 classes, 3 labelled pixels and 1 unlabelled.

    pixel   logits        softmax p       target  CE = -ln p[target]
    (0,0)   [0, ln 3]     [0.25, 0.75]    1       -ln 0.75 = 0.2876820724517809
    (0,1)   [0, ln 3]     [0.25, 0.75]    0       -ln 0.25 = 1.3862943611198906
    (1,0)   [ln 3, 0]     [0.75, 0.25]    255     (unlabelled)
    (1,1)   [0, 0]        [0.5, 0.5]      0       -ln 0.5  = 0.6931471805599453
    """
    logits = torch.tensor([[[[0.0, 0.0], [LN3, 0.0]], [[LN3, LN3], [0.0, 0.0]]]], dtype=torch.float32)
    target = torch.tensor([[[1, 0], [U, 0]]])
    return logits, target


CE_00, CE_01, CE_11 = 0.2876820724517809, 1.3862943611198906, 0.6931471805599453


def three_class_example() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 2x2 images, 3 classes; every pixel has logits [0, ln 2, ln 5], so p = [1/8, 2/8, 5/8].

    image 0: target [[2, U], [U, U]] -> one labelled pixel,  CE = ln(8/5) = 0.47000362924573563
    image 1: target [[0, U], [1, U]] -> two labelled pixels, CE = ln 8    = 2.0794415416798357
                                                              CE = ln 4    = 1.3862943611198906
    """
    logits = torch.tensor([0.0, LN2, LN5]).view(1, 3, 1, 1).expand(2, 3, 2, 2).contiguous()
    target = torch.tensor([[[2, U], [U, U]], [[0, U], [1, U]]])
    return logits, target


def test_partial_ce_two_classes_by_hand() -> None:
    logits, target = two_class_example()
    # (0.2876820724517809 + 1.3862943611198906 + 0.6931471805599453) / 3 labelled pixels
    expected = (CE_00 + CE_01 + CE_11) / 3
    assert partial_cross_entropy(logits, target).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.789041204710539)


def test_partial_ce_normalises_over_all_labelled_pixels_in_the_batch() -> None:
    logits, target = three_class_example()
    # Sum over the 3 labelled pixels of the batch / 3, not the mean of per-image means:
    # (0.47000362924573563 + 2.0794415416798357 + 1.3862943611198906) / 3 = 1.3119131773484873
    # mean of per-image means would be (0.4700036 + (2.0794415 + 1.3862944) / 2) / 2 = 1.1014357903227994
    loss = partial_cross_entropy(logits, target).item()
    assert loss == pytest.approx(1.3119131773484873, rel=1e-6)
    assert loss != pytest.approx(1.1014357903227994, rel=1e-3)


def test_focal_two_classes_by_hand() -> None:
    logits, target = two_class_example()
    # (1 - p_t)^2 * CE per labelled pixel:
    # (0,0): p_t = 0.75 -> 0.25^2 = 0.0625 * 0.2876820724517809 = 0.017980129528236306
    # (0,1): p_t = 0.25 -> 0.75^2 = 0.5625 * 1.3862943611198906 = 0.7797905781299385
    # (1,1): p_t = 0.5  -> 0.5^2  = 0.25   * 0.6931471805599453 = 0.17328679513998632
    expected = (0.017980129528236306 + 0.7797905781299385 + 0.17328679513998632) / 3
    loss = partial_focal_cross_entropy(logits, target, gamma=2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_focal_three_classes_by_hand() -> None:
    logits, target = three_class_example()
    # p_t = 5/8, 1/8, 2/8 -> (1 - p_t)^2 = 9/64, 49/64, 36/64
    # 0.140625 * 0.47000362924573563 = 0.06609426036268157
    # 0.765625 * 2.0794415416798357  = 1.5920724303486242
    # 0.5625   * 1.3862943611198906  = 0.7797905781299385
    expected = (0.06609426036268157 + 1.5920724303486242 + 0.7797905781299385) / 3
    loss = partial_focal_cross_entropy(logits, target, gamma=2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("example", [two_class_example, three_class_example])
def test_focal_with_gamma_zero_equals_partial_ce(example) -> None:
    logits, target = example()
    assert torch.equal(
        partial_focal_cross_entropy(logits, target, gamma=0.0), partial_cross_entropy(logits, target)
    )


def test_class_weights_by_hand_and_normaliser_is_the_pixel_count() -> None:
    logits, target = two_class_example()
    weight = torch.tensor([2.0, 0.5])
    # targets 1, 0, 0 -> weights 0.5, 2, 2
    # 0.5 * 0.2876820724517809 + 2 * 1.3862943611198906 + 2 * 0.6931471805599453 = 4.302724119585562
    # divided by 3 labelled pixels (not by the weight sum 4.5, which torch's weighted mean uses)
    loss = partial_cross_entropy(logits, target, weight=weight).item()
    assert loss == pytest.approx(4.302724119585562 / 3, rel=1e-6)
    dense = dense_cross_entropy(logits, target, weight=weight).item()
    assert dense == pytest.approx(4.302724119585562 / 4.5, rel=1e-6)


def test_focal_class_weights_by_hand() -> None:
    logits, target = two_class_example()
    weight = torch.tensor([2.0, 0.5])
    # 0.5 * 0.017980129528236306 + 2 * 0.7797905781299385 + 2 * 0.17328679513998632, over 3 pixels
    expected = (0.008990064764118153 + 1.559581156259877 + 0.34657359027997264) / 3
    loss = partial_focal_cross_entropy(logits, target, gamma=2.0, weight=weight)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_dense_ce_is_mean_over_non_ignored_pixels() -> None:
    logits, target = two_class_example()
    assert dense_cross_entropy(logits, target).item() == pytest.approx((CE_00 + CE_01 + CE_11) / 3, rel=1e-6)


@pytest.mark.parametrize(
    "loss_fn",
    [
        partial_cross_entropy,
        lambda lg, t: partial_focal_cross_entropy(lg, t, gamma=2.0),
        lambda lg, t: partial_cross_entropy(lg, t, weight=torch.tensor([2.0, 0.5])),
    ],
)
def test_unlabelled_pixels_get_exactly_zero_gradient(loss_fn) -> None:
    logits, target = two_class_example()
    logits.requires_grad_(True)
    loss_fn(logits, target).backward()
    assert logits.grad is not None
    assert torch.equal(logits.grad[0, :, 1, 0], torch.zeros(2))
    labelled = target[0] != U
    assert (logits.grad[0].abs().sum(0)[labelled] > 0).all()


def test_partial_ce_gradient_by_hand() -> None:
    logits, target = two_class_example()
    logits.requires_grad_(True)
    partial_cross_entropy(logits, target).backward()
    assert logits.grad is not None
    # d CE / d logits = (p - onehot(target)) / N, N = 3 labelled pixels
    # (0,0): ([0.25, 0.75] - [0, 1]) / 3 = [0.25, -0.25] / 3
    # (0,1): ([0.25, 0.75] - [1, 0]) / 3 = [-0.75, 0.75] / 3
    # (1,1): ([0.5, 0.5]  - [1, 0]) / 3 = [-0.5, 0.5] / 3
    expected = torch.tensor([[[[0.25, -0.75], [0.0, -0.5]], [[-0.25, 0.75], [0.0, 0.5]]]]) / 3
    torch.testing.assert_close(logits.grad, expected)


@pytest.mark.parametrize(
    "loss_fn",
    [
        partial_cross_entropy,
        lambda lg, t: partial_focal_cross_entropy(lg, t, gamma=2.0),
        lambda lg, t: partial_focal_cross_entropy(lg, t, gamma=0.5, weight=torch.tensor([1.0, 3.0, 0.2])),
    ],
)
def test_all_unlabelled_batch_gives_zero_loss_and_zero_gradient(loss_fn) -> None:
    logits = (torch.randn(2, 3, 4, 4) * 50).requires_grad_(True)
    target = torch.full((2, 4, 4), U)
    loss = loss_fn(logits, target)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_confident_correct_pixels_give_finite_focal_gradient() -> None:
    # p_t rounds to 1 in float32: (1 - p_t)^gamma must not produce inf * 0 = NaN, even for gamma < 1.
    logits = torch.tensor([[[[100.0]], [[0.0]]]], requires_grad=True)
    target = torch.tensor([[[0]]])
    for gamma in (0.0, 0.5, 2.0):
        logits.grad = None
        partial_focal_cross_entropy(logits, target, gamma=gamma).backward()
        assert logits.grad is not None and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    "loss_fn", [partial_cross_entropy, lambda lg, t: partial_focal_cross_entropy(lg, t, gamma=2.0)]
)
def test_bfloat16_logits_are_computed_in_float32(loss_fn) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 4, 8, 8, generator=generator) * 30).to(torch.bfloat16)
    target = torch.randint(0, 4, (2, 8, 8), generator=generator)
    target[:, ::2] = U
    reference = loss_fn(logits.float(), target)
    loss = loss_fn(logits, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_loss = loss_fn(logits, target)
    assert loss.dtype == autocast_loss.dtype == torch.float32
    assert torch.isfinite(loss)
    assert torch.equal(loss, reference)
    assert torch.equal(autocast_loss, reference)


def test_modules_hold_settings_and_match_the_functions() -> None:
    logits, target = three_class_example()
    weight = torch.tensor([1.0, 2.0, 3.0])
    pce = PartialCrossEntropyLoss(weight=weight)
    pfce = PartialFocalCrossEntropyLoss(gamma=1.5, weight=weight)
    ce = CrossEntropyLoss(weight=weight)
    assert torch.equal(pce(logits, target), partial_cross_entropy(logits, target, weight=weight))
    assert torch.equal(pfce(logits, target), partial_focal_cross_entropy(logits, target, 1.5, weight=weight))
    assert torch.equal(ce(logits, target), dense_cross_entropy(logits, target, weight=weight))
    assert "weight" in dict(pce.named_buffers())
    assert "weight" not in dict(PartialCrossEntropyLoss().named_buffers())


def test_build_loss_by_name() -> None:
    assert type(build_loss("pce")) is PartialCrossEntropyLoss
    focal = build_loss("pfce", gamma=3.0, class_weights=[1, 2], ignore_index=7)
    assert isinstance(focal, PartialFocalCrossEntropyLoss)
    assert focal.gamma == 3.0 and focal.ignore_index == 7
    assert focal.weight is not None and focal.weight.tolist() == [1.0, 2.0]
    assert type(build_loss("ce")) is CrossEntropyLoss


def test_build_loss_unknown_name_names_value_and_choices() -> None:
    with pytest.raises(PointsegError, match=r"'focal'.*'pce', 'pfce', 'ce'"):
        build_loss("focal")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"gamma": -1.0}, "gamma -1.0"), ({"class_weights": [1.0, -2.0]}, "class_weights")],
)
def test_build_loss_rejects_bad_settings(kwargs, message) -> None:
    with pytest.raises(PointsegError, match=message):
        build_loss("pfce", **kwargs)


def test_wrong_number_of_class_weights_is_reported() -> None:
    logits, target = three_class_example()
    loss = build_loss("pce", class_weights=[1.0, 2.0])
    with pytest.raises(PointsegError, match=r"2 value.*3 classes"):
        loss(logits, target)


def test_batch_class_balance_makes_the_loss_a_mean_of_class_means() -> None:
    # two_class_example: class 1 has one labelled pixel (CE_00), class 0 two (CE_01, CE_11).
    logits, target = two_class_example()
    balance = batch_class_balance(target, 2)
    # 3 labelled pixels, 2 classes present: w_0 = 3 / (2 * 2), w_1 = 3 / (2 * 1)
    assert balance.tolist() == pytest.approx([0.75, 1.5])
    loss = partial_cross_entropy(logits, target, weight=balance)
    assert loss.item() == pytest.approx((CE_00 + (CE_01 + CE_11) / 2) / 2, rel=1e-6)
    # the module takes the per-call weights instead of its own
    module = build_loss("pce", class_weights=[5.0, 5.0])
    assert module(logits, target, weight=balance).item() == pytest.approx(loss.item(), rel=1e-6)


def test_batch_class_balance_absent_classes_and_no_labels() -> None:
    target = torch.tensor([[[2, U], [2, 0]]])
    assert batch_class_balance(target, 4).tolist() == pytest.approx([1.5, 0.0, 0.75, 0.0])
    assert batch_class_balance(torch.full((1, 2, 2), U), 3).tolist() == [0.0, 0.0, 0.0]


def test_batch_class_balance_with_pixel_weights() -> None:
    logits, target = two_class_example()
    pixel_weight = torch.tensor([[[1.0, 0.5], [1.0, 0.25]]])  # class 0: 0.75 in all, class 1: 1.0
    balance = batch_class_balance(target, 2, pixel_weight)
    assert balance.tolist() == pytest.approx([1.75 / (2 * 0.75), 1.75 / (2 * 1.0)])
    loss = weighted_partial_cross_entropy(logits, target, pixel_weight, weight=balance)
    class_0 = (0.5 * CE_01 + 0.25 * CE_11) / 0.75
    assert loss.item() == pytest.approx((CE_00 + class_0) / 2, rel=1e-6)


def test_consistency_by_hand_counts_confident_teacher_pixels_over_all_valid_pixels() -> None:
    # Teacher (one 1x3 image, 2 classes): pixel 0 sure of class 1 (p = 0.9), pixel 1 unsure (p = 0.6),
    # pixel 2 sure of class 0 (p = 0.9). Student: softmax [0.25, 0.75] everywhere.
    sure = math.log(9)  # softmax([0, ln 9]) = [0.1, 0.9]
    unsure = math.log(1.5)  # softmax([0, ln 1.5]) = [0.4, 0.6]
    teacher = torch.tensor([[0.0, 0.0, sure], [sure, unsure, 0.0]]).reshape(1, 2, 1, 3)
    student = torch.tensor([[0.0, 0.0, 0.0], [LN3, LN3, LN3]]).reshape(1, 2, 1, 3).requires_grad_()
    loss = confident_consistency_loss(student, teacher, threshold=0.8)
    # Pixel 0 learns class 1 (-ln 0.75), pixel 2 class 0 (-ln 0.25), pixel 1 nothing; mean over 3 pixels.
    assert loss.item() == pytest.approx((-math.log(0.75) - math.log(0.25)) / 3, rel=1e-6)
    loss.backward()
    assert student.grad is not None
    assert torch.equal(student.grad[0, :, 0, 1], torch.zeros(2))  # the unsure pixel teaches nothing
    assert (student.grad[0, :, 0, 0].abs() > 0).all() and (student.grad[0, :, 0, 2].abs() > 0).all()
    # At a threshold of 0.5 the unsure pixel counts too; at 0.95 none does.
    assert confident_consistency_loss(student, teacher, 0.5).item() == pytest.approx(
        (-2 * math.log(0.75) - math.log(0.25)) / 3, rel=1e-6
    )
    assert confident_consistency_loss(student, teacher, 0.95).item() == 0


def test_consistency_sends_no_gradient_to_the_teacher_and_leaves_out_invalid_pixels() -> None:
    torch.manual_seed(0)
    teacher = (torch.randn(2, 4, 5, 6) * 5).requires_grad_()
    student = torch.randn(2, 4, 5, 6, requires_grad=True)
    valid = torch.ones(2, 5, 6, dtype=torch.bool)
    valid[:, :, :2] = False
    loss = confident_consistency_loss(student, teacher, 0.0, valid)
    loss.backward()
    assert teacher.grad is None
    assert student.grad is not None
    assert torch.equal(student.grad[..., :2], torch.zeros_like(student.grad[..., :2]))
    # Same as the loss of the valid columns alone: invalid pixels are out of the mean too.
    alone = confident_consistency_loss(student[..., 2:], teacher[..., 2:], 0.0)
    assert loss.item() == pytest.approx(alone.item(), rel=1e-6)
    # A student that agrees with a confident teacher costs almost nothing.
    assert confident_consistency_loss(teacher * 100, teacher * 100, 0.9).item() < 1e-3


def test_consistency_is_float32_and_finite_for_bfloat16_logits() -> None:
    torch.manual_seed(0)
    teacher = (torch.randn(1, 3, 8, 8) * 4).bfloat16()
    student = torch.randn(1, 3, 8, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = confident_consistency_loss(student, teacher, 0.5)
    assert loss.dtype == torch.float32 and math.isfinite(loss.item()) and loss.item() > 0


def test_consistency_rejects_mismatched_shapes_and_bad_thresholds() -> None:
    logits = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match="one shape"):
        confident_consistency_loss(logits, torch.zeros(1, 2, 3, 4), 0.9)
    with pytest.raises(ValueError, match="valid"):
        confident_consistency_loss(logits, logits, 0.9, torch.ones(1, 3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"threshold 1\.5"):
        confident_consistency_loss(logits, logits, 1.5)
