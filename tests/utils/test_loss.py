"""Losses: values checked against NumPy on tiny tensors, label 255, class weights, OHEM's selection, Dice's
present classes, bad flags, and that each loss trains a tiny model."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils.loss import (LOSS_TYPES, CrossEntropyDiceLoss, CrossEntropyLoss, DiceLoss, FocalLoss, OhemCrossEntropyLoss,
                        build_criterion)

LOGITS = np.array([[2.0, -1.0, 0.5, 3.0, 0.0],   # class 0
                   [0.5, 1.5, 0.0, -2.0, 1.0],   # class 1
                   [-1.0, 0.0, 2.5, 1.0, 4.0]])  # class 2, for five pixels in a row
TARGETS = np.array([0, 1, 2, 1, 255])
WEIGHTS = np.array([0.5, 2.0, 4.0])


def _tensors(logits=LOGITS, targets=TARGETS):
    """(1, C, 1, P) logits and (1, 1, P) uint8 targets, as the model and the loader give them."""
    return (torch.tensor(logits, dtype=torch.float32)[None, :, None, :],
            torch.tensor(targets, dtype=torch.uint8)[None, None, :])


def _softmax(logits):
    e = np.exp(logits - logits.max(0))
    return e / e.sum(0)


def _p_true(logits=LOGITS, targets=TARGETS):
    """Probability of the true class of each labelled pixel, and the labels of those pixels."""
    keep = targets != 255
    return _softmax(logits)[targets[keep], np.flatnonzero(keep)], targets[keep]


def test_cross_entropy_with_class_weights_is_the_weighted_mean():
    p, labels = _p_true()
    w = WEIGHTS[labels]
    expected = (w * -np.log(p)).sum() / w.sum()
    loss = CrossEntropyLoss(weight=torch.tensor(WEIGHTS))(*_tensors())
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert CrossEntropyLoss()(*_tensors()).item() == pytest.approx(-np.log(p).mean(), rel=1e-6)


def test_focal_loss_with_class_weights():
    p, labels = _p_true()
    w = WEIGHTS[labels]
    expected = (w * (1 - p) ** 2 * -np.log(p)).sum() / w.sum()
    loss = FocalLoss(gamma=2.0, weight=torch.tensor(WEIGHTS))(*_tensors())
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_an_all_ignored_batch_gives_zero_with_zero_gradient(loss_type):
    logits, targets = _tensors(targets=np.full(5, 255))
    logits.requires_grad_(True)
    loss = build_criterion(loss_type, class_weights=torch.tensor(WEIGHTS), ohem_min_kept=2)(logits, targets)
    loss.backward()
    assert loss.item() == 0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_class_weights_count_must_match_the_model():
    for loss in (CrossEntropyLoss(weight=torch.tensor([1.0, 2.0])), DiceLoss(weight=torch.tensor([1.0, 2.0]))):
        with pytest.raises(ValueError, match="2 class weights for a model with 3 classes"):
            loss(*_tensors())
    for bad in ([1.0, -1.0, 1.0], [1.0, float("nan"), 1.0], [0.0, 0.0, 0.0], [[1.0, 2.0, 3.0]]):
        with pytest.raises(ValueError, match="class weights must be a 1-D tensor"):
            CrossEntropyLoss(weight=torch.tensor(bad))


def _ohem_case():
    """Two classes; the true class of the six labelled pixels has these probabilities (the logit gap's sigmoid)."""
    p_true = np.array([0.9, 0.8, 0.6, 0.5, 0.3, 0.95])
    targets = np.array([0, 1, 0, 1, 0, 1, 255, 255])
    gaps = np.log(p_true / (1 - p_true))
    logits = np.zeros((2, 8))
    logits[targets[:6], np.arange(6)] = gaps
    logits[0, 6:] = -5.0  # ignored pixels that would look hard for class 0: never kept
    return _tensors(logits, targets), p_true, targets[:6]


@pytest.mark.parametrize("min_kept, kept", [(1, [0.6, 0.5, 0.3]), (3, [0.6, 0.5, 0.3]), (5, [0.9, 0.8, 0.6, 0.5, 0.3]),
                                            (100, [0.9, 0.8, 0.6, 0.5, 0.3, 0.95])])
def test_ohem_keeps_pixels_below_the_threshold_and_at_least_min_kept(min_kept, kept):
    (logits, targets), p_true, _ = _ohem_case()
    loss = OhemCrossEntropyLoss(thresh=0.7, min_kept=min_kept)
    assert loss(logits, targets).item() == pytest.approx(-np.log(kept).mean(), rel=1e-5)
    assert loss.kept_pixels(loss.pixel_losses(logits, targets), targets).sum().item() == len(kept)


def test_ohem_with_class_weights_and_threshold_one():
    (logits, targets), p_true, labels = _ohem_case()
    w = WEIGHTS[:2][labels]
    expected = (w * -np.log(p_true)).sum() / w.sum()  # thresh 1 keeps every labelled pixel
    loss = OhemCrossEntropyLoss(thresh=1.0, min_kept=1, weight=torch.tensor(WEIGHTS[:2]))(logits, targets)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_ohem_min_kept_counts_per_image_as_mmsegmentation_does():
    """Two images of six labelled pixels: min_kept 2 per image keeps at least 4 pixels of the batch."""
    (logits, targets), _, _ = _ohem_case()
    logits, targets = torch.cat([logits, logits]), torch.cat([targets, targets])
    loss = OhemCrossEntropyLoss(thresh=0.1, min_kept=2)  # nothing is under the threshold: min_kept decides
    assert loss.kept_pixels(loss.pixel_losses(logits, targets), targets).sum().item() == 4


def _hrnet_ohem(logits: torch.Tensor, targets: torch.Tensor, thresh: float, min_kept: int) -> float:
    """HRNet-Semantic-Segmentation's OHEM cross-entropy as its paper code formulates it, for one GPU's batch:
    sort the true-class probabilities of the labelled pixels, take the threshold max(p[min(min_kept, n - 1)],
    thresh) and average the cross-entropy of the pixels strictly below it."""
    labelled = targets.long() != 255
    losses = F.cross_entropy(logits, targets.long(), ignore_index=255, reduction="none")[labelled]
    probs = logits.softmax(1).gather(1, targets.long().clamp_max(logits.shape[1] - 1).unsqueeze(1)).squeeze(1)
    probs = probs[labelled]
    ordered = probs.sort().values
    threshold = max(ordered[min(min_kept, ordered.numel() - 1)].item(), thresh)
    return losses[probs < threshold].mean().item()


@pytest.mark.parametrize("thresh, min_kept", [(0.7, 500), (0.7, 50), (0.9, 600), (0.3, 400)])  # x 3 < 1920 labelled
def test_ohem_equals_hrnets_formulation(thresh, min_kept):
    """HRNet counts min_kept per GPU batch: ours with min_kept per image x 3 images is the same loss (distinct
    probabilities: HRNet's strict cut below the next pixel keeps what ours keeps)."""
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 24, 32) * 3
    targets = torch.randint(0, 5, (3, 24, 32), dtype=torch.uint8)
    targets[:, :4] = 255
    ours = OhemCrossEntropyLoss(thresh=thresh, min_kept=min_kept)(logits, targets).item()
    assert ours == pytest.approx(_hrnet_ohem(logits, targets, thresh, min_kept * 3), rel=1e-6)


