"""Partial-label DiceCE: equals MONAI's DiceCELoss with full labels, and the marginal formula otherwise."""

import math

import torch
from monai.losses import DiceCELoss

from swinssl.finetune.loss import partial_dice_ce


def test_equals_monai_dice_ce_when_every_class_is_annotated():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 4, 3)
    labels = torch.randint(0, 4, (2, 5, 4, 3))
    present = torch.ones(2, 4, dtype=torch.bool)
    reference = DiceCELoss(to_onehot_y=True, softmax=True)(logits, labels[:, None])
    assert abs(float(partial_dice_ce(logits, labels, present)) - float(reference)) < 1e-5


def brute_force(logits, labels, present):
    """Per voxel: -log p(target) with p(bg) := p(bg) + sum of unannotated p; Dice over annotated classes."""
    batch, classes = logits.shape[:2]
    probabilities = logits.double().softmax(1)
    ce, dice = 0.0, []
    voxels = labels[0].numel()
    for b in range(batch):
        kept = [c for c in range(classes) if present[b, c]]
        missing = [c for c in range(classes) if not present[b, c]]
        merged = {0: probabilities[b, [0] + missing].sum(0)}
        merged.update({c: probabilities[b, c] for c in kept[1:]})
        for index in range(voxels):
            target = int(labels[b].flatten()[index])
            ce -= math.log(float(merged[target].flatten()[index]))
        for c in kept:
            p, g = merged[c].flatten(), (labels[b].flatten() == c).double()
            dice.append(1 - (2 * float((p * g).sum()) + 1e-5) / (float(p.sum() + g.sum()) + 1e-5))
    return ce / (batch * voxels) + sum(dice) / len(dice)


def test_unannotated_classes_are_merged_into_background():
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 3, 3, 2)
    present = torch.tensor([[True, True, False, True], [True, True, True, True]])
    labels = torch.randint(0, 4, (2, 3, 3, 2))
    labels[0][labels[0] == 2] = 0  # a case without class 2 has no voxel labelled 2
    assert abs(float(partial_dice_ce(logits, labels, present)) - brute_force(logits, labels, present)) < 1e-5


def test_a_missing_class_is_not_pushed_towards_background():
    """Moving probability between background and an unannotated class leaves the loss unchanged."""
    logits = torch.zeros(1, 3, 4, 4, 4)
    labels = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    labels[0, :2] = 1
    present = torch.tensor([[True, True, False]])
    shifted = logits.clone()
    shifted[:, 0], shifted[:, 2] = math.log(0.2), math.log(1.8)  # same bg + missing mass: 2 = e^0 + e^0
    assert abs(float(partial_dice_ce(logits, labels, present)) - float(partial_dice_ce(shifted, labels, present))) < 1e-6
    full = torch.ones(1, 3, dtype=torch.bool)
    assert float(partial_dice_ce(shifted, labels, full)) > float(partial_dice_ce(logits, labels, full))
