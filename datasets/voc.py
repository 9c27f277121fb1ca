"""Pascal VOC segmentation (2007-2012 and the 2012 'aug' set), in the original's folder layout.

``root/VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, ImageSets/Segmentation/{train,val}.txt}``;
``2012_aug`` adds ``SegmentationClassAug`` (the SBD masks, 10,582 training names).
"""
import os
import sys
from typing import Callable, List, Optional

import numpy as np
from .base import PairedSegmentation
from .utils import DatasetError, download_url, extract_archive, read_split

__all__ = ["VOCSegmentation", "voc_cmap", "VOC_CLASSES"]

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
AUG_YEAR = "2012_aug"
AUG_MASK_DIR = "SegmentationClassAug"
AUG_SPLIT_FILE = "train_aug.txt"  # in --data_root, as the original reads it
YEARS = ("2007", "2008", "2009", "2010", "2011", "2012", AUG_YEAR)
_VOC_MIRROR = "https://thor.robots.ox.ac.uk/pascal/VOC/"
# Each year's train+val tarball (on the mirror torchvision downloads from), its MD5 and the folder it unpacks to.
VOC_TARBALLS = {year: {"url": _VOC_MIRROR + path, "md5": md5, "base_dir": base_dir} for year, (path, md5, base_dir) in {
    "2007": ("voc2007/VOCtrainval_06-Nov-2007.tar", "c52e279531787c972589f7e41ab4ae64", "VOCdevkit/VOC2007"),
    "2008": ("voc2008/VOCtrainval_14-Jul-2008.tar", "2629fa636546599198acfcfbfcf1904a", "VOCdevkit/VOC2008"),
    "2009": ("voc2009/VOCtrainval_11-May-2009.tar", "a3e00b113cfcfebf17e343f59da3caa1", "VOCdevkit/VOC2009"),
    "2010": ("voc2010/VOCtrainval_03-May-2010.tar", "da459979d0c395079b5c75ee67908abb", "VOCdevkit/VOC2010"),
    "2011": ("voc2011/VOCtrainval_25-May-2011.tar", "6c3384ef61512963050cb5d687e5bf1e", "TrainVal/VOCdevkit/VOC2011"),
    "2012": ("voc2012/VOCtrainval_11-May-2012.tar", "6cd6e144f989b92b3379bac3b3de84fd", "VOCdevkit/VOC2012"),
}.items()}


def voc_cmap(n: int = 256, normalized: bool = False) -> np.ndarray:
    """The VOC palette: colour of label ``i`` from the bits of ``i`` spread over R, G and B."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap / 255.0 if normalized else cmap


class VOCSegmentation(PairedSegmentation):
    """Pascal VOC ``image_set`` ('train', 'val', 'trainval') of ``year``; ``download`` fetches the tarball."""

    class_names = VOC_CLASSES
    cmap = voc_cmap()

    def __init__(self, root: str, year: str = "2012", image_set: str = "train", download: bool = False,
                 transform: Optional[Callable] = None):
        if year not in YEARS:
            raise DatasetError(f"VOC year {year!r} is not one of {', '.join(YEARS)}")
        self.root = os.path.expanduser(root)
        self.year = year
        self.image_set = image_set
        is_aug = year == AUG_YEAR
        source = VOC_TARBALLS["2012" if is_aug else year]
        self.voc_root = os.path.join(self.root, source["base_dir"])
        if download:
            archive = download_url(source["url"], self.root, os.path.basename(source["url"]), source["md5"])
            if not os.path.isdir(self.voc_root):
                extract_archive(archive, self.root)
        if not os.path.isdir(self.voc_root):
            raise DatasetError(f"VOC folder {self.voc_root} does not exist; pass --download to fetch VOC{year[:4]} "
                               f"(or point --data_root at the folder that holds VOCdevkit)")
        mask_dir = os.path.join(self.voc_root, AUG_MASK_DIR if is_aug else "SegmentationClass")
        # 2012_aug's train split: the original's train_aug.txt where it read it, else every SBD mask outside val (no
        # split file then, so its identity is the masks')
        self.split_file = self._aug_list() if is_aug and image_set == "train" else self._split_file(image_set)
        names = self._aug_names(mask_dir) if is_aug else read_split(self.split_file)
        images = [os.path.join(self.voc_root, "JPEGImages", n + ".jpg") for n in names]
        masks = [os.path.join(mask_dir, n + ".png") for n in names]
        super().__init__(images, masks, transform)

    def _split_file(self, image_set: str) -> str:
        return os.path.join(self.voc_root, "ImageSets", "Segmentation", image_set + ".txt")

    def _aug_list(self) -> Optional[str]:
        """``train_aug.txt`` in the data root, where the original read 2012_aug's train names; None without one."""
        path = os.path.join(self.root, AUG_SPLIT_FILE)
        return path if os.path.isfile(path) else None

    def _aug_names(self, mask_dir: str) -> List[str]:
        """SBD-augmented split: train = the names of train_aug.txt if there is one, else every name with an Aug mask
        minus VOC2012 val; val = VOC2012 val."""
        if not os.path.isdir(mask_dir):
            raise DatasetError(
                f"{mask_dir} does not exist: --year 2012_aug needs the SBD masks (SegmentationClassAug.zip, "
                f"see the README) unpacked there")
        val = read_split(self._split_file("val"))
        if self.image_set == "val":
            return val
        if self.image_set != "train":
            raise DatasetError(f"--year 2012_aug has the splits 'train' and 'val', not {self.image_set!r}")
        if self.split_file is not None:
            names = read_split(self.split_file)
            both = sorted(set(names) & set(val))
            if both:  # the derived list holds out val; the original took a list as it was, and so does this
                print(f"warning: {self.split_file} lists {len(both)} name(s) of the VOC2012 val split (such as "
                      f"{both[0]}): they are trained on and validated on", file=sys.stderr)
            return names
        held_out = set(val)
        names = sorted(f[:-4] for f in os.listdir(mask_dir) if f.endswith(".png") and f[:-4] not in held_out)
        if not names:
            raise DatasetError(f"{mask_dir} holds no masks outside the VOC2012 val split")
        return names
