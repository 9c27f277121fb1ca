"""A small synthetic dataset in the exact VOC layout, generated on demand from a seed.

Objects of five VOC classes are drawn as textured shapes on a textured background, with sensor
noise, JPEG compression and a 255 "void" outline around every object as in real VOC masks, so the
demo exercises the real VOC code path and a model can learn it in minutes on a CPU.
"""
import os
from dataclasses import dataclass
from typing import Tuple

import numpy as np
from PIL import Image, ImageDraw

from utils.constants import IGNORE_INDEX

from .voc import VOC_CLASSES, voc_cmap

__all__ = ["DemoTexture", "DEMO_CLASSES", "DEMO_FOLDER", "make_demo_dataset", "demo_data_root", "demo_voc_root",
           "holds_demo_data"]


@dataclass(frozen=True)
class DemoTexture:
    """How one class looks: a base colour and a periodic pattern (stripes, checks, dots or plain)."""

    colour: Tuple[int, int, int]
    pattern: str
    period: int


DEMO_CLASSES = {  # VOC index -> appearance
    VOC_CLASSES.index("aeroplane"): DemoTexture((90, 150, 230), "hstripes", 6),
    VOC_CLASSES.index("bus"): DemoTexture((235, 200, 40), "checks", 8),
    VOC_CLASSES.index("car"): DemoTexture((210, 40, 40), "plain", 1),
    VOC_CLASSES.index("cat"): DemoTexture((40, 200, 90), "dots", 7),
    VOC_CLASSES.index("person"): DemoTexture((170, 70, 190), "vstripes", 5),
}
BACKGROUND = DemoTexture((120, 130, 110), "plain", 1)
SIZE_RANGE = (170, 240)
VOID_WIDTH = 3
NOISE_STD = 8.0
JPEG_QUALITY = 88
VERSION = "2"  # bump when the generator changes, so stale demo data is regenerated


DEMO_FOLDER = "demo"  # --dataset demo's own folder under --data_root, so that it never mixes with real VOC
STAMP_FILE = "demo_version.txt"  # in the VOC2012 folder: what generated it (and that it is the demo)


def demo_data_root(data_root: str) -> str:
    """Where ``--dataset demo`` keeps its data for ``--data_root data_root``: a folder of its own in it."""
    return os.path.join(data_root, DEMO_FOLDER)


def demo_voc_root(data_root: str) -> str:
    """The VOC2012 folder of the demo dataset written by :func:`make_demo_dataset` under ``data_root``."""
    return os.path.join(data_root, "VOCdevkit", "VOC2012")


def holds_demo_data(voc_root: str) -> bool:
    """Whether the VOC2012 folder ``voc_root`` holds the synthetic demo data rather than Pascal VOC."""
    return os.path.isfile(os.path.join(voc_root, STAMP_FILE))


