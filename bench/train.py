"""Training-step throughput: plain fp32 vs --amp bf16 vs --amp bf16 --channels_last, side by side.

Usage: python bench/train.py [--model deeplabv3plus_hrnetv2_48] [--crop 128] [--batch 4] [--device cpu]
Target on the 2-core CPU for deeplabv3plus_hrnetv2_48, crop 128, batch 4: fast settings >= 1.8x fp32.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from bench._timing import measure_training  # noqa: E402

SETTINGS = (("fp32", "off", False), ("bf16", "bf16", False), ("bf16 + channels_last", "bf16", True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deeplabv3plus_hrnetv2_48")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"{args.model}, crop {args.crop}, batch {args.batch}, {device}, torch threads {torch.get_num_threads()}")
    results = {}
    for label, amp, channels_last in SETTINGS:
        results[label] = measure_training(args.model, args.crop, args.batch, device, amp, channels_last,
                                          args.warmup, args.steps)
    base = results["fp32"]["images_per_s"]
    for label, r in results.items():
        print(f"{label:22s} {r['images_per_s']:8.2f} images/s   {r['images_per_s'] / base:5.2f}x fp32")


if __name__ == "__main__":
    main()
