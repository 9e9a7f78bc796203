"""ConfusionMatrix against matrices and scores computed by hand, including ignore pixels and absent classes."""

from __future__ import annotations

import math

import pytest
import torch

from fcnseg.metrics import ConfusionMatrix


def _hand_case() -> ConfusionMatrix:
    # 4 classes; class 2 is predicted once but never true; class 3 appears nowhere; two pixels are ignored.
    target = torch.tensor([[0, 0, 0, 1], [1, 255, 255, 0]])
    pred = torch.tensor([[0, 0, 1, 1], [2, 0, 3, 0]])
    cm = ConfusionMatrix(4, ignore_index=255)
    cm.update(target, pred)
    return cm


def test_matrix_by_hand():
    cm = _hand_case()
    expected = [[3, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]  # rows: truth, columns: prediction
    assert cm.mat.tolist() == expected


def test_scores_by_hand():
    r = _hand_case().compute()
    # tp = [3, 1, 0, 0], truth = [4, 2, 0, 0], predicted = [3, 2, 1, 0], union = [4, 3, 1, 0]
    assert r["pixels"] == 6
    assert r["pixel_acc"] == pytest.approx(4 / 6)
    assert r["iou"][:3] == pytest.approx([3 / 4, 1 / 3, 0.0]) and math.isnan(r["iou"][3])
    assert r["miou"] == pytest.approx((3 / 4 + 1 / 3 + 0) / 3)  # the absent class is left out
    assert r["acc"][:2] == pytest.approx([3 / 4, 1 / 2]) and math.isnan(r["acc"][2]) and math.isnan(r["acc"][3])
    assert r["mean_acc"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert r["dice"][:3] == pytest.approx([6 / 7, 2 / 4, 0.0]) and math.isnan(r["dice"][3])
    assert r["mean_dice"] == pytest.approx((6 / 7 + 1 / 2 + 0) / 3)
    assert r["fwiou"] == pytest.approx(4 / 6 * 3 / 4 + 2 / 6 * 1 / 3)
    assert r["absent"] == [3]


def test_accumulates_over_updates_not_batch_averages():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0, 0, 0]))  # this batch alone: IoU 1
    cm.update(torch.tensor([1]), torch.tensor([0]))  # this one: IoU 0 for both classes
    r = cm.compute()
    assert cm.mat.tolist() == [[4, 0], [1, 0]]
    assert r["iou"] == pytest.approx([4 / 5, 0.0])  # not the mean of per-batch scores
    assert r["pixel_acc"] == pytest.approx(4 / 5)


def test_other_ignore_index_and_out_of_range_targets():
    cm = ConfusionMatrix(3, ignore_index=0)
    cm.update(torch.tensor([0, 1, 2, 7, -1]), torch.tensor([1, 1, 2, 0, 0]))
    assert cm.mat.tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 1]]  # 0 ignored; 7 and -1 are no class: skipped


def test_shape_mismatch_and_reset():
    cm = ConfusionMatrix(2)
    with pytest.raises(ValueError, match="target shape"):
        cm.update(torch.zeros(2, 3), torch.zeros(3, 2))
    cm.update(torch.tensor([1]), torch.tensor([1]))
    cm.reset()
    assert cm.mat.sum() == 0


def test_matches_the_reference_formulas_when_every_class_is_present():
    """torchvision's references/segmentation/utils.py ConfusionMatrix.compute, transcribed."""
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (4, 30, 30), generator=g)
    pred = torch.where(torch.rand(4, 30, 30, generator=g) < 0.6, target, torch.randint(0, 5, (4, 30, 30), generator=g))
    cm = ConfusionMatrix(5)
    cm.update(target, pred)
    h = cm.mat.float()
    acc_global = torch.diag(h).sum() / h.sum()
    iu = torch.diag(h) / (h.sum(1) + h.sum(0) - torch.diag(h))
    r = cm.compute()
    assert r["pixel_acc"] == pytest.approx(acc_global.item(), abs=1e-7)
    assert r["miou"] == pytest.approx(iu.mean().item(), abs=1e-7)
