"""Tiny datasets the tests write themselves."""
import os
from typing import Sequence

import numpy as np
from PIL import Image

from datasets.voc import voc_cmap


def write_voc(root: str, names_train: Sequence[str] = ("a", "b", "c", "d"), names_val: Sequence[str] = ("e", "f"),
              size=(40, 30), num_classes: int = 3, seed: int = 0) -> str:
    """A minimal VOC2012 folder under ``root`` (VOCdevkit/VOC2012/...) with random images and masks."""
    rng = np.random.default_rng(seed)
    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        os.makedirs(os.path.join(voc, sub), exist_ok=True)
    palette = voc_cmap().flatten().tolist()
    for name in list(names_train) + list(names_val):
        w, h = size
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            os.path.join(voc, "JPEGImages", name + ".jpg"))
        mask = rng.integers(0, num_classes, (h, w)).astype(np.uint8)
        mask[0, :] = 255
        m = Image.fromarray(mask, mode="L").convert("P")
        m.putpalette(palette)
        m.save(os.path.join(voc, "SegmentationClass", name + ".png"))
    for split, names in (("train", names_train), ("val", names_val)):
        with open(os.path.join(voc, "ImageSets", "Segmentation", split + ".txt"), "w") as f:
            f.write("\n".join(names) + "\n")
    return voc
