"""CUDA benchmark: deeplabv3plus_hrnetv2_48, crop 513, batch 8, fp32 vs --amp bf16 --channels_last.

Prints images/s and peak GPU memory of the full training step, and inference images/s, side by side.
Usage (on a CUDA machine): python bench/gpu.py [--steps 20]; then python tools/check_precision.py, which
checks that these settings also train correctly (README: Known issues).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import network  # noqa: E402
from bench._timing import measure_training, native_settings, time_calls  # noqa: E402
from utils.device import autocast  # noqa: E402

MODEL, CROP, BATCH = "deeplabv3plus_hrnetv2_48", 513, 8
SETTINGS = (("fp32", "off", False), ("bf16 + channels_last", "bf16", True))


def measure_inference(device, amp: str, channels_last: bool, warmup: int, steps: int) -> float:
    model = network.build_model(MODEL, 21, 16).to(device).eval()
    images = torch.randn(BATCH, 3, CROP, CROP, device=device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)

    def run():
        with torch.inference_mode(), autocast(device, amp):
            model(images)

    return BATCH / time_calls(run, device, warmup, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA device; on the CPU run bench/train.py and bench/predict.py")
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, {MODEL}, crop {CROP}, batch {BATCH}")
    rows = {}
    for label, amp, channels_last in native_settings(SETTINGS, device):
        train = measure_training(MODEL, CROP, BATCH, device, amp, channels_last, args.warmup, args.steps)
        infer = measure_inference(device, amp, channels_last, args.warmup, args.steps)
        rows[label] = (train["images_per_s"], train["peak_gib"], infer)
        torch.cuda.empty_cache()
    base_train, base_peak, base_infer = rows["fp32"]
    print(f"{'setting':22s} {'train img/s':>12s} {'speed-up':>9s} {'peak GiB':>9s} {'infer img/s':>12s} {'speed-up':>9s}")
    for label, (train, peak, infer) in rows.items():
        print(f"{label:22s} {train:12.1f} {train / base_train:8.2f}x {peak:9.1f} {infer:12.1f} {infer / base_infer:8.2f}x")


if __name__ == "__main__":
    main()
