"""What every segmentation dataset here shares: paired image/mask files, checked loading, colour decoding."""
import hashlib
import os
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from torch.utils import data

from utils.constants import IGNORE_INDEX

from .utils import DatasetError, check_mask_values, load_image, load_mask

__all__ = ["PairedSegmentation"]


class PairedSegmentation(data.Dataset):
    """Samples are (image file, mask file) pairs; ``transform(image, mask)`` is a joint transform.

    Subclasses set ``root`` (the data folder), ``class_names`` and ``cmap`` (a 256x3 uint8 colour table
    whose row 255 colours void), ``split_file`` when the split is read from a file, and may override
    :meth:`encode_mask` to turn the stored mask into train ids.
    """

    root: str
    class_names: Sequence[str] = ()
    cmap: np.ndarray = np.zeros((256, 3), np.uint8)
    ignore_index: int = IGNORE_INDEX
    split_file: Optional[str] = None
    band_spec = None  # multi-band data: the utils.bands.BandSpec it is read and normalised with; None for RGB

    def __init__(self, images: List[str], masks: List[str], transform: Optional[Callable] = None):
        if not images:
            raise DatasetError(f"{type(self).__name__}: the split holds no samples")
        _check_pairs_exist(images, masks)
        self.images = images
        self.masks = masks
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.images)

    def encode_mask(self, mask: Image.Image, path: str) -> Image.Image:
        """Stored mask -> mask of train ids (or the ignore index). Checks values by default."""
        check_mask_values(np.asarray(mask), self.num_classes, path, self.ignore_index)
        return mask

    def read_mask(self, index: int, image: Optional[Image.Image] = None) -> Image.Image:
        """The stored mask of sample ``index``, checked against ``image``'s size when given."""
        return load_mask(self.masks[index], image, self.images[index])

    def load_pair(self, index: int) -> Tuple[Image.Image, Image.Image]:
        image = load_image(self.images[index])
        return image, self.encode_mask(self.read_mask(index, image), self.masks[index])

    def load_target(self, index: int) -> np.ndarray:
        """The (H, W) train ids of sample ``index``, from its mask alone: no image, no transform."""
        return np.asarray(self.encode_mask(self.read_mask(index), self.masks[index]))

    def split_key(self) -> str:
        """A sha256 hex digest that changes when the split or its labels do: of the split file's bytes, every
        mask's path (relative to ``root``), size and mtime, and how masks map to classes (:meth:`label_spec`)."""
        digest = hashlib.sha256(self.label_spec().encode())
        if self.split_file is not None:
            with open(self.split_file, "rb") as f:
                digest.update(f.read())
        for path in sorted(self.masks):  # a stat per mask: relabelled masks are counted again
            stat = os.stat(path)
            digest.update(f"{os.path.relpath(path, self.root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def label_spec(self) -> str:
        """What turns a stored mask into train ids, as text (a change means new class statistics)."""
        return repr((list(self.class_names), self.ignore_index))

    def __getitem__(self, index: int):
        image, mask = self.load_pair(index)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask

    @classmethod
    def decode_target(cls, target: np.ndarray) -> np.ndarray:
        """Class-index mask (H, W) -> RGB (H, W, 3) uint8; a new array, the input is left untouched."""
        return cls.cmap[np.asarray(target, dtype=np.int64) & 0xFF]


def _check_pairs_exist(images: List[str], masks: List[str]) -> None:
    """Every image and mask file must exist, checked when the dataset is built rather than hours into training
    (a split without masks, such as VOC's test split, could otherwise only score NaN)."""
    for what, files, partners in (("mask", masks, images), ("image", images, masks)):
        missing = [i for i, path in enumerate(files) if not os.path.isfile(path)]
        if missing:
            first = missing[0]
            raise DatasetError(f"{what} {files[first]} does not exist (for {partners[first]}); {len(missing)} of "
                               f"{len(files)} samples have no {what}: a split without {what}s cannot train or "
                               "evaluate; add them or drop those names from the split")
