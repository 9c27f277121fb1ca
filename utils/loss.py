"""Losses for dense prediction."""
import torch
import torch.nn.functional as F
from torch import nn

from .constants import IGNORE_INDEX

__all__ = ["FocalLoss", "build_criterion"]


class FocalLoss(nn.Module):
    """Focal loss (Lin et al., 2017): cross-entropy scaled by ``alpha * (1 - p_t) ** gamma``.

    With ``size_average`` the mean runs over the pixels that are not ignored (the original divided by
    all pixels, so void-heavy batches got a smaller loss).
    """

    def __init__(self, alpha: float = 1.0, gamma: float = 2.0, size_average: bool = True,
                 ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma
        self.size_average = size_average
        self.ignore_index = ignore_index

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(inputs, targets, reduction="none", ignore_index=self.ignore_index)
        focal = self.alpha * (1 - torch.exp(-ce)) ** self.gamma * ce
        if not self.size_average:
            return focal.sum()
        valid = (targets != self.ignore_index).sum().clamp_min(1)
        return focal.sum() / valid


def build_criterion(loss_type: str) -> nn.Module:
    """'cross_entropy' or 'focal_loss', both ignoring label 255."""
    if loss_type == "focal_loss":
        return FocalLoss(ignore_index=IGNORE_INDEX, size_average=True)
    if loss_type == "cross_entropy":
        return nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="mean")
    raise ValueError(f"unknown loss_type {loss_type!r}; use cross_entropy or focal_loss")
