"""One optimisation step in two halves (forward and loss; backward and update), and the SGD it steps, shared by
main.py, the benchmarks and tools. main.py checks the loss on every process between the halves."""
import math
from typing import Any, Dict, List, Tuple

import torch
from torch import nn
from torch.optim.sgd import sgd

from utils.runtime.device import autocast

__all__ = ["MemoryOrderSGD", "build_sgd", "load_optimizer_state", "forward_loss", "optimize", "train_step"]

# Where SGD updates all parameters in one fused kernel. `python bench/sgd.py` on 2 cores of an AMX Xeon, an update
# of deeplabv3plus_hrnetv2_48's 72M channels_last parameters (main.py's CPU default): MemoryOrderSGD 47 ms,
# torch.optim.SGD's own fused step (it copies such tensors) 74 ms, PyTorch's default loop 82 ms; with AVX2 kernels
# only (ATEN_CPU_CAPABILITY=avx2 on the same machine) 48, 70 and 78 ms. CUDA keeps PyTorch's default (foreach): fused
# SGD was not measured there, and with fp16's GradScaler a skipped first step leaves the fused kernel's momentum
# buffers uninitialised (PyTorch 2.14, seen on the CPU).
FUSED_SGD_DEVICES = ("cpu",)
MOMENTUM = 0.9


class MemoryOrderSGD(torch.optim.SGD):
    """torch.optim.SGD whose fused step gets each parameter, its gradient and its momentum as 1-D views in memory
    order.

    PyTorch's fused CPU kernel copies a tensor that is not contiguous, as a channels_last weight is, into a
    contiguous one and back. The update is elementwise, so where the three share one layout the views give the same
    numbers without those copies. Momentum starts at zero, which without dampening is what SGD's first step gives;
    other settings step as torch.optim.SGD does. The state and its checkpoint format are torch.optim.SGD's.
    """

    @torch.no_grad()
    def step(self, closure=None):
        if not all(group["fused"] and group["momentum"] and not group["dampening"] for group in self.param_groups):
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [param for param in group["params"] if param.grad is not None]
            for param in params:
                if self.state[param].get("momentum_buffer") is None:
                    self.state[param]["momentum_buffer"] = torch.zeros_like(param)
            views = [_in_memory_order(param, param.grad, self.state[param]["momentum_buffer"]) for param in params]
            if views:
                flat_params, flat_grads, flat_buffers = (list(tensors) for tensors in zip(*views))
                sgd(flat_params, flat_grads, flat_buffers, fused=True, grad_scale=getattr(self, "grad_scale", None),
                    found_inf=getattr(self, "found_inf", None), weight_decay=group["weight_decay"],
                    momentum=group["momentum"], lr=group["lr"], dampening=0.0, nesterov=group["nesterov"],
                    maximize=group["maximize"])
        return loss


def _in_memory_order(*tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """``tensors`` as 1-D views in memory order where they share one dense layout (contiguous in some order of their
    dimensions, as NCHW and channels_last are), else as they are."""
    first = tensors[0]
    if any(tensor.layout != torch.strided or tensor.stride() != first.stride() for tensor in tensors):
        return tensors
    order = sorted(range(first.dim()), key=lambda dim: -first.stride(dim))
    if not first.permute(order).is_contiguous():
        return tensors
    return tuple(tensor.permute(order).view(-1) for tensor in tensors)


def build_sgd(param_groups: List[Dict[str, Any]], lr: float, weight_decay: float, device: torch.device
              ) -> torch.optim.SGD:
    """SGD with momentum 0.9, as the original's, over ``param_groups``; fused where that is measured faster."""
    fused = True if device.type in FUSED_SGD_DEVICES else None
    return MemoryOrderSGD(params=param_groups, lr=lr, momentum=MOMENTUM, weight_decay=weight_decay, fused=fused)


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: Dict[str, Any]) -> None:
    """Load a checkpoint's optimizer state, keeping how this run's optimizer steps (fused or not): the saved groups
    carry the flags of the machine that wrote them, and the original's carry none. A parameter the saved state has
    no momentum for (it had no gradient then) gets a zero one, as its first step would; momentum saved in another
    layout (NCHW for this run's channels_last weights) is copied into the parameter's, which MemoryOrderSGD steps
    without copies."""
    steps_by = [{key: group[key] for key in ("fused", "foreach") if key in group} for group in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, flags in zip(optimizer.param_groups, steps_by):
        group.update(flags)
    if optimizer.state:  # the fused step fails on a mix; a zero buffer is what SGD's first step starts from
        for group in optimizer.param_groups:
            for param in group["params"]:
                buffer = optimizer.state[param].get("momentum_buffer")
                if buffer is None:
                    optimizer.state[param]["momentum_buffer"] = torch.zeros_like(param)
                elif buffer.stride() != param.stride():
                    optimizer.state[param]["momentum_buffer"] = torch.empty_like(param).copy_(buffer)


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
