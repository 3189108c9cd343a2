import json
import math

import pytest
import torch
from rich.console import Console

from pointseg.metrics import SegmentationMetrics, iou_from_confusion, report_from_confusion
from pointseg.schema import IGNORE_INDEX

U = IGNORE_INDEX
NAMES = ["building", "road", "water", "forest"]

# Ground truth and prediction, one 3x4 image. "forest" (3) is in neither the ground truth nor the
# predictions at labelled pixels; it is predicted only at ignored pixels, which do not count.
GT = torch.tensor([[[0, 0, 0, 0], [0, 1, 1, U], [2, 2, U, U]]])
PRED = torch.tensor([[[0, 0, 0, 1], [0, 1, 0, 3], [2, 0, 3, 1]]])
# The 9 labelled pixels as (gt -> pred): 0->0 x4, 0->1, 1->1, 1->0, 2->2, 2->0.
# Confusion (rows = ground truth, columns = prediction):
#            pred 0  1  2  3     GT total
#   gt 0        4    1  0  0     5
#   gt 1        1    1  0  0     2
#   gt 2        1    0  1  0     2
#   gt 3        0    0  0  0     0
#   pred total  6    2  1  0
EXPECTED_CONFUSION = [[4, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
# IoU = TP / (GT total + pred total - TP):
#   building 4 / (5 + 6 - 4) = 4/7 = 0.5714285714285714
#   road     1 / (2 + 2 - 1) = 1/3
#   water    1 / (2 + 1 - 1) = 1/2
#   forest   0 / 0 -> absent
# macro mIoU = (4/7 + 1/3 + 1/2) / 3 = 59/126 = 0.46825396825396826
# micro (pixel-pooled) IoU = sum TP / sum (TP + FP + FN) = 6 / (6 + 3 + 3) = 0.5
# pixel accuracy = 6 / 9 = 0.6666666666666666
MACRO_MIOU = 0.46825396825396826
MICRO_IOU = 0.5


def evaluate(*batches: tuple[torch.Tensor, torch.Tensor], names: list[str] = NAMES) -> SegmentationMetrics:
    metrics = SegmentationMetrics(names)
    for pred, gt in batches:
        metrics.update(pred, gt)
    return metrics


def test_confusion_rows_are_ground_truth_columns_are_predictions() -> None:
    confusion = evaluate((torch.tensor([[[1]]]), torch.tensor([[[0]]])), names=["a", "b"]).compute()
    assert confusion.tolist() == [[0, 1], [0, 0]]


def test_hand_made_example_per_class_iou_and_macro_miou() -> None:
    metrics = evaluate((PRED, GT))
    assert metrics.compute().tolist() == EXPECTED_CONFUSION
    report = metrics.report()
    assert report.per_class_iou["building"] == pytest.approx(0.5714285714285714)
    assert report.per_class_iou["road"] == pytest.approx(0.3333333333333333)
    assert report.per_class_iou["water"] == pytest.approx(0.5)
    assert report.per_class_iou["forest"] is None
    assert report.miou == pytest.approx(MACRO_MIOU)
    assert report.accuracy == pytest.approx(0.6666666666666666)
    # The absent class is neither 0 (59/168 = 0.351) nor 1 ((59/42 + 1) / 4 = 0.601) in the mean.
    assert report.miou != pytest.approx(59 / 168)
    assert report.miou != pytest.approx((59 / 42 + 1) / 4)


def test_macro_miou_differs_from_micro_iou() -> None:
    # Imported here: torchmetrics must come after pointseg (torchvision shim), which isort would undo.
    from torchmetrics.classification import MulticlassJaccardIndex

    micro = MulticlassJaccardIndex(num_classes=4, average="micro", ignore_index=U)(PRED, GT).item()
    assert micro == pytest.approx(MICRO_IOU)
    assert evaluate((PRED, GT)).report().miou == pytest.approx(MACRO_MIOU)
    assert pytest.approx(MICRO_IOU) != MACRO_MIOU


def test_iou_from_confusion_marks_absent_classes() -> None:
    iou, present = iou_from_confusion(torch.tensor(EXPECTED_CONFUSION))
    assert present.tolist() == [True, True, True, False]
    assert iou[:3].tolist() == pytest.approx([4 / 7, 1 / 3, 1 / 2])
    assert math.isnan(iou[3].item())
    assert iou.dtype == torch.float64


def test_class_only_predicted_has_iou_zero_not_absent() -> None:
    # gt [0, 0, 0, 0], pred [0, 0, 1, 1]: class 1 has TP 0, FP 2, FN 0 -> IoU 0, present.
    # class 0: TP 2, FN 2 -> 2 / 4 = 0.5; mIoU = (0.5 + 0) / 2 = 0.25
    pred, gt = torch.tensor([[[0, 0, 1, 1]]]), torch.tensor([[[0, 0, 0, 0]]])
    report = evaluate((pred, gt), names=["a", "b"]).report()
    assert report.per_class_iou == {"a": 0.5, "b": 0.0}
    assert report.miou == 0.25
    assert report.absent_classes == []


def test_ignored_ground_truth_pixels_do_not_count_even_when_the_prediction_is_wrong() -> None:
    gt = torch.tensor([[[0, 1, U, U]]])
    right = evaluate((torch.tensor([[[0, 1, 0, 1]]]), gt), names=["a", "b"]).compute()
    wrong = evaluate((torch.tensor([[[0, 1, 1, 0]]]), gt), names=["a", "b"]).compute()
    assert right.tolist() == wrong.tolist() == [[1, 0], [0, 1]]


def test_pixels_predicted_ignore_index_are_not_counted_whatever_their_ground_truth() -> None:
    # Nothing is predicted where the image has no data (255): those pixels leave the matrix.
    gt = torch.tensor([[[0, 1, 1, 0]]])
    confusion = evaluate((torch.tensor([[[0, 1, U, U]]]), gt), names=["a", "b"]).compute()
    assert confusion.tolist() == [[1, 0], [0, 1]]


def test_accumulation_over_batches_is_one_confusion_matrix_not_mean_of_batch_mious() -> None:
    # batch A: gt [[0, 0], [0, 0]], pred all 0 -> alone: class 0 IoU 1, class 1 absent -> mIoU 1
    gt_a, pred_a = torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long)
    # batch B: gt [[1, 1], [1, 0]], pred [[1, 0], [0, 0]] -> confusion [[1, 0], [2, 1]]
    #   alone: IoU 0 = 1 / (1 + 3 - 1) = 1/3, IoU 1 = 1 / (3 + 1 - 1) = 1/3 -> mIoU 1/3
    gt_b, pred_b = torch.tensor([[[1, 1], [1, 0]]]), torch.tensor([[[1, 0], [0, 0]]])
    # mean of batch mIoUs: (1 + 1/3) / 2 = 2/3
    # one confusion matrix: [[5, 0], [2, 1]] -> IoU 0 = 5 / (5 + 7 - 5) = 5/7, IoU 1 = 1/3
    #   mIoU = (5/7 + 1/3) / 2 = 11/21 = 0.5238095238095238
    names = ["a", "b"]
    accumulated = evaluate((pred_a, gt_a), (pred_b, gt_b), names=names)
    concatenated = evaluate((torch.cat([pred_a, pred_b]), torch.cat([gt_a, gt_b])), names=names)
    assert accumulated.compute().tolist() == concatenated.compute().tolist() == [[5, 0], [2, 1]]
    assert accumulated.report().miou == pytest.approx(0.5238095238095238)
    batch_mious = [evaluate(batch, names=names).report().miou for batch in [(pred_a, gt_a), (pred_b, gt_b)]]
    assert batch_mious == pytest.approx([1.0, 1 / 3])
    assert sum(batch_mious) / 2 != pytest.approx(0.5238095238095238)


def test_states_from_two_processes_sum_like_ddp() -> None:
    # merge_state combines states with the same reduction (sum) that DDP sync uses.
    rank0 = evaluate((PRED[:, :2], GT[:, :2]))
    rank1 = evaluate((PRED[:, 2:], GT[:, 2:]))
    rank0.merge_state(rank1)
    assert rank0.compute().tolist() == EXPECTED_CONFUSION
    rank0.reset()
    assert rank0.confmat.sum().item() == 0


def test_scores_are_reduced_with_argmax() -> None:
    scores = torch.nn.functional.one_hot(PRED.clamp_max(3), 4).permute(0, 3, 1, 2).float()
    assert evaluate((scores, GT)).compute().tolist() == EXPECTED_CONFUSION


def test_report_to_dict_is_json_ready() -> None:
    data = evaluate((PRED, GT)).report().to_dict()
    assert set(data) == {"miou", "per_class_iou", "accuracy", "confusion_matrix", "absent_classes"}
    assert data["absent_classes"] == ["forest"]
    assert data["confusion_matrix"] == EXPECTED_CONFUSION
    assert json.loads(json.dumps(data))["per_class_iou"]["forest"] is None


def test_nothing_evaluated_gives_nan_report_and_null_json() -> None:
    report = report_from_confusion(torch.zeros(2, 2, dtype=torch.long), ["a", "b"])
    assert math.isnan(report.miou) and math.isnan(report.accuracy)
    assert report.to_dict()["miou"] is None
    assert report.absent_classes == ["a", "b"]


def test_table_marks_absent_classes() -> None:
    console = Console(record=True, width=120)
    console.print(evaluate((PRED, GT)).report().to_table())
    text = console.export_text()
    assert "forest" in text and "absent" in text
    assert "0.5714" in text and "0.4683" in text
    assert "mIoU (macro, 3 classes)" in text
