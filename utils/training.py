"""One optimisation step, shared by main.py and the benchmarks."""
import numpy as np
import torch
from torch import nn

from .device import autocast

__all__ = ["train_step"]


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               criterion: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
               amp: str = "off", channels_last: bool = False) -> float:
    """Forward (under ``amp``), loss, backward and optimizer step; returns the loss.

    A NaN or infinite loss is returned without stepping, so the caller decides what to do.
    """
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = labels.to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, amp):
        outputs = model(images)
    loss = criterion(outputs.float(), labels)
    value = loss.item()
    if not np.isfinite(value):
        return value
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return value
