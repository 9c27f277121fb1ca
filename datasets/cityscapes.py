"""Cityscapes: ``root/leftImg8bit/{split}/{city}/*_leftImg8bit.png`` with ``root/gtFine/...labelIds.png``.

Masks store the 35 label ids; training uses the 19 train ids, everything else is ignored (255).
"""
import os
from typing import Callable, List, NamedTuple, Optional, Tuple

import numpy as np
from PIL import Image

from utils.constants import IGNORE_INDEX

from .base import PairedSegmentation
from .utils import DatasetError, check_mask_values

__all__ = ["Cityscapes", "CITYSCAPES_CLASSES", "TRAIN_CLASS_NAMES"]


class CityscapesClass(NamedTuple):
    """One row of the official label table (cityscapesScripts' labels.py; torchvision's Cityscapes.classes)."""

    name: str
    id: int
    train_id: int
    category: str
    category_id: int
    has_instances: bool
    ignore_in_eval: bool
    color: Tuple[int, int, int]


CITYSCAPES_CLASSES = (
    CityscapesClass('unlabeled', 0, 255, 'void', 0, False, True, (0, 0, 0)),
    CityscapesClass('ego vehicle', 1, 255, 'void', 0, False, True, (0, 0, 0)),
    CityscapesClass('rectification border', 2, 255, 'void', 0, False, True, (0, 0, 0)),
    CityscapesClass('out of roi', 3, 255, 'void', 0, False, True, (0, 0, 0)),
    CityscapesClass('static', 4, 255, 'void', 0, False, True, (0, 0, 0)),
    CityscapesClass('dynamic', 5, 255, 'void', 0, False, True, (111, 74, 0)),
    CityscapesClass('ground', 6, 255, 'void', 0, False, True, (81, 0, 81)),
    CityscapesClass('road', 7, 0, 'flat', 1, False, False, (128, 64, 128)),
    CityscapesClass('sidewalk', 8, 1, 'flat', 1, False, False, (244, 35, 232)),
    CityscapesClass('parking', 9, 255, 'flat', 1, False, True, (250, 170, 160)),
    CityscapesClass('rail track', 10, 255, 'flat', 1, False, True, (230, 150, 140)),
    CityscapesClass('building', 11, 2, 'construction', 2, False, False, (70, 70, 70)),
    CityscapesClass('wall', 12, 3, 'construction', 2, False, False, (102, 102, 156)),
    CityscapesClass('fence', 13, 4, 'construction', 2, False, False, (190, 153, 153)),
    CityscapesClass('guard rail', 14, 255, 'construction', 2, False, True, (180, 165, 180)),
    CityscapesClass('bridge', 15, 255, 'construction', 2, False, True, (150, 100, 100)),
    CityscapesClass('tunnel', 16, 255, 'construction', 2, False, True, (150, 120, 90)),
    CityscapesClass('pole', 17, 5, 'object', 3, False, False, (153, 153, 153)),
    CityscapesClass('polegroup', 18, 255, 'object', 3, False, True, (153, 153, 153)),
    CityscapesClass('traffic light', 19, 6, 'object', 3, False, False, (250, 170, 30)),
    CityscapesClass('traffic sign', 20, 7, 'object', 3, False, False, (220, 220, 0)),
    CityscapesClass('vegetation', 21, 8, 'nature', 4, False, False, (107, 142, 35)),
    CityscapesClass('terrain', 22, 9, 'nature', 4, False, False, (152, 251, 152)),
    CityscapesClass('sky', 23, 10, 'sky', 5, False, False, (70, 130, 180)),
    CityscapesClass('person', 24, 11, 'human', 6, True, False, (220, 20, 60)),
    CityscapesClass('rider', 25, 12, 'human', 6, True, False, (255, 0, 0)),
    CityscapesClass('car', 26, 13, 'vehicle', 7, True, False, (0, 0, 142)),
    CityscapesClass('truck', 27, 14, 'vehicle', 7, True, False, (0, 0, 70)),
    CityscapesClass('bus', 28, 15, 'vehicle', 7, True, False, (0, 60, 100)),
    CityscapesClass('caravan', 29, 255, 'vehicle', 7, True, True, (0, 0, 90)),
    CityscapesClass('trailer', 30, 255, 'vehicle', 7, True, True, (0, 0, 110)),
    CityscapesClass('train', 31, 16, 'vehicle', 7, True, False, (0, 80, 100)),
    CityscapesClass('motorcycle', 32, 17, 'vehicle', 7, True, False, (0, 0, 230)),
    CityscapesClass('bicycle', 33, 18, 'vehicle', 7, True, False, (119, 11, 32)),
    CityscapesClass('license plate', -1, -1, 'vehicle', 7, False, True, (0, 0, 142)),
)
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
