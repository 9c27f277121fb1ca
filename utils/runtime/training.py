"""One optimisation step in two halves (forward and loss; backward and update), shared by main.py, the
benchmarks and tools. main.py checks the loss on every process between the halves."""
import math

import torch
from torch import nn

from utils.runtime.device import autocast

__all__ = ["forward_loss", "optimize", "train_step"]


def forward_loss(model: nn.Module, criterion: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 device: torch.device, amp: str = "off", channels_last: bool = False) -> torch.Tensor:
    """Move the batch to ``device``, run the model under ``amp`` and return the loss (computed in fp32)."""
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = labels.to(device, non_blocking=True)
    with autocast(device, amp):
        outputs = model(images)
    return criterion(outputs.float(), labels)


def optimize(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
    """Backward (scaled when the fp16 scaler is on), optimizer step and scaler update."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               criterion: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
               amp: str = "off", channels_last: bool = False) -> float:
    """A whole step for one process; returns the loss. A NaN or infinite loss is returned without stepping."""
    loss = forward_loss(model, criterion, images, labels, device, amp, channels_last)
    value = loss.item()
    if math.isfinite(value):
        optimize(loss, optimizer, scaler)
    return value
