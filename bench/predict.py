"""predict.py throughput on a folder of 500x375 JPEGs vs a one-image-at-a-time fp32 loop like the original's.

Both write colour masks for the same images with the same weights, in the same run.
Usage: python bench/predict.py [--model deeplabv3plus_mobilenet] [--images 48] [--batch 8]
Target on the 2-core CPU with deeplabv3plus_mobilenet: >= 2x.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision.transforms.functional as TF  # noqa: E402
from PIL import Image  # noqa: E402

import network  # noqa: E402
import predict  # noqa: E402
from bench.data import write_images  # noqa: E402
from datasets import voc_cmap  # noqa: E402
from utils.constants import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deeplabv3plus_mobilenet")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = network.build_model(args.model, 21, 16).eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "images")
        os.makedirs(folder)
        paths = [p for p, _ in write_images(folder, args.images)]
        for p in paths:
            os.remove(os.path.splitext(p)[0] + ".png")  # keep the JPEGs only
        ckpt = os.path.join(tmp, "model.pth")
        torch.save({"model_state": model.state_dict()}, ckpt)
        out_a, out_b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
        os.makedirs(out_a)
        original_loop(model, paths[:2], out_a)  # warm-up
        argv = ["--input", folder, "--ckpt", ckpt, "--model", args.model, "--save_val_results_to", out_b,
                "--amp", "bf16", "--channels_last", "--val_batch_size", str(args.batch),
                "--num_workers", str(args.workers)]
        base = fast = 0.0
        for _ in range(args.rounds):  # interleaved, best of each: the machine's speed drifts between runs
            base = max(base, len(paths) / seconds(lambda: original_loop(model, paths, out_a)))
            fast = max(fast, len(paths) / seconds(lambda: predict.main(argv)))
        agree = np.mean([np.mean(np.array(Image.open(os.path.join(out_a, f))) ==
                                 np.array(Image.open(os.path.join(out_b, f)))) for f in os.listdir(out_a)])
    print(f"{args.model}, {len(paths)} JPEGs of 500x375, CPU, torch threads {torch.get_num_threads()}")
    print(f"original loop (fp32, one image at a time) {base:7.2f} images/s")
    print(f"predict.py (bf16, channels_last, batch {args.batch}) {fast:7.2f} images/s   {fast / base:.2f}x")
    print(f"pixels with the same colour in both: {agree:.2%} (bf16 rounding moves a few boundaries)")


if __name__ == "__main__":
    main()
