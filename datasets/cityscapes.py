"""Cityscapes: ``root/leftImg8bit/{split}/{city}/*_leftImg8bit.png`` with ``root/gtFine/...labelIds.png``.

Masks store the 35 label ids; training uses the 19 train ids, everything else is ignored (255).
"""
import os
from typing import Callable, List, Optional, Tuple

import numpy as np
from PIL import Image
from torchvision.datasets import Cityscapes as _TorchvisionCityscapes

from utils.constants import IGNORE_INDEX

from .base import PairedSegmentation
from .utils import DatasetError, check_mask_values

__all__ = ["Cityscapes", "CITYSCAPES_CLASSES", "TRAIN_CLASS_NAMES"]

# The official table: (name, id, train_id, category, category_id, has_instances, ignore_in_eval, color).
CITYSCAPES_CLASSES = tuple(_TorchvisionCityscapes.classes)
NUM_LABEL_IDS = 34  # ids 0..33; the table's license plate (-1) never appears in labelIds files
TRAIN_CLASSES = sorted((c for c in CITYSCAPES_CLASSES if c.train_id not in (-1, IGNORE_INDEX)),
                       key=lambda c: c.train_id)
TRAIN_CLASS_NAMES = tuple(c.name for c in TRAIN_CLASSES)


def _id_to_train_id() -> np.ndarray:
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for c in CITYSCAPES_CLASSES:
        if 0 <= c.id and c.train_id not in (-1, IGNORE_INDEX):
            table[c.id] = c.train_id
    return table


def _train_id_to_id() -> np.ndarray:
    """Train ids (0..18) -> label ids (the benchmark's format); anything else -> 0 (unlabeled)."""
    table = np.zeros(256, dtype=np.uint8)
    for c in TRAIN_CLASSES:
        table[c.train_id] = c.id
    return table


def _train_id_cmap() -> np.ndarray:
    cmap = np.zeros((256, 3), dtype=np.uint8)
    for c in TRAIN_CLASSES:
        cmap[c.train_id] = c.color
    return cmap  # void (255) stays black, as the original drew it


class Cityscapes(PairedSegmentation):
    """Cityscapes ``split`` ('train', 'val', 'test') with ``mode`` 'fine' (gtFine) or 'coarse' (gtCoarse)."""

    class_names = TRAIN_CLASS_NAMES
    cmap = _train_id_cmap()
    id_to_train_id = _id_to_train_id()
    train_id_to_id = _train_id_to_id()

    def __init__(self, root: str, split: str = "train", mode: str = "fine", target_type: str = "semantic",
                 transform: Optional[Callable] = None):
        if target_type != "semantic":
            raise DatasetError(f"Cityscapes target_type {target_type!r} is not supported; use 'semantic'")
        if mode not in ("fine", "coarse"):
            raise DatasetError(f"Cityscapes mode must be 'fine' or 'coarse', got {mode!r}")
        self.root = os.path.expanduser(root)
        self.split = split
        self.mode = "gtFine" if mode == "fine" else "gtCoarse"
        images_dir = os.path.join(self.root, "leftImg8bit", split)
        targets_dir = os.path.join(self.root, self.mode, split)
        for folder in (images_dir, targets_dir):
            if not os.path.isdir(folder):
                raise DatasetError(f"Cityscapes folder {folder} does not exist; download leftImg8bit_trainvaltest.zip "
                                   f"and {self.mode}_trainvaltest.zip from cityscapes-dataset.com (login needed) "
                                   f"and unpack both into {self.root}")
        images, masks = self._pairs(images_dir, targets_dir)
        super().__init__(images, masks, transform)

    def _pairs(self, images_dir: str, targets_dir: str) -> Tuple[List[str], List[str]]:
        images, masks = [], []
        for city in sorted(os.listdir(images_dir)):
            for name in sorted(os.listdir(os.path.join(images_dir, city))):
                if not name.endswith("_leftImg8bit.png"):
                    continue
                stem = name[: -len("_leftImg8bit.png")]
                images.append(os.path.join(images_dir, city, name))
                masks.append(os.path.join(targets_dir, city, f"{stem}_{self.mode}_labelIds.png"))
        return images, masks

    @classmethod
    def encode_target(cls, target) -> np.ndarray:
        """Label ids (0..33) -> train ids (0..18), everything else -> 255."""
        return cls.id_to_train_id[np.asarray(target, dtype=np.uint8)]

    def encode_mask(self, mask: Image.Image, path: str) -> Image.Image:
        ids = np.asarray(mask)
        check_mask_values(ids, NUM_LABEL_IDS, path, IGNORE_INDEX)
        return Image.fromarray(self.encode_target(ids))
