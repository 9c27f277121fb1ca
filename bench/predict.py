"""predict.py throughput on a folder of 500x375 JPEGs, against the original's way of predicting.

Two comparisons, each on the same images with the same weights:
- in this process: predict.py with its defaults vs a one-image-at-a-time fp32 loop like the original's;
- with --original PATH: whole runs of the original's predict.py (fp32) and ours (defaults), start-up included.
Usage: python bench/predict.py [--original PATH/TO/DeepLabV3Plus-Pytorch] [--model deeplabv3plus_mobilenet]
       [--images 48] [--batch 8]
Target (2 CPU cores, AVX2 and AVX-512): >= 2x.
"""
import argparse
import os
import sys
import tempfile
import time
from typing import Dict, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision.transforms.functional as TF  # noqa: E402
from PIL import Image  # noqa: E402

import network  # noqa: E402
import predict  # noqa: E402
from bench.data import write_images  # noqa: E402
from bench.original import REPO, best_of_interleaved, original_env, skip_reason  # noqa: E402
from datasets import voc_cmap  # noqa: E402
from utils.constants import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from utils.runtime.device import hardware_name, resolve_amp, resolve_channels_last  # noqa: E402


def original_loop(model, paths, out_dir) -> None:
    """The original predict.py's loop: decode, normalise, forward one image, colourise, save."""
    cmap = voc_cmap()
    with torch.no_grad():
        model.eval()
        for path in paths:
            img = Image.open(path).convert("RGB")
            x = TF.normalize(TF.to_tensor(img), IMAGENET_MEAN, IMAGENET_STD).unsqueeze(0)
            pred = model(x).max(1)[1].cpu().numpy()[0]
            Image.fromarray(cmap[pred].astype(np.uint8)).save(
                os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + ".png"))


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def agreement(dir_a: str, dir_b: str) -> float:
    """Share of pixels with the same colour in the two folders' masks."""
    return float(np.mean([np.mean(np.array(Image.open(os.path.join(dir_a, f))) ==
                                  np.array(Image.open(os.path.join(dir_b, f)))) for f in os.listdir(dir_a)]))


def in_process(args, model, paths, ckpt, tmp) -> None:
    out_a, out_b = os.path.join(tmp, "loop"), os.path.join(tmp, "ours")
    os.makedirs(out_a)
    original_loop(model, paths[:2], out_a)  # warm-up
    argv = ["--input", os.path.dirname(paths[0]), "--ckpt", ckpt, "--model", args.model, "--save_val_results_to",
            out_b, "--val_batch_size", str(args.batch), "--num_workers", str(args.workers)]
    base = fast = 0.0
    for _ in range(args.rounds):  # interleaved, best of each: the machine's speed drifts between runs
        base = max(base, len(paths) / seconds(lambda: original_loop(model, paths, out_a)))
        fast = max(fast, len(paths) / seconds(lambda: predict.main(argv)))
    print(f"in this process: a loop like the original's (fp32, one image at a time) {base:7.2f} images/s")
    print(f"in this process: predict.py (defaults, batch {args.batch})  {fast:7.2f} images/s   {fast / base:.2f}x")
    print(f"pixels with the same colour in both: {agreement(out_a, out_b):.2%}")


def whole_runs(args, folder: str, ckpt: str, tmp: str) -> Optional[Dict[str, float]]:
    """Wall time of the original's predict.py (fp32) and ours (defaults) on ``folder``; seconds by label (None
    when the original cannot run)."""
    reason = skip_reason(args.original, "predict.py")
    if reason:
        print(f"skipped the whole-process comparison: {reason}")
        return None
    out_a, out_b = os.path.join(tmp, "original"), os.path.join(tmp, "whole")
    common = ["--input", folder, "--ckpt", ckpt, "--model", args.model]
    runs = {"original predict.py (fp32)": ([os.path.join(args.original, "predict.py"), *common,
                                            "--save_val_results_to", out_a], tmp, original_env(tmp)),
            "predict.py (defaults)": ([os.path.join(REPO, "predict.py"), *common, "--save_val_results_to", out_b,
                                       "--val_batch_size", str(args.batch), "--num_workers", str(args.workers)],
                                      tmp)}
    times = best_of_interleaved(runs, args.rounds)
    base = times["original predict.py (fp32)"]
    print(f"whole process, {args.images} images, start-up included (best of {args.rounds}):")
    for label, s in times.items():
        print(f"{label:28s} {s:7.1f} s   {args.images / s:6.2f} images/s   {base / s:5.2f}x")
    print(f"pixels with the same colour in both: {agreement(out_a, out_b):.2%}")
    return times


def prepare(args, tmp: str) -> Tuple[str, str]:
    """A folder of ``args.images`` JPEGs of 500x375 in ``tmp``, and a checkpoint of ``args.model`` (seeded random
    weights); returns both paths."""
    torch.manual_seed(0)
    model = network.build_model(args.model, 21, 16, pretrained_backbone=False)
    folder = os.path.join(tmp, "images")
    os.makedirs(folder)
    for _, mask in write_images(folder, args.images):
        os.remove(mask)  # keep the JPEGs only
    ckpt = os.path.join(tmp, "model.pth")
    torch.save({"model_state": model.state_dict()}, ckpt)
    return folder, ckpt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", type=os.path.abspath, help="folder of a VainF/DeepLabV3Plus-Pytorch checkout")
    parser.add_argument("--model", default="deeplabv3plus_mobilenet")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cpu = torch.device("cpu")
    amp, _ = resolve_amp("auto", cpu)
    channels_last, _ = resolve_channels_last("auto", cpu)
    print(f"{hardware_name(cpu)}, torch {torch.__version__}; {args.model}, {args.images} JPEGs of 500x375; "
          f"predict.py's defaults here: --amp {amp}, channels_last {'on' if channels_last else 'off'}")
    with tempfile.TemporaryDirectory() as tmp:
        folder, ckpt = prepare(args, tmp)
        model = network.build_model(args.model, 21, 16, pretrained_backbone=False).eval()
        model.load_state_dict(torch.load(ckpt)["model_state"])
        paths = sorted(os.path.join(folder, name) for name in os.listdir(folder))
        in_process(args, model, paths, ckpt, tmp)
        whole_runs(args, folder, ckpt, tmp)


if __name__ == "__main__":
    main()
