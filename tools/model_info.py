"""Model cost: parameters, multiply-adds, training activation memory and inference speed of the DeepLab entries.

Usage: python tools/model_info.py --model deeplabv3plus_mobilenet [--size 512] [--batch 2] [--seconds 3]
       python tools/model_info.py --model deeplabv3plus_tu-convnext_tiny --no-speed   (any timm encoder)
       python tools/model_info.py --all --no-speed [--json PATH]

What each column is:
- params (M): parameters in millions (weights, biases, BatchNorm's scale and shift; not its running statistics).
- GMACs: multiply-adds for one --size x --size image, FLOPs / 2 as ``torch.utils.flop_counter.FlopCounterMode``
  counts them in an eval-mode forward. It counts convolutions (every weight at every output position, the padded
  border included, bias not) and matrix products only; BatchNorm, ReLU, additions, pooling and bilinear
  interpolation are not counted. The forward runs on the meta device: shapes only, no arithmetic.
- act. MiB/img: activation memory of one training step with --batch images (BatchNorm needs more than one),
  divided by --batch. On CUDA: the peak allocated during forward, loss and backward minus what was allocated
  before (parameters, gradients, SGD momentum, the batch), so cuDNN workspaces and transients count too. On the
  CPU, which keeps no allocator statistic: the bytes of the tensors autograd saves for backward during forward
  and loss (each storage once; parameters, buffers and the batch excluded; under --amp the low-precision weight
  copies included). That is what is alive at the end of the forward, where the step's memory peaks; short-lived
  temporaries are not counted.
- images/s: eval-mode inference under ``torch.inference_mode`` on batches of --batch random images, timed for
  about --seconds after a warm-up; the model as main.py evaluates it (predict.py also folds BatchNorm and fuses
  ReLUs on CPUs, and runs faster). --amp, --channels_last and --compile as in predict.py (both auto by default:
  bf16 on CPUs with native bfloat16; the choice is printed).
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == "__main__":  # before torch loads (seconds): Ctrl-C or SIGTERM then ends it in one line
    from utils.io.stop_signals import stop_quietly_while_starting
    stop_quietly_while_starting()

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import network  # noqa: E402
from network.trained_model import unused_output_stride  # noqa: E402
from utils.io.stop_signals import exit_keeping_status  # noqa: E402
from utils.runtime.interrupts import StoppedBySignal, stop_signals_raise  # noqa: E402
from utils.runtime.run_timer import time_calls  # noqa: E402
from utils.io.atomic import (atomic_write, folder_of, path_state, removed_if_left_empty,  # noqa: E402
                             require_writable_file)
from utils.config import ConfigError, HelpFormatter, check_ranges, parse_with_config, warn_unused  # noqa: E402
from utils.runtime.device import (add_device_options, add_speed_options, compile_model, hardware_name,  # noqa: E402
                                  resolve_device, resolve_speed_options, unused_gpu_id)
from utils.inference.predictor import InputTooSmallError, is_too_small, predict_logits  # noqa: E402
from utils.loss import build_criterion  # noqa: E402
from utils.runtime.training import build_sgd, forward_loss, train_step  # noqa: E402

WARMUP_CALLS = 2  # the first call also creates oneDNN / cuDNN kernels
MIB = 2 ** 20
COLUMNS = {"params_m": ("params (M)", 10), "gmacs": ("GMACs", 8), "activation_mib_per_image": ("act. MiB/img", 12),
           "images_per_s": ("images/s", 8)}  # row key -> (title, width)


def count_parameters(model: nn.Module) -> int:
    """Number of parameter values (BatchNorm running statistics are buffers, not parameters)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: Tuple[int, ...]) -> int:
    """Multiply-adds of one eval-mode forward on a batch of ``input_shape`` (N, C, H, W), on the model's device.

    FlopCounterMode's FLOPs / 2: convolutions and matrix products only (module docstring).
    """
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model.eval()(torch.zeros(input_shape, device=device))
    return counter.get_total_flops() // 2


