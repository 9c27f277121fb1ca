"""Training speed: each precision and layout side by side, then whole runs of the original's main.py and ours.

Usage: python bench/train.py [--original PATH/TO/DeepLabV3Plus-Pytorch] [--model deeplabv3plus_hrnetv2_48]
       [--crop 128] [--batch 4] [--iters 30]
Settings this hardware does not run natively are skipped with a line saying why. The whole-process part runs
both main.py scripts for --iters iterations on the demo data, each ending with one validation (8 images,
--crop_val) and its checkpoints, and ours with its defaults (--amp auto, --channels_last auto).
Targets (2 CPU cores): ours >= 1.4x the original on AVX2, >= 2x on AVX-512 with native bfloat16.
"""
import argparse
import os
import sys
import tempfile
from typing import Dict, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from bench._timing import measure_training, native_settings  # noqa: E402
from bench.original import REPO, best_of_interleaved, demo_voc, original_env, skip_reason  # noqa: E402
from utils.runtime.device import hardware_name, resolve_amp, resolve_channels_last  # noqa: E402
from utils.runtime.host_memory import keep_freed_memory  # noqa: E402

SETTINGS = (("fp32", "off", False), ("fp32 + channels_last", "off", True),
            ("bf16", "bf16", False), ("bf16 + channels_last", "bf16", True))
VAL_IMAGES = 8


def step_table(args, device: torch.device) -> None:
    """Images/s of the training step per setting, in this process, on random data."""
    results = {}
    for label, amp, channels_last in native_settings(SETTINGS, device):
        results[label] = measure_training(args.model, args.crop, args.batch, device, amp, channels_last,
                                          args.warmup, args.steps)["images_per_s"]
    amp, _ = resolve_amp("auto", device)
    channels_last, _ = resolve_channels_last("auto", device)
    default = {"off": "fp32", "bf16": "bf16"}[amp] + (" + channels_last" if channels_last else "")
    for label, speed in results.items():
        mark = "   <- main.py's default here" if label == default else ""
        print(f"{label:22s} {speed:8.2f} images/s   {speed / results['fp32']:5.2f}x fp32{mark}")


def whole_runs(args) -> Optional[Dict[str, float]]:
    """Wall time of the original's main.py (fp32) and ours (defaults), same data, iterations and validation;
    returns the seconds by label (None when the original cannot run)."""
    reason = skip_reason(args.original, "main.py")
    if reason:
        print(f"skipped the whole-process comparison: {reason}")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        data_root = demo_voc(os.path.join(tmp, "data"), VAL_IMAGES)
        common = ["--data_root", data_root, "--dataset", "voc", "--year", "2012", "--model", args.model,
                  "--crop_size", str(args.crop), "--batch_size", str(args.batch), "--total_itrs", str(args.iters),
                  "--val_interval", str(args.iters), "--print_interval", str(args.iters),
                  "--crop_val"]  # the original's HRNet needs sides that are multiples of 32
        runs = {"original main.py (fp32)": ([os.path.join(args.original, "main.py"), *common], tmp, original_env(tmp)),
                "main.py (defaults)": ([os.path.join(REPO, "main.py"), *common, "--no-pretrained_backbone",
                                        "--checkpoint_dir", os.path.join(tmp, "ours")], tmp)}
        seconds = best_of_interleaved(runs, args.rounds)
    print(f"whole process, {args.iters} iterations of {args.batch} x {args.crop}x{args.crop}, one validation of "
          f"{VAL_IMAGES} images (--crop_val), checkpoints (best of {args.rounds}):")
    base = seconds["original main.py (fp32)"]
    for label, s in seconds.items():
        print(f"{label:24s} {s:7.1f} s   {base / s:5.2f}x")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", type=os.path.abspath, help="folder of a VainF/DeepLabV3Plus-Pytorch checkout")
    parser.add_argument("--model", default="deeplabv3plus_hrnetv2_48")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, default=30, help="iterations of each whole run")
    parser.add_argument("--rounds", type=int, default=1, help="whole runs of each script, taking turns")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"{hardware_name(device)}, torch {torch.__version__}; {args.model}, crop {args.crop}, batch {args.batch}")
    keep_freed_memory(device)  # as main.py steps
    step_table(args, device)
    whole_runs(args)


if __name__ == "__main__":
    main()
