"""Ours against segmentation_models_pytorch (smp) on the same timm encoders: training step and inference, side by side.

Usage: python bench/smp.py [--encoders resnet50 convnext_tiny] [--crop 256] [--batch 4] [--rounds 3] [--steps 3]
smp (``pip install --no-deps segmentation-models-pytorch==0.6.0``, pinned in requirements-dev.txt) builds
``DeepLabV3Plus(encoder_name="tu-NAME")`` from the same timm ``features_only`` encoder as ``deeplabv3plus_tu-NAME``,
both at output stride 16 with random weights and 21 classes. Per encoder, in one process, on the same random batch:

* training: main.py's step (SGD with momentum, cross-entropy) at the precision and layout main.py's ``--amp auto`` /
  ``--channels_last auto`` pick on this CPU (bf16 + channels_last where bf16 is native) for ours, ours with
  ``--separable_conv`` (separable 3x3 convolutions, as smp's head has) and smp; and smp in fp32 NCHW, as its
  examples train;
* inference: ours as predict.py runs it (BatchNorm folded, convolutions fused with their ReLU, predict's auto
  precision and layout), ours ``--separable_conv`` the same way, and smp in eval mode under ``inference_mode`` at the
  same precision and layout, and in fp32 NCHW.

The measurements take turns, --rounds times (the machine's speed drifts), and the best round of each is kept. It
prints the CPU kind, each model's GMACs (one crop, tools/model_info.py's counting), images/s and ours / smp.
Goal: ours at least as fast as smp on each encoder.
"""
import argparse
import os
import sys
from typing import Callable, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import network  # noqa: E402
from bench._timing import training_step  # noqa: E402
from tools.model_info import count_macs  # noqa: E402
from utils.runtime.device import (INFER, TRAIN, hardware_name, native_bf16, resolve_amp,  # noqa: E402
                                  resolve_channels_last)
from network.fusion import fold_batchnorm, fuse_conv_activations  # noqa: E402
from utils.inference.predictor import predict_logits  # noqa: E402
from utils.io.optional_packages import import_optional  # noqa: E402
from utils.runtime.run_timer import time_calls  # noqa: E402

NUM_CLASSES = 21
OUTPUT_STRIDE = 16
Setting = Tuple[str, bool]  # (amp, channels_last)


def import_smp():
    """segmentation_models_pytorch, or the run ends with the pip command."""
    return import_optional("segmentation_models_pytorch", "bench/smp.py", SystemExit)


def build(kind: str, encoder: str) -> nn.Module:
    """'ours', 'ours_separable' or 'smp' on timm's ``encoder``, random weights, seeded."""
    torch.manual_seed(0)
    if kind == "smp":
        return import_smp().DeepLabV3Plus(encoder_name=f"tu-{encoder}", encoder_weights=None,
                                          encoder_output_stride=OUTPUT_STRIDE, classes=NUM_CLASSES)
    return network.build_model(f"deeplabv3plus_tu-{encoder}", NUM_CLASSES, OUTPUT_STRIDE, pretrained_backbone=False,
                               separable_conv=kind == "ours_separable")


def inference_call(model: nn.Module, images: torch.Tensor, setting: Setting, as_predict: bool) -> Callable[[], None]:
    """One batch of inference; ``as_predict``: the model prepared as predict.py prepares it on the CPU."""
    amp, channels_last = setting
    model.eval()
    if as_predict:
        fold_batchnorm(model)
        if amp == "off" or native_bf16(images.device):
            fuse_conv_activations(model.requires_grad_(False))
    if channels_last:
        model.to(memory_format=torch.channels_last)

    def run() -> None:
        with torch.inference_mode():
            predict_logits(model, images, amp, channels_last)
    return run


