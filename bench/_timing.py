"""Shared measurement helpers for the benchmarks: synchronised wall-clock timing of repeated work."""
from typing import Callable, Dict, Iterable, Iterator, Optional, Tuple

import torch

import network
from utils.loss import build_criterion
from utils.runtime.device import cpu_kind, native_bf16
from utils.runtime.run_timer import time_calls
from utils.runtime.training import build_sgd, train_step


def setting_skip_reason(device: torch.device, amp: str) -> Optional[str]:
    """Why a benchmark skips ``amp`` on ``device`` (it would measure an emulation, or cannot run), or None."""
    if amp == "fp16" and device.type != "cuda":
        return "fp16 autocast needs CUDA"
    if amp == "bf16" and not native_bf16(device):
        where = f"this CPU ({cpu_kind()})" if device.type == "cpu" else torch.cuda.get_device_name(device)
        return f"{where} has no native bfloat16 (emulated bf16 is many times slower than fp32)"
    return None


def native_settings(settings: Iterable[Tuple[str, str, bool]], device: torch.device) -> Iterator[Tuple[str, str, bool]]:
    """The (label, amp, channels_last) settings that ``device`` runs natively; prints one line per skipped one."""
    for label, amp, channels_last in settings:
        reason = setting_skip_reason(device, amp)
        if reason:
            print(f"skipped {label}: {reason}")
        else:
            yield label, amp, channels_last


def training_step(model: torch.nn.Module, crop: int, batch: int, device: torch.device, amp: str, channels_last: bool,
                  num_classes: int = 21) -> Callable[[], float]:
    """One full training step of ``model`` (main.py's SGD, cross-entropy) on a fixed random batch of
    ``batch`` crops already on the device; ``model`` is put in training mode and, with ``channels_last``, NHWC."""
    model.to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_sgd([{"params": model.parameters()}], lr=1e-3, weight_decay=1e-4, device=device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    criterion = build_criterion("cross_entropy")
    images = torch.randn(batch, 3, crop, crop, device=device)
    labels = torch.randint(0, num_classes, (batch, crop, crop), device=device)
    return lambda: train_step(model, optimizer, scaler, criterion, images, labels, device, amp, channels_last)


def measure_training(model_name: str, crop: int, batch: int, device: torch.device, amp: str, channels_last: bool,
                     warmup: int, steps: int, num_classes: int = 21, output_stride: int = 16) -> Dict[str, float]:
    """Images/s and peak memory of the full training step (data already on the device)."""
    torch.manual_seed(0)
    model = network.build_model(model_name, num_classes, output_stride, pretrained_backbone=False)
    step = training_step(model, crop, batch, device, amp, channels_last, num_classes)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = time_calls(step, device, warmup, steps)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")
    return {"images_per_s": batch / seconds, "peak_gib": peak}
