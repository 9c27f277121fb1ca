"""A small synthetic binary dataset in the folder layout: thin cracks on textured surfaces (``make demo-own``).

Cracks are branching random walks 1-3 pixels wide with varied contrast, a few per cent of the pixels as
in real crack, tumour or road data. The surfaces carry what makes the task more than thresholding dark
pixels: faint tiles and grain, blotches, gradients, soft stains, pits, and straight joints and scratches
that are not cracks. About one image in seven has no crack.

Run ``python tools/make_crack_dataset.py --root datasets/data/cracks``; train with
``--dataset folder --data_root datasets/data/cracks`` (``configs/demo_own.yaml``).
"""
import math
import os
from typing import Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .demo import JPEG_QUALITY, NOISE_STD, DemoTexture, _pattern
from .class_stats import compute_class_stats
from .folder import FolderSegmentation, palette_table, write_splits_and_classes
from .utils import generate_once

__all__ = ["make_crack_dataset", "crack_statistics", "CLASS_NAMES", "PALETTE"]

CLASS_NAMES = ("background", "crack")
PALETTE = ((0, 0, 0), (255, 40, 40))
VERSION = "1"  # bump when the generator changes, so stale data is regenerated
STAMP_FILE = "cracks_version.txt"  # written last: only a complete dataset has it

SURFACES = (  # concrete, asphalt grain, paving tiles; drawn faintly so they texture rather than dominate
    DemoTexture((150, 148, 142), "plain", 1),
    DemoTexture((120, 118, 115), "dots", 4),
    DemoTexture((165, 160, 150), "checks", 40),
    DemoTexture((140, 135, 128), "hstripes", 3),
)
NO_CRACK_SHARE = 0.15
CRACK_WIDTHS = (1, 2, 3)
CRACK_DARKENING = (0.3, 0.7)  # fraction of the surface's brightness a crack removes
STEP_LENGTH = (2.0, 4.0)
WANDER_STD = 0.45  # radians per step: what makes a crack jagged, unlike the straight distractors
BRANCH_CHANCE = 0.03  # per step
MAX_BRANCH_DEPTH = 2


def _surface(size: int, rng: np.random.Generator) -> np.ndarray:
    """An (H, W, 3) float image: faint texture, large blotches and a brightness gradient."""
    texture = SURFACES[int(rng.integers(len(SURFACES)))]
    pattern = _pattern(texture, size, size, rng)
    image = pattern.mean() + (pattern - pattern.mean()) * rng.uniform(0.1, 0.4)
    cells = int(rng.integers(3, 8))
    coarse = Image.fromarray(rng.normal(0, 1, (cells, cells)).astype(np.float32), mode="F")
    blotches = np.asarray(coarse.resize((size, size), Image.BICUBIC))
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.cos(angle) * np.linspace(-1, 1, size)[None, :] + np.sin(angle) * np.linspace(-1, 1, size)[:, None]
    shade = blotches * rng.uniform(5, 20) + ramp * rng.uniform(0, 30)
    return image + shade[..., None]


def _walk(draw: ImageDraw.ImageDraw, start: Tuple[float, float], heading: float, steps: int, width: int,
          depth: int, rng: np.random.Generator) -> None:
    """Draw one crack on ``draw`` as a jagged polyline from ``start``, spawning thinner, shorter branches."""
    points = [start]
    x, y = start
    wander = 0.0
    for step in range(steps):
        wander = 0.7 * wander + rng.normal(0, WANDER_STD)  # correlated turns keep the overall direction
        length = rng.uniform(*STEP_LENGTH)
        x, y = x + length * math.cos(heading + wander), y + length * math.sin(heading + wander)
        points.append((x, y))
        if depth < MAX_BRANCH_DEPTH and rng.random() < BRANCH_CHANCE:
            turn = rng.uniform(0.4, 1.1) * rng.choice([-1, 1])
            _walk(draw, (x, y), heading + turn, int((steps - step) * rng.uniform(0.3, 0.7)), max(1, width - 1),
                  depth + 1, rng)
    draw.line(points, fill=255, width=width, joint="curve")


def _cracks(size: int, rng: np.random.Generator) -> np.ndarray:
    """An (H, W) uint8 layer, 255 on crack pixels; all zero for an image without cracks."""
    layer = Image.new("L", (size, size), 0)
    if rng.random() < NO_CRACK_SHARE:
        return np.asarray(layer)
    draw = ImageDraw.Draw(layer)
    for _ in range(int(rng.choice([1, 1, 2]))):
        start = tuple(rng.uniform(0.2 * size, 0.8 * size, 2))
        steps = int(size * rng.uniform(0.2, 0.5) / np.mean(STEP_LENGTH))
        heading = rng.uniform(0, 2 * math.pi)
        width = int(rng.choice(CRACK_WIDTHS))
        for direction in (heading, heading + math.pi):  # both ways from an inner point, so it rarely leaves early
            _walk(draw, start, direction, steps, width, 0, rng)
    return np.asarray(layer)


