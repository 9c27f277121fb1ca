"""Training-transform throughput (images/s in one worker) on VOC-like 500x375 JPEGs at crop 513.

Compares this project's VOC training pipeline (decode + ExtRandomScale + ExtRandomCrop + flip +
ExtToTensor + ExtNormalize) with a straightforward PIL + torchvision.transforms.functional pipeline
doing the same steps, in the same run, on the same files.
Usage: python bench/data.py [--images 40] [--rounds 3]
"""
import argparse
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torchvision.transforms.functional as TF  # noqa: E402
from PIL import Image  # noqa: E402

from datasets.utils import load_image, load_mask  # noqa: E402
from utils import ext_transforms as et  # noqa: E402
from utils.constants import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

CROP = 513
WIDTH, HEIGHT = 500, 375


def write_images(folder: str, count: int):
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(count):
        # smooth content (like photos, unlike noise) so JPEG decoding costs what it costs on VOC
        small = rng.integers(0, 255, (HEIGHT // 25, WIDTH // 25, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((WIDTH, HEIGHT), Image.BICUBIC)
        mask = Image.fromarray(rng.integers(0, 21, (HEIGHT // 25, WIDTH // 25), dtype=np.uint8)).resize(
            (WIDTH, HEIGHT), Image.NEAREST)
        pairs.append((os.path.join(folder, f"{i}.jpg"), os.path.join(folder, f"{i}.png")))
        img.save(pairs[-1][0], quality=90)
        mask.save(pairs[-1][1])
    return pairs


def ours():
    transform = et.ExtCompose([et.ExtRandomScale((0.5, 2.0)), et.ExtRandomCrop(CROP, pad_if_needed=True),
                               et.ExtRandomHorizontalFlip(), et.ExtToTensor(),
                               et.ExtNormalize(IMAGENET_MEAN, IMAGENET_STD)])

    def run(image_path, mask_path):
        image = load_image(image_path)
        return transform(image, load_mask(mask_path, image, image_path))
    return run


def straightforward():
    def run(image_path, mask_path):
        image = Image.open(image_path).convert("RGB")
        mask = Image.open(mask_path)
        scale = random.uniform(0.5, 2.0)
        size = (int(image.size[1] * scale), int(image.size[0] * scale))
        image = TF.resize(image, list(size), TF.InterpolationMode.BILINEAR)
        mask = TF.resize(mask, list(size), TF.InterpolationMode.NEAREST)
        pad_w, pad_h = max(CROP - image.size[0], 0), max(CROP - image.size[1], 0)
        if pad_w or pad_h:
            image = TF.pad(image, [0, 0, pad_w, pad_h])
            mask = TF.pad(mask, [0, 0, pad_w, pad_h], fill=255)
        top = random.randint(0, image.size[1] - CROP)
        left = random.randint(0, image.size[0] - CROP)
        image = TF.crop(image, top, left, CROP, CROP)
        mask = TF.crop(mask, top, left, CROP, CROP)
        if random.random() < 0.5:
            image, mask = TF.hflip(image), TF.hflip(mask)
        tensor = TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)
        return tensor, TF.pil_to_tensor(mask).long()
    return run


def throughput(fn, pairs, rounds: int) -> float:
    random.seed(0)
    start = time.perf_counter()
    for _ in range(rounds):
        for image_path, mask_path in pairs:
            fn(image_path, mask_path)
    return rounds * len(pairs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        pairs = write_images(folder, args.images)
        throughput(ours(), pairs[:5], 1)  # warm caches and lazy imports
        base = throughput(straightforward(), pairs, args.rounds)
        mine = throughput(ours(), pairs, args.rounds)
    print(f"500x375 JPEG -> crop {CROP}, one worker")
    print(f"straightforward PIL/torchvision {base:8.1f} images/s")
    print(f"this project                    {mine:8.1f} images/s   {mine / base:.2f}x")


if __name__ == "__main__":
    main()
