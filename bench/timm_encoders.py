"""The README's tested timm families under DeepLabV3+: params, GMACs, limits and CPU training speed, one row each.

Usage: python bench/timm_encoders.py [--size 512] [--batch 2] [--warmup 1] [--steps 2] [--no-speed]
       [--encoders resnet50 convnext_tiny ...]
Prints the CPU kind and the precision and layout main.py's --amp auto / --channels_last auto pick on it, then per
encoder: the output stride it is measured at (16, or 32 for families that cannot dilate), the strides timm builds it
at, the smallest input side it takes, params (M), GMACs of one --size image (tools/model_info.py's counting) and
training images/s (main.py's step: SGD, cross-entropy, batches of --batch random --size crops).
"""
import argparse
import os
import sys
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import network  # noqa: E402
from bench._timing import measure_training  # noqa: E402
from network.backbone.timm_encoder import natural_strides  # noqa: E402
from tools.model_info import count_macs, count_parameters  # noqa: E402
from utils.runtime.device import TRAIN, hardware_name, resolve_amp, resolve_channels_last  # noqa: E402
from utils.inference.predictor import predict_logits, smallest_side  # noqa: E402

# (family, timm name): the families the README's table lists
ENCODERS = (("ResNet", "resnet50"), ("ResNeSt", "resnest50d"), ("EfficientNet", "efficientnet_b3"),
            ("ConvNeXt", "convnext_tiny"), ("RegNet", "regnety_016"), ("MobileNetV3", "mobilenetv3_large_100"),
            ("Swin", "swin_tiny_patch4_window7_224"), ("PVTv2", "pvt_v2_b1"))
PREFERRED_STRIDE = 16  # the CLI's default; families that cannot dilate are measured at their own


def limits(timm_name: str) -> Dict[str, object]:
    """The output strides timm builds ``timm_name`` at, the one measured, and the smallest square side it takes."""
    strides = natural_strides(timm_name)
    output_stride = PREFERRED_STRIDE if PREFERRED_STRIDE in strides else strides[-1]
    model = network.build_model(f"deeplabv3plus_tu-{timm_name}", 21, output_stride, pretrained_backbone=False).eval()
    with torch.inference_mode():
        side = smallest_side(lambda x: predict_logits(model, x), lambda s: torch.zeros(1, 3, s, s))
    return {"strides": strides, "output_stride": output_stride, "smallest_side": side}


def row(timm_name: str, opts: argparse.Namespace, device: torch.device, amp: str, channels_last: bool) -> Dict:
    """One table row for ``timm_name``: limits, params, GMACs and (unless --no-speed) training images/s."""
    name = f"deeplabv3plus_tu-{timm_name}"
    found = limits(timm_name)
    with torch.device("meta"):
        shapes = network.build_model(name, 21, found["output_stride"], pretrained_backbone=False)
    found["params_m"] = count_parameters(shapes) / 1e6
    found["gmacs"] = count_macs(shapes, (1, 3, opts.size, opts.size)) / 1e9
    if opts.speed:
        found["images_per_s"] = measure_training(name, opts.size, opts.batch, device, amp, channels_last,
                                                 opts.warmup, opts.steps, output_stride=found["output_stride"])[
            "images_per_s"]
    return found


def format_row(family: str, timm_name: str, found: Dict) -> str:
    speed = f"{found['images_per_s']:9.3f}" if "images_per_s" in found else f"{'-':>9}"
    strides = "/".join(map(str, found["strides"]))
    return (f"{family:13s} {timm_name:30s} {found['output_stride']:>3d} {strides:>8s} {found['smallest_side']:>6d} "
            f"{found['params_m']:8.2f} {found['gmacs']:8.2f} {speed}")


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="square crop side for GMACs and training")
    parser.add_argument("--batch", type=int, default=2, help="crops per training step (at least 2: BatchNorm)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2, help="timed training steps per encoder")
    parser.add_argument("--no-speed", dest="speed", action="store_false", help="limits, params and GMACs only")
    parser.add_argument("--encoders", nargs="+", help="timm names (default: the README's families)")
    opts = parser.parse_args(argv)
    device = torch.device("cpu")
    amp, _ = resolve_amp("auto", device, TRAIN)
    channels_last, _ = resolve_channels_last("auto", device, amp)
    torch.manual_seed(0)
    print(f"{hardware_name(device)}, torch {torch.__version__}; DeepLabV3+, 21 classes, {opts.size}x{opts.size}, "
          f"training batch {opts.batch}, amp {amp}, channels_last {channels_last} (main.py's auto here)")
    print(f"{'family':13s} {'timm name':30s} {'os':>3s} {'strides':>8s} {'min px':>6s} {'params M':>8s} "
          f"{'GMACs':>8s} {'images/s':>9s}")
    encoders = [("-", name) for name in opts.encoders] if opts.encoders else ENCODERS
    for family, timm_name in encoders:
        print(format_row(family, timm_name, row(timm_name, opts, device, amp, channels_last)), flush=True)


if __name__ == "__main__":
    main()