def test_ohem_keeps_ties_with_the_kth_pixel():
    logits, targets = _tensors(np.zeros((2, 4)), np.array([0, 1, 0, 255]))  # every p_true is 0.5
    loss = OhemCrossEntropyLoss(thresh=0.4, min_kept=2)
    assert loss.kept_pixels(loss.pixel_losses(logits, targets), targets).sum().item() == 3


def test_dice_counts_only_classes_present_and_masks_ignored_pixels():
    logits = LOGITS[:, :3]
    targets = np.array([0, 0, 255])  # only class 0 is present
    p = _softmax(logits)[:, :2]
    dice0 = (2 * p[0].sum() + 1) / (p[0].sum() + 2 + 1)
    assert DiceLoss()(*_tensors(logits, targets)).item() == pytest.approx(1 - dice0, rel=1e-6)


def test_dice_with_class_weights():
    p = _softmax(LOGITS)[:, :4]
    onehot = np.eye(3)[TARGETS[:4]].T
    dice = (2 * (p * onehot).sum(1) + 1) / (p.sum(1) + onehot.sum(1) + 1)  # all three classes present
    expected = (WEIGHTS * (1 - dice)).sum() / WEIGHTS.sum()
    assert DiceLoss(weight=torch.tensor(WEIGHTS))(*_tensors()).item() == pytest.approx(expected, rel=1e-6)


def test_ce_plus_dice_weights_the_cross_entropy_only():
    weights = torch.tensor(WEIGHTS)
    combined = CrossEntropyDiceLoss(dice_weight=0.5, weight=weights)(*_tensors())
    parts = CrossEntropyLoss(weight=weights)(*_tensors()) + 0.5 * DiceLoss()(*_tensors())
    assert combined.item() == pytest.approx(parts.item(), rel=1e-6)


@pytest.mark.parametrize("kwargs, flag", [({"ohem_thresh": 0.0}, "--ohem_thresh"),
                                          ({"ohem_thresh": 1.5}, "--ohem_thresh"),
                                          ({"ohem_thresh": math.nan}, "--ohem_thresh"),
                                          ({"ohem_min_kept": 0}, "--ohem_min_kept"),
                                          ({"dice_weight": -1.0}, "--dice_weight"),
                                          ({"dice_weight": math.nan}, "--dice_weight"),
                                          ({"focal_gamma": -1.0}, "--focal_gamma")])
def test_bad_values_name_their_flag(kwargs, flag):
    loss_type = "focal_loss" if "focal_gamma" in kwargs else "cross_entropy"  # checked even when unused
    with pytest.raises(ValueError, match=flag):
        build_criterion(loss_type, **kwargs)


def test_unknown_loss_type_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown --loss_type 'dice_loss'; use one of .*ce\+dice"):
        build_criterion("dice_loss")


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_each_loss_trains_a_tiny_model(loss_type):
    """20 SGD steps on a batch whose labels are a function of the image, with a void border, lower the loss."""
    torch.manual_seed(0)
    images = torch.randn(4, 3, 12, 12)
    labels = nn.Conv2d(3, 3, 1)(images).argmax(1).to(torch.uint8)
    labels[:, 0, :] = 255
    model = nn.Conv2d(3, 3, 3, padding=1)
    criterion = build_criterion(loss_type, class_weights=torch.tensor([1.0, 2.0, 1.5]), ohem_min_kept=50)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5 if "dice" in loss_type else 0.1, momentum=0.9)
    losses = []
    for _ in range(20):
        loss = criterion(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.8 * losses[0]