def without_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` with each BatchNorm (timm's with its activation too) replaced by an Identity, in place: the shapes
    and the MACs stay, and the counter no longer steps through their arithmetic op by op on the meta device."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(module, name, nn.Identity())
    return model


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def activation_bytes(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, amp: str = "off",
                     channels_last: bool = False) -> int:
    """Bytes of activation memory of one training step on ``images`` (CUDA: peak; CPU: saved tensors).

    Exactly what is measured on each device is in the module docstring.
    """
    model.train()
    criterion = build_criterion("cross_entropy")
    device = images.device
    if device.type == "cuda":
        optimizer = build_sgd([{"params": model.parameters()}], 1e-3, 1e-4, device)
        scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

        def step():
            train_step(model, optimizer, scaler, criterion, images, labels, device, amp, channels_last)

        step()  # gradients and momentum now exist, as in every later step
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before

    held = {_storage_key(t) for t in (*model.parameters(), *model.buffers(), images, labels)}
    saved: Dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        if key not in held:
            saved[key] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward_loss(model, criterion, images, labels, device, amp, channels_last)
    return sum(saved.values())


def images_per_second(model: nn.Module, images: torch.Tensor, amp: str = "off", channels_last: bool = False,
                      seconds: float = 3.0) -> float:
    """Inference throughput of ``model`` on ``images``, repeated for about ``seconds`` after a warm-up."""
    model.eval()

    def run():
        predict_logits(model, images, amp, channels_last)

    with torch.inference_mode():
        once = time_calls(run, images.device, WARMUP_CALLS, 1)
        repeats = max(1, round(seconds / once))
        return len(images) / time_calls(run, images.device, 0, repeats)


def measure(name: str, opts: argparse.Namespace, device: Optional[torch.device]) -> Dict[str, float]:
    """One table row for entry ``name``; memory and speed only when ``device`` is given."""
    def build() -> nn.Module:
        return network.build_model(name, opts.num_classes, opts.output_stride, pretrained_backbone=False,
                                   separable_conv=opts.separable_conv)

    with torch.device("meta"):
        shape_model = build()
    params = count_parameters(shape_model)
    try:
        macs = count_macs(without_batchnorm(shape_model), (1, 3, opts.size, opts.size))
    except RuntimeError as exc:
        if not is_too_small(exc):
            raise
        raise InputTooSmallError(f"{name} cannot take {opts.size}x{opts.size} inputs: {exc}") from exc
    row = {"params_m": params / 1e6, "gmacs": macs / 1e9}
    if device is None:
        return row
    torch.manual_seed(0)
    model = build().to(device)
    images = torch.randn(opts.batch, 3, opts.size, opts.size, device=device)
    labels = torch.randint(0, opts.num_classes, (opts.batch, opts.size, opts.size), device=device)
    if opts.channels_last:
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    row["activation_mib_per_image"] = activation_bytes(model, images, labels, opts.amp,
                                                       opts.channels_last) / MIB / opts.batch
    row["images_per_s"] = images_per_second(compile_model(model, opts.compile), images, opts.amp,
                                            opts.channels_last, opts.seconds)
    return row


def format_table(rows: Dict[str, Dict[str, object]]) -> List[str]:
    """A header and one aligned line per entry, with the columns the rows have; a failed entry shows its error."""
    width = max(map(len, rows))
    shown = [key for key in COLUMNS if any(key in row for row in rows.values())]
    lines = ["model".ljust(width) + "".join(f"  {COLUMNS[key][0]:>{COLUMNS[key][1]}}" for key in shown)]
    for name, row in rows.items():
        cells = [f"  {row['error']}"] if "error" in row else [f"  {row[key]:>{COLUMNS[key][1]}.2f}" for key in shown]
        lines.append(name.ljust(width) + "".join(cells))
    return lines


def get_argparser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="one entry: one of the 12 (--all lists them) or deeplabv3[plus]_tu-NAME for "
                                       "timm's encoder NAME")
    which.add_argument("--all", action="store_true", help="every entry, one line each")
    parser.add_argument("--size", type=int, default=512, help="square input side in pixels")
    parser.add_argument("--num_classes", type=int, default=21, help="classes of the head")
    parser.add_argument("--output_stride", type=int, default=16, choices=[8, 16, 32],
                        help="backbone output stride (32: timm encoders that cannot dilate)")
    parser.add_argument("--separable_conv", action="store_true", help="separable 3x3 convolutions in the head")
    parser.add_argument("--no-speed", dest="speed", action="store_false",
                        help="parameters and multiply-adds only (no memory, no timing): quick")
    parser.add_argument("--batch", type=int, default=2, help="images per batch for memory and speed (at least 2)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget per entry")
    add_device_options(parser)
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this file")
    add_speed_options(parser)  # as in predict.py: auto picks bf16 where it is native, and says so
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    opts = parse_with_config(get_argparser(), argv)
    before = path_state(opts.json) if opts.json else None
    try:
        with stop_signals_raise(), removed_if_left_empty([folder_of(opts.json)] if opts.json else []):
            return run(opts)  # a --json folder made for a run that fails goes with it
    except StoppedBySignal as exc:
        return exc.say_about(opts.json, before) if opts.json else exc.say("nothing more is measured")


def run(opts: argparse.Namespace) -> int:
    """Check the options, measure each entry, print the table and write --json; the exit status."""
    try:
        check_ranges(opts, ("size", "num_classes", "batch", "seconds"))
        if opts.speed and opts.batch < 2:
            raise ConfigError("--batch must be at least 2: BatchNorm in training needs more than one value per channel")
        if opts.model:
            network.check_model(opts.model, opts.output_stride)
        if opts.json:  # before minutes of measuring, not after
            require_writable_file(opts.json, "--json", "cost.json")
        device = resolve_device(opts.device, opts.gpu_id) if opts.speed else None
        gpu_id = unused_gpu_id(opts.device, opts.gpu_id, device) if device is not None else None
        warn_unused(opts, [(("batch", "seconds", "device", "gpu_id", "amp", "channels_last", "compile"), not opts.speed,
                            "--no-speed measures no memory and no speed"),
                           (("gpu_id",), gpu_id is not None, gpu_id),
                           *([unused_output_stride(opts.model)] if opts.model else [])])
        if device is not None:
            resolve_speed_options(opts, device)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    names = list(network.MODELS) if opts.all else [opts.model]
    rows = {}
    for name in names:
        try:
            if opts.all:  # --model was checked above
                network.check_model(name, opts.output_stride)
            rows[name] = measure(name, opts, device)
        except ValueError as exc:  # an input too small for the entry, or a stride it cannot work at
            if not opts.all:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            small = isinstance(exc, InputTooSmallError)
            rows[name] = {"error": "input too small for this entry" if small else
                          f"no output stride {opts.output_stride} for this entry"}
    print(f"{opts.size}x{opts.size}, {opts.num_classes} classes, output stride {opts.output_stride}"
          + (f"; memory and speed with batches of {opts.batch} on {hardware_name(device)}, "
             f"amp {opts.amp}, channels_last {opts.channels_last}" if device else ""))
    print("\n".join(format_table(rows)))
    if opts.json:
        keys = ("size", "num_classes", "output_stride", "separable_conv") + (
            ("batch", "amp", "channels_last", "compile") if device else ())
        report = {key: getattr(opts, key) for key in keys}
        if device:
            report["hardware"] = hardware_name(device)
        with atomic_write(opts.json) as f:
            f.write(json.dumps({**report, "rows": rows}, indent=1).encode())
    return 0


if __name__ == "__main__":
    exit_keeping_status(main())
