"""Device selection and mixed precision."""
import argparse
import contextlib
import os
from typing import Iterator, Optional, Tuple, Union

import torch
from torch import nn

__all__ = ["DEVICE_CHOICES", "DeviceError", "add_device_options", "unused_gpu_id", "resolve_device",
           "check_amp", "autocast", "cudnn_benchmark", "AMP_DTYPES", "AMP_CHOICES", "cpu_kind",
           "native_bf16", "hardware_name", "TRAIN", "INFER", "resolve_amp", "resolve_channels_last", "parse_auto_bool",
           "add_speed_options",
           "resolve_speed_options", "compile_model", "CUDNN_BENCHMARK_MIN_ITERS",
           "resolve_cudnn_benchmark", "usable_cores", "resolve_num_workers"]

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
AMP_CHOICES = ("auto", *AMP_DTYPES)
TRAIN, INFER = "train", "infer"  # what 'auto' picks for: main.py's training steps, or evaluation and predict.py
# The evidence behind auto on CUDA, from one NVIDIA H200 (torch 2.11, cuDNN 9.19), HRNet-48, crop 513, batch 8:
# bf16 + channels_last trained 1.65x faster than fp32 (an H100: 2.39x), and tools/check_precision.py found every
# precision and layout training and evaluating correctly there; at inference fp32 was the faster of the two.
CUDA_TRAIN_EVIDENCE = "bf16 + channels_last trained 1.65x faster than fp32 on an H200, as correctly"
CUDA_INFER_EVIDENCE = "fp32 predicted faster than bf16 + channels_last on an H200: 173.7 vs 132.6 images/s"
CUDA_NO_BF16 = "this GPU has no native bfloat16; fp16 was not measured on one: try --amp fp16 --channels_last"


DEVICE_CHOICES = ("auto", "cpu", "cuda")


class DeviceError(ValueError):
    """A --device that does not exist here or is not one this project runs on; the message says what to use."""


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """--device and --gpu_id, as main.py, predict.py and tools/model_info.py take them. --device has no argparse
    choices: :func:`resolve_device` refuses other values in one line (argparse would print its whole usage)."""
    parser.add_argument("--gpu_id", type=str, default="0", help="GPU ID (sets CUDA_VISIBLE_DEVICES)")
    parser.add_argument("--device", type=str, default="auto",
                        help="auto, cpu or cuda (auto: CUDA when available; the GPU is --gpu_id's)")


def _not_a_device(choice: str) -> str:
    """Why ``choice`` is refused, and what to give instead."""
    if choice.startswith("cuda:") and choice[5:].isdigit():
        return (f"--device {choice}: choose the GPU with --gpu_id {choice[5:]} (it sets CUDA_VISIBLE_DEVICES, as in "
                "the original) and --device cuda")
    if choice == "mps" or choice.startswith("mps:"):
        return f"--device {choice}: Apple's MPS is not supported (CUDA GPUs and CPUs are); use --device cpu"
    return f"--device {choice!r} is not one of {', '.join(DEVICE_CHOICES)}"


def _no_cuda(set_by_gpu_id: bool) -> str:
    """Why ``torch.cuda.is_available()`` is False, as far as can be told, and what to do."""
    if torch.version.cuda is None:
        return "--device cuda: this PyTorch is a CPU-only build; install a CUDA build of PyTorch, or use --device cpu"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    shown = "" if visible is None else (f" with CUDA_VISIBLE_DEVICES={visible}"
                                        + (" (from --gpu_id)" if set_by_gpu_id else ""))
    return f"--device cuda: no CUDA device is visible{shown}; check --gpu_id and nvidia-smi, or use --device cpu"


def unused_gpu_id(choice: str, gpu_id: str, device: torch.device) -> Optional[str]:
    """Why --gpu_id did not pick the GPU of ``device`` (resolved from --device ``choice``); None when it did."""
    if choice == "cpu":
        return "--device cpu runs on the CPU"
    if "LOCAL_RANK" in os.environ:
        return "under torchrun each process takes the GPU of its LOCAL_RANK"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if device.type == "cpu":
        return f"no CUDA device is visible (CUDA_VISIBLE_DEVICES={visible}), so this run is on the CPU"
    if visible != gpu_id:  # resolve_device leaves a value the environment set
        return f"CUDA_VISIBLE_DEVICES={visible}, set in the environment, chooses the GPU"
    return None


def resolve_device(choice: str = "auto", gpu_id: str = "0") -> torch.device:
    """'auto' -> CUDA when available, else CPU. ``gpu_id`` keeps the original's meaning (CUDA_VISIBLE_DEVICES).
    DeviceError, one line, for a device that is not one of :data:`DEVICE_CHOICES` or not available here."""
    if choice not in DEVICE_CHOICES:
        raise DeviceError(_not_a_device(choice))
    set_by_gpu_id = bool(gpu_id) and "CUDA_VISIBLE_DEVICES" not in os.environ and "LOCAL_RANK" not in os.environ
    if set_by_gpu_id:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id
    if choice == "cuda" and not torch.cuda.is_available():
        raise DeviceError(_no_cuda(set_by_gpu_id))
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
    if device.type == "cuda":  # Ampere or newer; is_bf16_supported() alone also counts emulation on older GPUs
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return _onednn_bf16()


def hardware_name(device: torch.device) -> str:
    """The GPU's name or the CPU's kind, for the top line of a benchmark."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_kind()}, {torch.get_num_threads()} threads"


def resolve_amp(amp: str, device: torch.device, purpose: str = TRAIN) -> Tuple[str, Optional[str]]:
    """The precision to run for ``--amp`` and a line to print once (None: nothing to say).

    'auto' is bf16 only where it is native and this project measured it to be correct: CPUs with AVX512-BF16
    or AMX (training and inference alike), and GPUs with native bfloat16 for training, where it is also the
    faster setting (``CUDA_TRAIN_EVIDENCE``). Inference on CUDA (``purpose`` INFER) stays fp32, which was
    faster there. Everywhere else it is 'off' (fp32).
    """
    if amp == "auto":
        if device.type == "cuda":
            if purpose == INFER:
                return "off", f"--amp auto: off for inference ({CUDA_INFER_EVIDENCE})"
            if native_bf16(device):
                return "bf16", f"--amp auto: bf16 for training (this GPU has native bfloat16: {CUDA_TRAIN_EVIDENCE})"
            return "off", f"--amp auto: off ({CUDA_NO_BF16})"
        if native_bf16(device):
            return "bf16", f"--amp auto: bf16 (this CPU has native bfloat16: {cpu_kind()})"
        return "off", f"--amp auto: off (this CPU has {cpu_kind()} and no native bfloat16)"
    if amp == "bf16" and device.type == "cpu" and not native_bf16(device):
        return amp, (f"warning: --amp bf16 is emulated on this CPU ({cpu_kind()}, no native bfloat16) and many times "
                     "slower than fp32 (about 30x for HRNet-48 training); --amp auto picks fp32 here")
    return amp, None


def resolve_channels_last(channels_last: Union[bool, str], device: torch.device,
                          amp: str = "off") -> Tuple[bool, Optional[str]]:
    """The memory format for ``--channels_last`` (given the resolved ``amp``) and a line to print once.

    'auto' is on for CPUs, where NHWC trained 1.06-1.15x faster in fp32 and bf16 on AVX2 and AVX-512 and
    evaluates like NCHW (tools/check_precision.py). On CUDA it goes with mixed precision, whose tensor-core
    kernels work in NHWC (the measured bf16 + channels_last), and is off in fp32.
    """
    if channels_last != "auto":
        return bool(channels_last), None
    if device.type == "cuda":
        if amp == "off":
            return False, "--channels_last auto: off (fp32 on CUDA)"
        return True, f"--channels_last auto: on (with --amp {amp} on CUDA: tensor-core kernels work in NHWC)"
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
    """--amp, --channels_last and --compile, shared by main.py, predict.py and tools; amp and layout default to auto."""
    parser.add_argument("--amp", type=str, default="auto", choices=AMP_CHOICES,
                        help="mixed precision. auto: bf16 on CPUs with native bfloat16 and for training on GPUs with "
                             "it; otherwise off (fp32)")
    parser.add_argument("--channels_last", nargs="?", const=True, default="auto", type=parse_auto_bool,
                        help="NHWC memory format: flag alone or true/false/auto (auto: on for CPUs, and on CUDA with "
                             "mixed precision)")
    parser.add_argument("--no-channels_last", dest="channels_last", action="store_false", help="NCHW memory format")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                        help="torch.compile (inductor) the model; compiling HRNet-48 training took 4 min on 2 CPU "
                             "cores for 1.06x after it, so it is off by default")


def resolve_speed_options(opts: argparse.Namespace, device: torch.device, log=print, purpose: str = INFER) -> None:
    """Replace 'auto' in ``opts.amp`` and ``opts.channels_last`` with what runs on ``device`` for ``purpose`` and
    log the choices once; then :func:`check_amp` (call it before any work).

    ``opts.eval_amp`` is set too, the precision of evaluations: for ``purpose`` TRAIN (main.py's training) and
    an 'auto' ``--amp``, inference's own pick (on CUDA fp32, which predicted faster); otherwise ``opts.amp``.
    Evaluation keeps the training layout: the model's weights are in it.
    """
    given_amp = opts.amp
    opts.amp, amp_note = resolve_amp(given_amp, device, purpose)
    opts.channels_last, layout_note = resolve_channels_last(opts.channels_last, device, opts.amp)
    notes = [amp_note, layout_note]
    opts.eval_amp = opts.amp
    if purpose == TRAIN:
        opts.eval_amp, eval_note = resolve_amp(given_amp, device, INFER)
        if opts.eval_amp != opts.amp:
            notes.insert(1, eval_note)
    for note in notes:
        if note:
            log(note)
    check_amp(device, opts.amp)


# cuDNN autotuning (cudnn.benchmark) times every algorithm for each new convolution shape: about 20 s for HRNet-48
# on an H200 (the first 10 iterations ran at 3.3 images/s, the next at 55-65), which the original never paid. It can
# only pay that back over a long run: 20 ms saved per step (10% of a 0.2 s step) takes 1000 steps. bench/gpu.py
# measures the cost and the gain.
CUDNN_BENCHMARK_MIN_ITERS = 1000
CPU_WORKERS_MAX = 4  # on the CPU the workers take cores from the model's threads
GPU_WORKERS_MAX = 16


def resolve_cudnn_benchmark(choice: Union[bool, str], device: torch.device,
                            iterations: int) -> Tuple[bool, Optional[str]]:
    """Whether to autotune cuDNN for a run of ``iterations`` training steps, and a line to print once.

    'auto' autotunes runs of at least ``CUDNN_BENCHMARK_MIN_ITERS`` steps; it means nothing off CUDA.
    """
    if choice != "auto" or device.type != "cuda":
        return bool(choice) and device.type == "cuda", None
    if iterations >= CUDNN_BENCHMARK_MIN_ITERS:
        return True, f"--cudnn_benchmark auto: on ({iterations} iterations pay back its one-off tuning, ~20 s)"
    return False, (f"--cudnn_benchmark auto: off (its one-off tuning, ~20 s, does not pay back in {iterations} "
                   f"iterations; on from {CUDNN_BENCHMARK_MIN_ITERS})")


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, as set by a job scheduler or taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_num_workers(choice: Optional[int], device: torch.device) -> Tuple[int, Optional[str]]:
    """DataLoader workers for ``--num_workers`` (None: automatic) and a line to print once.

    On a GPU the cores feed it: each process of the machine (torchrun's ``LOCAL_WORLD_SIZE``) gets its share of
    them, less one for itself, up to ``GPU_WORKERS_MAX``. On the CPU the workers take cores from the model's
    threads, so at most ``CPU_WORKERS_MAX``.
    """
    if choice is not None:
        return choice, None
    cores = usable_cores()
    if device.type != "cuda":
        return min(CPU_WORKERS_MAX, cores), None
    processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    workers = max(1, min(GPU_WORKERS_MAX, cores // processes - 1))
    return workers, f"--num_workers: {workers} ({cores} cores for {processes} GPU process(es))"


def compile_model(model: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile(model)`` when ``enabled``; the returned module shares the parameters (save the original)."""
    return torch.compile(model) if enabled else model


def check_amp(device: torch.device, amp: str) -> None:
    """ValueError saying what to use when ``amp`` cannot run on ``device`` (call it before any work)."""
    if amp == "fp16" and device.type == "cpu":
        raise ValueError("--amp fp16 needs a CUDA device; on the CPU use --amp auto (bf16 where it is native)")
    if amp == "bf16" and device.type == "cuda" and not native_bf16(device):
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
