"""Small helpers the original's users know: denormalize, Denormalize, set_bn_momentum, fix_bn, mkdir."""
import os
from typing import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["denormalize", "Denormalize", "set_bn_momentum", "fix_bn", "mkdir"]


class Denormalize:
    """Undo ``Normalize(mean, std)`` on a (C, H, W) tensor or array."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        mean = np.asarray(mean, dtype=np.float32)
        std = np.asarray(std, dtype=np.float32)
        self._mean = -mean / std
        self._std = 1 / std

    def __call__(self, tensor):
        if isinstance(tensor, np.ndarray):
            return (tensor - self._mean.reshape(-1, 1, 1)) / self._std.reshape(-1, 1, 1)
        mean = torch.as_tensor(self._mean, device=tensor.device).view(-1, 1, 1)
        std = torch.as_tensor(self._std, device=tensor.device).view(-1, 1, 1)
        return (tensor - mean) / std


def denormalize(tensor, mean: Sequence[float], std: Sequence[float]):
    """Undo ``Normalize(mean, std)`` on a (C, H, W) tensor or array, as a new one."""
    return Denormalize(mean, std)(tensor)


def set_bn_momentum(model: nn.Module, momentum: float = 0.1) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


def fix_bn(model: nn.Module) -> None:
    """Put every BatchNorm in eval mode (frozen running statistics)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def mkdir(path: str) -> None:
    os.makedirs(path, exist_ok=True)
