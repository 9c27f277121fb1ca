"""Device selection and mixed precision."""
import contextlib
import os
from typing import Iterator

import torch

__all__ = ["resolve_device", "check_amp", "autocast", "cudnn_benchmark", "AMP_DTYPES"]

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(choice: str = "auto", gpu_id: str = "0") -> torch.device:
    """'auto' -> CUDA when available, else CPU. ``gpu_id`` keeps the original's meaning (CUDA_VISIBLE_DEVICES)."""
    if gpu_id and "CUDA_VISIBLE_DEVICES" not in os.environ and "LOCAL_RANK" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but no CUDA device is available; use --device cpu")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def check_amp(device: torch.device, amp: str) -> None:
    """ValueError saying what to use when ``amp`` cannot run on ``device`` (call it before any work)."""
    if amp == "fp16" and device.type == "cpu":
        raise ValueError("--amp fp16 needs a CUDA device; use --amp bf16 on the CPU")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("--amp bf16 needs a GPU with bfloat16 support (Ampere or newer); use --amp fp16 on this one")


def autocast(device: torch.device, amp: str):
    """An autocast context for ``amp`` in {'off', 'bf16', 'fp16'} on ``device``; a no-op for 'off'."""
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    check_amp(device, amp)
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """cuDNN autotuning on or off for the block: it pays off for one input size (training crops) and
    costs a new search for every new size (VOC's validation images)."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous
