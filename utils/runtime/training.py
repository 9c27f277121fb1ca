"""One optimisation step in two halves (forward and loss; backward and update), and the SGD it steps, shared by
main.py, the benchmarks and tools. main.py checks the loss on every process between the halves."""
import math
from typing import Any, Dict, List

import torch
from torch import nn

from utils.runtime.device import autocast

__all__ = ["build_sgd", "load_optimizer_state", "forward_loss", "optimize", "train_step"]

# Where SGD updates all parameters in one fused kernel. On 2 cores of an AMX Xeon, an update of
# deeplabv3plus_hrnetv2_48's 72M parameters took 93 ms instead of 105 ms with channels_last weights (main.py's CPU
# default; PyTorch 2.14's kernel first copies such gradients) and 40 ms instead of 103 ms in NCHW; with AVX2 kernels
# only (ATEN_CPU_CAPABILITY=avx2 on the same machine) 73 ms instead of 80 ms. CUDA keeps
# PyTorch's default (foreach): fused SGD was not measured there, and with fp16's GradScaler a skipped first step
# leaves the fused kernel's momentum buffers uninitialised (PyTorch 2.14, seen on the CPU).
FUSED_SGD_DEVICES = ("cpu",)
MOMENTUM = 0.9


def build_sgd(param_groups: List[Dict[str, Any]], lr: float, weight_decay: float, device: torch.device
              ) -> torch.optim.SGD:
    """SGD with momentum 0.9, as the original's, over ``param_groups``; fused where that is measured faster."""
    fused = True if device.type in FUSED_SGD_DEVICES else None
    return torch.optim.SGD(params=param_groups, lr=lr, momentum=MOMENTUM, weight_decay=weight_decay, fused=fused)


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: Dict[str, Any]) -> None:
    """Load a checkpoint's optimizer state, keeping how this run's optimizer steps (fused or not): the saved groups
    carry the flags of the machine that wrote them, and the original's carry none. A parameter the saved state has
    no momentum for (it had no gradient then) gets a zero one, as its first step would."""
    steps_by = [{key: group[key] for key in ("fused", "foreach") if key in group} for group in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, flags in zip(optimizer.param_groups, steps_by):
        group.update(flags)
    if optimizer.state:  # the fused step fails on a mix; a zero buffer is what SGD's first step starts from
        for group in optimizer.param_groups:
            for param in group["params"]:
                if "momentum_buffer" not in optimizer.state[param]:
                    optimizer.state[param]["momentum_buffer"] = torch.zeros_like(param)


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
