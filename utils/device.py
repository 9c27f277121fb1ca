"""Device selection and mixed precision."""
import argparse
import contextlib
import os
from typing import Iterator, Optional, Tuple, Union

import torch
from torch import nn

__all__ = ["resolve_device", "check_amp", "autocast", "cudnn_benchmark", "AMP_DTYPES", "AMP_CHOICES", "cpu_kind",
           "native_bf16", "hardware_name", "resolve_amp", "resolve_channels_last", "parse_auto_bool", "add_speed_options",
           "resolve_speed_options", "compile_model"]

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
AMP_CHOICES = ("auto", *AMP_DTYPES)
# Why auto leaves CUDA in fp32 / NCHW: the open CUDA mixed-precision question (README: Known issues).
CUDA_UNCHECKED = "not yet checked correct on CUDA by this project; README: Known issues"


def resolve_device(choice: str = "auto", gpu_id: str = "0") -> torch.device:
    """'auto' -> CUDA when available, else CPU. ``gpu_id`` keeps the original's meaning (CUDA_VISIBLE_DEVICES)."""
    if gpu_id and "CUDA_VISIBLE_DEVICES" not in os.environ and "LOCAL_RANK" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but no CUDA device is available; use --device cpu")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def cpu_kind() -> str:
    """The vector instructions PyTorch runs on (e.g. 'AVX2', 'AVX512 with AMX'), as the benchmarks print it.

    ``ATEN_CPU_CAPABILITY`` and ``ONEDNN_MAX_CPU_ISA`` lower what is reported, as they lower what runs.
    """
    kind = torch.backends.cpu.get_cpu_capability()
    if _onednn_bf16():
        kind += " with AMX" if torch.cpu._is_amx_tile_supported() else " with AVX512-BF16"
    return kind


def _onednn_bf16() -> bool:
    """oneDNN has bfloat16 kernels in hardware instructions (AVX512-BF16 or AMX), not emulated ones."""
    return (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
            and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()))


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware. On other CPUs bf16 is emulated: about 30x slower than
    fp32 for HRNet-48 training on an AVX2 CPU."""
    return torch.cuda.is_bf16_supported() if device.type == "cuda" else _onednn_bf16()


def hardware_name(device: torch.device) -> str:
    """The GPU's name or the CPU's kind, for the top line of a benchmark."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_kind()}, {torch.get_num_threads()} threads"


def resolve_amp(amp: str, device: torch.device) -> Tuple[str, Optional[str]]:
    """The precision to run for ``--amp`` and a line to print once (None: nothing to say).

    'auto' is bf16 only where it is native and this project checked that training with it predicts correctly:
    CPUs with AVX512-BF16 or AMX. Everywhere else it is 'off' (fp32).
    """
    if amp == "auto":
        if device.type == "cuda":
            return "off", f"--amp auto: off (mixed precision is {CUDA_UNCHECKED})"
        if native_bf16(device):
            return "bf16", f"--amp auto: bf16 (this CPU has native bfloat16: {cpu_kind()})"
        return "off", f"--amp auto: off (this CPU has {cpu_kind()} and no native bfloat16)"
    if amp == "bf16" and device.type == "cpu" and not native_bf16(device):
        return amp, (f"warning: --amp bf16 is emulated on this CPU ({cpu_kind()}, no native bfloat16) and many times "
                     "slower than fp32 (about 30x for HRNet-48 training); --amp auto picks fp32 here")
    return amp, None


def resolve_channels_last(channels_last: Union[bool, str], device: torch.device) -> Tuple[bool, Optional[str]]:
    """The memory format for ``--channels_last`` and a line to print once.

    'auto' is on for CPUs, where NHWC trained 1.06-1.15x faster in fp32 and bf16 on AVX2 and AVX-512 and
    evaluates like NCHW (tools/check_precision.py), and off on CUDA until that is checked there.
    """
    if channels_last != "auto":
        return bool(channels_last), None
    if device.type == "cuda":
        return False, f"--channels_last auto: off (in training {CUDA_UNCHECKED})"
    return True, "--channels_last auto: on (faster on CPUs)"


def parse_auto_bool(value: str) -> Union[bool, str]:
    """argparse type for options that take auto/true/false (and on/off, yes/no, 1/0)."""
    lowered = value.lower()
    if lowered == "auto":
        return "auto"
    if lowered in ("true", "on", "yes", "1"):
        return True
    if lowered in ("false", "off", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not one of auto, true, false")


def add_speed_options(parser: argparse.ArgumentParser) -> None:
    """--amp and --channels_last, shared by main.py and predict.py; both default to auto."""
    parser.add_argument("--amp", type=str, default="auto", choices=AMP_CHOICES,
                        help="mixed precision; auto: bf16 on CPUs with native bfloat16, else off (fp32)")
    parser.add_argument("--channels_last", nargs="?", const=True, default="auto", type=parse_auto_bool,
                        help="NHWC memory format: flag alone or true/false/auto (auto: on for CPUs, off on CUDA)")
    parser.add_argument("--no-channels_last", dest="channels_last", action="store_false", help="NCHW memory format")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                        help="torch.compile (inductor) the model; compiling HRNet-48 training took 4 min on 2 CPU "
                             "cores for 1.06x after it, so it is off by default")


def resolve_speed_options(opts: argparse.Namespace, device: torch.device, log=print) -> None:
    """Replace 'auto' in ``opts.amp`` and ``opts.channels_last`` with what runs on ``device`` and log the choices
    once; then :func:`check_amp` (call it before any work)."""
    opts.amp, amp_note = resolve_amp(opts.amp, device)
    opts.channels_last, layout_note = resolve_channels_last(opts.channels_last, device)
    for note in (amp_note, layout_note):
        if note:
            log(note)
    check_amp(device, opts.amp)


def compile_model(model: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile(model)`` when ``enabled``; the returned module shares the parameters (save the original)."""
    return torch.compile(model) if enabled else model


def check_amp(device: torch.device, amp: str) -> None:
    """ValueError saying what to use when ``amp`` cannot run on ``device`` (call it before any work)."""
    if amp == "fp16" and device.type == "cpu":
        raise ValueError("--amp fp16 needs a CUDA device; on the CPU use --amp auto (bf16 where it is native)")
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
