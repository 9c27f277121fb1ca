"""Losses for dense prediction: cross-entropy (optionally class-weighted), focal, OHEM, soft Dice, CE + Dice.

Every loss ignores label 255 (``IGNORE_INDEX``), expects fp32 logits of shape (N, C, ...) and works on
the batch of one process: no collectives inside, DDP averages the gradients.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from utils.constants import IGNORE_INDEX

__all__ = ["check_loss_options", "CrossEntropyLoss", "FocalLoss", "OhemCrossEntropyLoss", "DiceLoss", "CrossEntropyDiceLoss",
           "LOSS_TYPES", "build_criterion"]

LOSS_TYPES = ("cross_entropy", "focal_loss", "ohem", "dice", "ce+dice")


def _checked_class_weights(weight: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``weight`` as a float32 tensor after checking it; None stays None."""
    if weight is None:
        return None
    weight = torch.as_tensor(weight, dtype=torch.float32).detach()
    if weight.dim() != 1 or not torch.isfinite(weight).all() or (weight < 0).any() or weight.sum() <= 0:
        raise ValueError(f"class weights must be a 1-D tensor of finite numbers, 0 or more and not all 0, one per "
                         f"class; got {weight.tolist()}")
    return weight


def _weights_for(weight: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Class ``weight`` on the logits' device and dtype, after checking there is one per class."""
    if weight.numel() != inputs.shape[1]:
        raise ValueError(f"{weight.numel()} class weights for a model with {inputs.shape[1]} classes; give one "
                         "weight per class")
    return weight.to(inputs.device, inputs.dtype)


def check_loss_options(ohem_thresh: float = 0.7, ohem_min_kept: int = 100000, dice_weight: float = 1.0) -> None:
    """ValueError naming the flag of the first bad value (whatever the loss type, so that a config file's bad
    value is reported even when this run does not use it)."""
    _check_ohem(ohem_thresh, ohem_min_kept)
    _check_dice_weight(dice_weight)


def _check_ohem(thresh: float, min_kept: int) -> None:
    if not 0 < thresh <= 1:
        raise ValueError(f"--ohem_thresh must be in (0, 1] (a probability of the true class), not {thresh}")
    if min_kept < 1:
        raise ValueError(f"--ohem_min_kept must be 1 or more (pixels kept per image), not {min_kept}")


def _check_dice_weight(dice_weight: float) -> None:
    if not dice_weight >= 0:
        raise ValueError(f"--dice_weight must be 0 or more, not {dice_weight}")


def _safe_ratio(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``total / count``, and 0 where ``count`` is 0; ``total`` is then a sum over nothing (0, zero gradient)."""
    return total / count.clamp_min(torch.finfo(total.dtype).tiny)


class CrossEntropyLoss(nn.Module):
    """Per-pixel cross-entropy; with ``size_average`` the mean over the pixels that are not ignored.

    With class ``weight`` (one per class) the mean is ``sum(w_y * loss) / sum(w_y)`` over those pixels, as
    in ``nn.CrossEntropyLoss(weight=...)``. A batch whose pixels are all ignored gives 0 with a zero
    gradient (``nn.CrossEntropyLoss`` divides by zero pixels there and returns NaN, which stops training).
    Masks of any integer type are taken; the weights move to the logits' device.
    """

    def __init__(self, size_average: bool = True, ignore_index: int = IGNORE_INDEX,
                 weight: Optional[torch.Tensor] = None):
        super().__init__()
        self.size_average = size_average
        self.ignore_index = ignore_index
        self.register_buffer("weight", _checked_class_weights(weight), persistent=False)

    def pixel_losses(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The unweighted loss of every pixel, 0 where ignored."""
        return F.cross_entropy(inputs, targets.long(), reduction="none", ignore_index=self.ignore_index)

    def pixel_weights(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each pixel's class weight (1 without class weights), 0 where ignored."""
        valid = targets != self.ignore_index
        if self.weight is None:
            return valid.to(inputs.dtype)
        weight = _weights_for(self.weight, inputs)
        return torch.where(valid, weight[targets.long().where(valid, 0)], 0)

    def reduce(self, losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Sum of ``weights * losses``, divided by the sum of ``weights`` with ``size_average``."""
        total = (losses * weights).sum()
        return _safe_ratio(total, weights.sum()) if self.size_average else total

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.pixel_losses(inputs, targets), self.pixel_weights(inputs, targets))


class FocalLoss(CrossEntropyLoss):
    """Focal loss (Lin et al., 2017): cross-entropy scaled by ``alpha * (1 - p_t) ** gamma``.

    ``gamma=0``, the original's default, as its forks call it (``utils.FocalLoss(ignore_index=255,
    size_average=True)``), is cross-entropy; main.py's ``--focal_gamma`` gives 2 by default. The mean runs over
    the pixels that are not ignored (the original divided by all pixels, so void-heavy batches got a smaller
    loss), weighted by the class ``weight`` when given.
    """

    def __init__(self, alpha: float = 1.0, gamma: float = 0.0, size_average: bool = True,
                 ignore_index: int = IGNORE_INDEX, weight: Optional[torch.Tensor] = None):
        if gamma < 0:
            raise ValueError(f"focal loss gamma must be 0 or more (--focal_gamma), not {gamma}")
        super().__init__(size_average, ignore_index, weight)
        self.alpha = alpha
        self.gamma = gamma

    def pixel_losses(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ce = super().pixel_losses(inputs, targets)
        # 1 - p_t, exact for confident pixels (expm1), and kept above 0: where p_t is 1 (ignored pixels too)
        # a gamma below 1 would otherwise give 0 * inf = NaN gradients.
        not_pt = (-torch.expm1(-ce)).clamp_min(torch.finfo(ce.dtype).tiny)
        return self.alpha * not_pt ** self.gamma * ce


class OhemCrossEntropyLoss(CrossEntropyLoss):
    """Cross-entropy over the hard pixels only (online hard example mining, HRNet's Cityscapes recipe).

    Of the pixels that are not ignored it keeps those whose probability of the true class is below
    ``thresh``, and at least the ``min_kept`` hardest per image of the batch (``min_kept`` x batch size; all of
    them when fewer are labelled), as mmsegmentation's OHEMPixelSampler counts; the loss is the
    (class-weighted) mean over the kept pixels. Under DDP each process counts its own images.
    """

    def __init__(self, thresh: float = 0.7, min_kept: int = 100000, ignore_index: int = IGNORE_INDEX,
                 weight: Optional[torch.Tensor] = None):
        _check_ohem(thresh, min_kept)
        super().__init__(True, ignore_index, weight)
        self.thresh = thresh
        self.min_kept = int(min_kept)

    def kept_pixels(self, losses: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the pixels to train on, from their cross-entropy ``losses`` (p_true = exp(-loss))."""
        valid = targets != self.ignore_index
        with torch.no_grad():
            # Ignored pixels get a probability above any real one, so the selection never picks them and
            # no boolean indexing (a device sync) is needed to drop them first.
            prob = torch.exp(-losses).masked_fill(~valid, 2.0).flatten()
            kth_smallest = prob.kthvalue(min(self.min_kept * targets.shape[0], prob.numel())).values
            # <= keeps pixels tied with the k-th: at least min_kept, never a random pick among equals
            return valid & ((prob < self.thresh) | (prob <= kth_smallest)).view_as(valid)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        losses = self.pixel_losses(inputs, targets)
        kept = self.kept_pixels(losses, targets)
        return self.reduce(losses, self.pixel_weights(inputs, targets) * kept)


class DiceLoss(nn.Module):
    """Soft Dice loss over the classes present in the batch: ``1 - mean dice`` of those classes.

    Per class, ``dice = (2 * sum(p * g) + eps) / (sum(p) + sum(g) + eps)`` with softmax probabilities
    ``p`` and one-hot targets ``g``; ignored pixels count in neither. Classes absent from the batch's
    labels are left out (their dice would only push their probabilities down, which cross-entropy does).
    ``eps`` (a pixel's worth) keeps a class of a few pixels from swinging between 0 and 1. With class
    ``weight`` the mean over present classes is weighted. A batch whose pixels are all ignored gives 0
    with a zero gradient.
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX, weight: Optional[torch.Tensor] = None, eps: float = 1.0):
        super().__init__()
        self.ignore_index = ignore_index
        self.eps = eps
        self.register_buffer("weight", _checked_class_weights(weight), persistent=False)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        num_classes = inputs.shape[1]
        valid = (targets != self.ignore_index).unsqueeze(1)
        classes = torch.arange(num_classes, device=inputs.device).view(1, -1, *([1] * (inputs.dim() - 2)))
        # A boolean one-hot by comparison: F.one_hot would make it int64, 8x the memory of this
        one_hot = (targets.long().unsqueeze(1) == classes) & valid
        probs = inputs.softmax(1) * valid
        dims = [0] + list(range(2, inputs.dim()))
        intersection = (probs * one_hot).sum(dims)
        target_sum = one_hot.sum(dims)
        dice = (2 * intersection + self.eps) / (probs.sum(dims) + target_sum + self.eps)
        class_weights = (target_sum > 0).to(inputs.dtype)
        if self.weight is not None:
            class_weights = class_weights * _weights_for(self.weight, inputs)
        return _safe_ratio(((1 - dice) * class_weights).sum(), class_weights.sum())


class CrossEntropyDiceLoss(nn.Module):
    """Cross-entropy (class-weighted when ``weight`` is given) plus ``dice_weight`` times the Dice loss.

    The Dice term is not class-weighted: it already gives every class present in the batch an equal share.
    """

    def __init__(self, dice_weight: float = 1.0, ignore_index: int = IGNORE_INDEX,
                 weight: Optional[torch.Tensor] = None):
        _check_dice_weight(dice_weight)
        super().__init__()
        self.cross_entropy = CrossEntropyLoss(ignore_index=ignore_index, weight=weight)
        self.dice = DiceLoss(ignore_index=ignore_index)
        self.dice_weight = dice_weight

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.cross_entropy(inputs, targets) + self.dice_weight * self.dice(inputs, targets)


def build_criterion(loss_type: str, focal_gamma: float = 2.0, class_weights: Optional[torch.Tensor] = None,
                    ohem_thresh: float = 0.7, ohem_min_kept: int = 100000, dice_weight: float = 1.0) -> nn.Module:
    """The loss named ``loss_type`` (one of ``LOSS_TYPES``), ignoring label 255, with per-class weights if given.

    ``ohem_min_kept`` counts pixels per image. The original's focal loss used gamma 0, which made it
    plain cross-entropy; 2 is the paper's value. Bad values raise ValueError naming their flag.
    """
    check_loss_options(ohem_thresh, ohem_min_kept, dice_weight)
    if loss_type == "cross_entropy":
        return CrossEntropyLoss(weight=class_weights)
    if loss_type == "focal_loss":
        return FocalLoss(gamma=focal_gamma, weight=class_weights)
    if loss_type == "ohem":
        return OhemCrossEntropyLoss(ohem_thresh, ohem_min_kept, weight=class_weights)
    if loss_type == "dice":
        return DiceLoss(weight=class_weights)
    if loss_type == "ce+dice":
        return CrossEntropyDiceLoss(dice_weight, weight=class_weights)
    raise ValueError(f"unknown --loss_type {loss_type!r}; use one of {', '.join(LOSS_TYPES)}")
