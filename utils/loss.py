"""Losses for dense prediction."""
import torch
import torch.nn.functional as F
from torch import nn

from .constants import IGNORE_INDEX

__all__ = ["CrossEntropyLoss", "FocalLoss", "build_criterion"]


class CrossEntropyLoss(nn.Module):
    """Per-pixel cross-entropy; with ``size_average`` the mean over the pixels that are not ignored.

    A batch whose pixels are all ignored gives 0 with a zero gradient (``nn.CrossEntropyLoss`` divides
    by zero pixels there and returns NaN, which stops training). Masks of any integer type are taken.
    """

    def __init__(self, size_average: bool = True, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.size_average = size_average
        self.ignore_index = ignore_index

    def pixel_losses(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss of every pixel, 0 where ignored."""
        return F.cross_entropy(inputs, targets.long(), reduction="none", ignore_index=self.ignore_index)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        total = self.pixel_losses(inputs, targets).sum()
        if not self.size_average:
            return total
        return total / (targets != self.ignore_index).sum().clamp_min(1)


class FocalLoss(CrossEntropyLoss):
    """Focal loss (Lin et al., 2017): cross-entropy scaled by ``alpha * (1 - p_t) ** gamma``.

    ``gamma=0`` (the original's default) is cross-entropy. The mean runs over the pixels that are not
    ignored (the original divided by all pixels, so void-heavy batches got a smaller loss).
    """

    def __init__(self, alpha: float = 1.0, gamma: float = 2.0, size_average: bool = True,
                 ignore_index: int = IGNORE_INDEX):
        if gamma < 0:
            raise ValueError(f"focal loss gamma must be 0 or more, not {gamma}")
        super().__init__(size_average, ignore_index)
        self.alpha = alpha
        self.gamma = gamma

    def pixel_losses(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ce = super().pixel_losses(inputs, targets)
        # 1 - p_t, exact for confident pixels (expm1), and kept above 0: where p_t is 1 (ignored pixels too)
        # a gamma below 1 would otherwise give 0 * inf = NaN gradients.
        not_pt = (-torch.expm1(-ce)).clamp_min(torch.finfo(ce.dtype).tiny)
        return self.alpha * not_pt ** self.gamma * ce


def build_criterion(loss_type: str, focal_gamma: float = 2.0) -> nn.Module:
    """'cross_entropy' or 'focal_loss' (focusing ``focal_gamma``), both ignoring label 255.

    The original's focal loss used gamma 0, which made it plain cross-entropy; 2 is the paper's value.
    """
    if loss_type == "focal_loss":
        return FocalLoss(gamma=focal_gamma)
    if loss_type == "cross_entropy":
        return CrossEntropyLoss()
    raise ValueError(f"unknown loss_type {loss_type!r}; use cross_entropy or focal_loss")