def _pattern(texture: DemoTexture, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """The texture with a random phase and a little colour jitter: a float image that broadcasts to (H, W, 3)
    (a stripe is one row or column, plain is one pixel)."""
    yy = np.arange(height)[:, None] + rng.integers(0, 64)
    xx = np.arange(width)[None, :] + rng.integers(0, 64)
    p = texture.period
    if texture.pattern == "hstripes":
        light = (yy // p) % 2
    elif texture.pattern == "vstripes":
        light = (xx // p) % 2
    elif texture.pattern == "checks":
        light = ((yy // p) + (xx // p)) % 2
    elif texture.pattern == "dots":
        light = (((yy % p) - p // 2) ** 2 + ((xx % p) - p // 2) ** 2 < (p // 3) ** 2).astype(np.int64)
    else:
        light = np.zeros((1, 1), np.int64)
    colour = np.asarray(texture.colour, np.float32) + rng.normal(0, 12, 3)
    return colour * (0.75 + 0.35 * light[..., None])


def _background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    base = _pattern(BACKGROUND, height, width, rng)
    gradient = np.linspace(-25, 25, width)[None, :, None] * rng.choice([-1, 1])
    blobs = np.kron(rng.normal(0, 18, (height // 16 + 1, width // 16 + 1, 1)), np.ones((16, 16, 1)))
    return base + gradient + blobs[:height, :width]


def _random_shape(draw: ImageDraw.ImageDraw, height: int, width: int, value: int, rng: np.random.Generator,
                  outline: int = None) -> None:
    w = int(rng.integers(width // 5, width // 2))
    h = int(rng.integers(height // 5, height // 2))
    x0 = int(rng.integers(0, width - w))
    y0 = int(rng.integers(0, height - h))
    box = (x0, y0, x0 + w, y0 + h)
    kind = rng.integers(0, 3)
    width_arg = VOID_WIDTH if outline is not None else 0
    if kind == 0:
        draw.ellipse(box, fill=value, outline=outline, width=width_arg)
    elif kind == 1:
        draw.rectangle(box, fill=value, outline=outline, width=width_arg)
    else:
        apex = (x0 + int(rng.integers(0, w)), y0)
        draw.polygon([apex, (x0, y0 + h), (x0 + w, y0 + h)], fill=value, outline=outline, width=width_arg)


def _sample(rng: np.random.Generator) -> Tuple[Image.Image, Image.Image]:
    width, height = (int(v) for v in rng.integers(*SIZE_RANGE, size=2))
    image = _background(height, width, rng)
    mask = Image.new("L", (width, height), 0)
    classes = list(DEMO_CLASSES)
    for _ in range(int(rng.integers(1, 4))):
        label = classes[int(rng.integers(0, len(classes)))]
        shape = Image.new("L", (width, height), 0)
        state = rng.bit_generator.state
        _random_shape(ImageDraw.Draw(shape), height, width, 1, rng)
        rng.bit_generator.state = state  # same draw again on the mask, with its void outline
        _random_shape(ImageDraw.Draw(mask), height, width, label, rng, outline=IGNORE_INDEX)
        inside = np.asarray(shape, bool)[..., None]
        image = np.where(inside, _pattern(DEMO_CLASSES[label], height, width, rng), image)
    image = image + rng.normal(0, NOISE_STD, image.shape)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)), mask


def make_demo_dataset(data_root: str, num_train: int = 300, num_val: int = 60, seed: int = 0,
                      as_voc: bool = False) -> str:
    """Write the demo dataset under ``data_root`` (VOC layout) unless it is already there; return its VOC root.

    ``as_voc`` leaves out the stamp that marks it as the demo: the folder is then plain VOC-layout data, for
    benchmarks and tests that read it with ``--dataset voc`` on purpose (and it is written anew each time).
    """
    voc_root = demo_voc_root(data_root)
    stamp = os.path.join(voc_root, STAMP_FILE)
    expected = f"{VERSION} {num_train} {num_val} {seed}"
    if not as_voc and os.path.isfile(stamp) and open(stamp).read().strip() == expected:
        return voc_root
    for folder in ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation")):
        os.makedirs(os.path.join(voc_root, folder), exist_ok=True)
    rng = np.random.default_rng(seed)
    palette = voc_cmap().flatten().tolist()
    names = [f"demo_{i:05d}" for i in range(num_train + num_val)]
    for name in names:
        image, mask = _sample(rng)
        image.save(os.path.join(voc_root, "JPEGImages", name + ".jpg"), quality=JPEG_QUALITY)
        mask = mask.convert("P")
        mask.putpalette(palette)
        mask.save(os.path.join(voc_root, "SegmentationClass", name + ".png"))
    splits = {"train": names[:num_train], "val": names[num_train:], "trainval": names}
    for split, split_names in splits.items():
        with open(os.path.join(voc_root, "ImageSets", "Segmentation", split + ".txt"), "w") as f:
            f.write("\n".join(split_names) + "\n")
    if not as_voc:
        with open(stamp, "w") as f:
            f.write(expected + "\n")
    return voc_root