def _distractors(size: int, rng: np.random.Generator) -> np.ndarray:
    """An (H, W) float multiplier (1 = unchanged) with stains, pits, straight joints and bright scratches."""
    dark = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(dark)
    for _ in range(int(rng.integers(0, 4))):  # soft stains
        x, y = rng.uniform(0, size, 2)
        rx, ry = rng.uniform(4, size / 4, 2)
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=int(rng.integers(40, 120)))
    dark = dark.filter(ImageFilter.GaussianBlur(rng.uniform(2, 5)))
    draw = ImageDraw.Draw(dark)
    for _ in range(int(rng.integers(0, 6))):  # pits: small dark dots, as dark as a crack
        x, y = rng.uniform(0, size, 2)
        r = rng.uniform(0.8, 2.0)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=int(rng.integers(80, 180)))
    if rng.random() < 0.5:  # a straight joint or scratch across the image, the hard negative
        x0, y0, x1, y1 = _chord(size, rng)
        draw.line((x0, y0, x1, y1), fill=int(rng.integers(50, 140)), width=int(rng.integers(1, 4)))
    multiplier = 1 - np.asarray(dark.filter(ImageFilter.GaussianBlur(0.6)), np.float32) / 255
    if rng.random() < 0.3:  # a bright thin scratch
        light = Image.new("L", (size, size), 0)
        ImageDraw.Draw(light).line(_chord(size, rng), fill=int(rng.integers(40, 100)), width=1)
        multiplier = multiplier + np.asarray(light, np.float32) / 255
    return multiplier


def _chord(size: int, rng: np.random.Generator) -> Tuple[float, float, float, float]:
    """A straight line from one random edge point of the image to another."""
    def edge_point() -> Tuple[float, float]:
        t = rng.uniform(0, size)
        return [(t, 0.0), (t, float(size)), (0.0, t), (float(size), t)][int(rng.integers(4))]
    return (*edge_point(), *edge_point())


def _sample(size: int, rng: np.random.Generator) -> Tuple[Image.Image, np.ndarray]:
    """(RGB image, (H, W) uint8 mask of class indices) for one sample."""
    image = _surface(size, rng) * _distractors(size, rng)[..., None]
    cracks = _cracks(size, rng)
    # The image sees a slightly blurred crack (optics); the mask keeps the drawn pixels.
    soft = np.asarray(Image.fromarray(cracks).filter(ImageFilter.GaussianBlur(0.5)), np.float32) / 255
    image = image * (1 - rng.uniform(*CRACK_DARKENING) * soft[..., None])
    image = image + rng.normal(0, NOISE_STD, image.shape)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)), (cracks > 0).astype(np.uint8)


def _write(folder: str, num_train: int, num_val: int, size: int, seed: int) -> None:
    for sub in ("images", "masks", "splits"):
        os.makedirs(os.path.join(folder, sub))
    palette = palette_table(np.asarray(PALETTE, np.uint8)).flatten().tolist()
    names = [f"crack_{i:05d}" for i in range(num_train + num_val)]
    for index, name in enumerate(names):
        image, mask = _sample(size, np.random.default_rng([seed, index]))  # one stream per image
        image.save(os.path.join(folder, "images", name + ".jpg"), quality=JPEG_QUALITY)
        mask_image = Image.fromarray(mask, mode="L").convert("P")
        mask_image.putpalette(palette)
        mask_image.save(os.path.join(folder, "masks", name + ".png"))
    write_splits_and_classes(folder, {"train": names[:num_train], "val": names[num_train:]}, CLASS_NAMES, PALETTE)


def make_crack_dataset(root: str, num_train: int = 160, num_val: int = 40, size: int = 160, seed: int = 0) -> str:
    """Write the crack dataset to ``root`` unless the same one is already there; return ``root``.

    See :func:`datasets.utils.generate_once` for when it is written again.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f"need at least one training and one validation image (got {num_train} and {num_val})")
    if size < 32:
        raise ValueError(f"size {size} is too small for cracks to branch; use 32 or more")
    expected = f"{VERSION} {num_train} {num_val} {size} {seed}"
    total = num_train + num_val
    return generate_once(root, STAMP_FILE, expected, [("images", total), ("masks", total)],
                         lambda folder: _write(folder, num_train, num_val, size, seed))


def crack_statistics(root: str) -> Tuple[float, int, int]:
    """(share of crack pixels, images without a crack, images) over every mask in ``root``."""
    stats = compute_class_stats(FolderSegmentation(root, split=None))
    return stats.pixel_counts[1] / max(sum(stats.pixel_counts), 1), stats.background_only_images, stats.num_images
