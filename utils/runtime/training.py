"""One optimisation step in two halves (forward and loss; backward and update), and the SGD it steps, shared by
main.py, the benchmarks and tools. main.py checks the loss on every process between the halves."""
import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.optim.sgd import sgd

from utils.runtime.device import autocast

__all__ = ["MemoryOrderSGD", "build_sgd", "load_optimizer_state", "forward_loss", "optimize", "train_step"]

# Where SGD updates all parameters in one fused kernel. `python bench/sgd.py` on 2 cores of an AMX Xeon, an update
# of deeplabv3plus_hrnetv2_48's 72M channels_last parameters (main.py's CPU default): MemoryOrderSGD 47 ms,
# torch.optim.SGD's own fused step (it copies such tensors) 74 ms, PyTorch's default loop 82 ms; with AVX2 kernels
# only (ATEN_CPU_CAPABILITY=avx2 on the same machine) 48, 70 and 78 ms. CUDA keeps PyTorch's default (foreach): fused
# SGD was not measured there. (torch.optim.SGD's fused step leaves its momentum uninitialised when fp16's GradScaler
# skips the first step, PyTorch 2.14; MemoryOrderSGD's momentum starts at zero, so it keeps zeros there.)
FUSED_SGD_DEVICES = ("cpu",)
MOMENTUM = 0.9
# The code of torch's lazy ``_disable_dynamo`` wrapper, the same for every method it wraps.
_LAZY_DYNAMO_DISABLE = getattr(torch._disable_dynamo(lambda: None), "__code__", None)


def _without_lazy_dynamo_import(method: Callable) -> Callable:
    """``method`` without torch's ``_disable_dynamo`` wrapper, which imports torch._dynamo (1.2 s on an AMX Xeon) at
    its first call to keep torch.compile from tracing the method: a no-op for calls made outside compiled code."""
    code = getattr(method, "__code__", None)
    return method.__wrapped__ if code is not None and code is _LAZY_DYNAMO_DISABLE else method


class MemoryOrderSGD(torch.optim.SGD):
    """torch.optim.SGD whose fused step gets each parameter, its gradient and its momentum as 1-D views in the
    parameter's memory order.

    PyTorch's fused CPU kernel copies a tensor that is not contiguous, as a channels_last weight is, into a
    contiguous one and back, and pairs the elements of a parameter and a gradient of different layouts by their place
    in memory, which mixes them up. The update is elementwise, so views in one layout give the fused kernel's numbers
    without copies (PyTorch's default loop may differ in the last bit where the kernel's vectors end); a gradient or
    momentum laid out otherwise is copied into the parameter's layout first. Momentum starts at zero, which without
    dampening is what SGD's first step gives (up to the sign of zeros). Other settings (not fused, dampening, no
    momentum) step as torch.optim.SGD; the state and its checkpoint format are its own.

    It is made and called outside compiled code (``--compile`` compiles the model), so its fused path, its set-up,
    ``zero_grad`` and state dicts skip the wrappers that keep torch.compile out of torch.optim.Optimizer and import
    torch._dynamo: a one-process training run on the CPU never imports it (torchrun's DistributedDataParallel does).
    Its other paths step as torch's, which import it.
    """

    add_param_group = _without_lazy_dynamo_import(torch.optim.SGD.add_param_group)
    zero_grad = _without_lazy_dynamo_import(torch.optim.SGD.zero_grad)
    state_dict = _without_lazy_dynamo_import(torch.optim.SGD.state_dict)
    load_state_dict = _without_lazy_dynamo_import(torch.optim.SGD.load_state_dict)

    @torch.no_grad()
    def step(self, closure=None):
        if not all(group["fused"] and group["momentum"] and not group["dampening"] for group in self.param_groups):
            return _unhooked(torch.optim.SGD.step)(self, closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grouped_views = [[self._flat_views(param) for param in group["params"] if param.grad is not None]
                         for group in self.param_groups]  # all checked before any parameter changes
        for group, views in zip(self.param_groups, grouped_views):
            if views:
                params, grads, buffers = (list(tensors) for tensors in zip(*views))
                sgd(params, grads, buffers, fused=True, grad_scale=getattr(self, "grad_scale", None),
                    found_inf=getattr(self, "found_inf", None), weight_decay=group["weight_decay"],
                    momentum=group["momentum"], lr=group["lr"], dampening=0.0, nesterov=group["nesterov"],
                    maximize=group["maximize"])
        return loss

    def _flat_views(self, param: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(parameter, gradient, momentum) as 1-D views in ``param``'s memory order; a missing momentum is made, and
        a gradient or momentum laid out otherwise re-laid, for good (the kernel unscales the gradient in place)."""
        order = _memory_order(param)
        if order is None:
            raise ValueError(f"MemoryOrderSGD steps parameters without gaps or overlaps in memory; one of shape "
                             f"{tuple(param.shape)} has strides {param.stride()}")
        state = self.state[param]
        buffer = state.get("momentum_buffer")
        if buffer is None:
            state["momentum_buffer"] = torch.zeros_like(param)
        elif buffer.stride() != param.stride():  # NCHW momentum (the original's, a GPU run's) for channels_last
            state["momentum_buffer"] = torch.empty_like(param).copy_(buffer)
        if param.grad.stride() != param.stride():  # autograd's follow the parameter's; one set by hand may not
            param.grad = torch.empty_like(param).copy_(param.grad)
        return tuple(tensor.permute(order).view(-1) for tensor in (param, param.grad, state["momentum_buffer"]))


def _memory_order(tensor: torch.Tensor) -> Optional[List[int]]:
    """The order of ``tensor``'s dimensions in which it is contiguous (0, 1, 2, 3 for NCHW; 0, 2, 3, 1 for
    channels_last), or None when its elements have gaps or overlaps in memory."""
    order = sorted(range(tensor.dim()), key=lambda dim: -tensor.stride(dim))
    return order if tensor.permute(order).is_contiguous() else None


def _unhooked(step: Callable) -> Callable:
    """An optimizer class's ``step`` without the hook runner that torch.optim.Optimizer wraps around it once an
    optimizer of that class exists: a subclass's step, hooked itself, that calls it runs each hook once."""
    return step.__wrapped__ if getattr(step, "hooked", False) else step


def build_sgd(param_groups: List[Dict[str, Any]], lr: float, weight_decay: float, device: torch.device
              ) -> torch.optim.SGD:
    """SGD with momentum 0.9, as the original's, over ``param_groups``; fused where that is measured faster."""
    fused = True if device.type in FUSED_SGD_DEVICES else None
    return MemoryOrderSGD(params=param_groups, lr=lr, momentum=MOMENTUM, weight_decay=weight_decay, fused=fused)


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: Dict[str, Any]) -> None:
    """Load a checkpoint's optimizer state, keeping how this run's optimizer steps (fused or not): the saved groups
    carry the flags of the machine that wrote them, and the original's carry none. (MemoryOrderSGD gives a
    parameter the saved state has no momentum for a zero one, and re-lays momentum saved in another layout.)"""
    steps_by = [{key: group[key] for key in ("fused", "foreach") if key in group} for group in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, flags in zip(optimizer.param_groups, steps_by):
        group.update(flags)


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