def calls(encoder: str, opts: argparse.Namespace, train: Setting, infer: Setting) -> Dict[str, Callable[[], object]]:
    """label -> one timed call (a training step or an inference batch), every model built and warmed once."""
    device = torch.device("cpu")
    images = torch.randn(opts.batch, 3, opts.crop, opts.crop)
    plain = ("off", False)
    todo = {}
    for kind, setting in (("ours", train), ("ours_separable", train), ("smp", train), ("smp", plain)):
        todo[f"train {kind} {_label(setting)}"] = training_step(build(kind, encoder), opts.crop, opts.batch, device,
                                                                 *setting, NUM_CLASSES)
    for kind, setting in (("ours", infer), ("ours_separable", infer), ("smp", infer), ("smp", plain)):
        todo[f"infer {kind} {_label(setting)}"] = inference_call(build(kind, encoder), images, setting,
                                                                 as_predict=kind != "smp")
    for call in todo.values():
        for _ in range(opts.warmup):
            call()
    return todo


def _label(setting: Setting) -> str:
    amp, channels_last = setting
    return ("fp32" if amp == "off" else amp) + (" + cl" if channels_last else "")


def interleaved(todo: Dict[str, Callable[[], object]], batch: int, steps: int, rounds: int) -> Dict[str, float]:
    """Images/s of each call, the calls taking turns ``rounds`` times; the best round of each."""
    best = {label: 0.0 for label in todo}
    for _ in range(rounds):
        for label, call in todo.items():
            best[label] = max(best[label], batch / time_calls(call, torch.device("cpu"), 0, steps))
    return best


def report(encoder: str, opts: argparse.Namespace, speeds: Dict[str, float], settings: Dict[str, Setting]) -> List[str]:
    """GMACs per model, then images/s per measurement with ours / smp (same setting) and ours / smp (fp32 NCHW)."""
    lines = [f"tu-{encoder}: GMACs per {opts.crop}x{opts.crop} crop: " + ", ".join(
        f"{kind} {gmacs(kind, encoder, opts.crop):.2f}" for kind in ("ours", "ours_separable", "smp"))]
    for phase, setting in settings.items():
        same, plain = speeds[f"{phase} smp {_label(setting)}"], speeds[f"{phase} smp fp32"]
        for label, speed in speeds.items():
            if not label.startswith(phase):
                continue
            ratios = "" if " smp " in label else \
                f"   {speed / same:5.2f}x smp same setting   {speed / plain:5.2f}x smp fp32"
            lines.append(f"  {label:32s} {speed:8.2f} images/s{ratios}")
    return lines


def gmacs(kind: str, encoder: str, crop: int) -> float:
    with torch.device("meta"):
        model = build(kind, encoder)
    return count_macs(model, (1, 3, crop, crop)) / 1e9


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="+", default=["resnet50", "convnext_tiny"], help="timm names")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls of each measurement first")
    parser.add_argument("--steps", type=int, default=3, help="timed calls of each measurement per round")
    parser.add_argument("--rounds", type=int, default=3, help="turns each measurement takes")
    opts = parser.parse_args(argv)
    smp = import_smp()
    device = torch.device("cpu")
    train_amp, _ = resolve_amp("auto", device, TRAIN)
    train = (train_amp, resolve_channels_last("auto", device, train_amp)[0])
    infer_amp, _ = resolve_amp("auto", device, INFER)
    infer = (infer_amp, resolve_channels_last("auto", device, infer_amp)[0])
    print(f"{hardware_name(device)}, torch {torch.__version__}, smp {smp.__version__}; DeepLabV3+ at output stride "
          f"{OUTPUT_STRIDE}, crop {opts.crop}, batch {opts.batch}; main.py's auto here: training {_label(train)}, "
          f"inference {_label(infer)}; best of {opts.rounds} interleaved rounds of {opts.steps} calls")
    for encoder in opts.encoders:
        speeds = interleaved(calls(encoder, opts, train, infer), opts.batch, opts.steps, opts.rounds)
        print("\n".join(report(encoder, opts, speeds, {"train": train, "infer": infer})), flush=True)


if __name__ == "__main__":
    main()
