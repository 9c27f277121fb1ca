"""Your own data: ``root/images/*`` and ``root/masks/*.png`` with matching file stems, and ``root/classes.yaml``.

``classes.yaml``::

    names: [background, crack, rust]         # class index = position; num_classes = len(names)
    palette: [[0, 0, 0], [255, 0, 0], [0, 255, 0]]   # optional: colours for drawing, and for RGB masks
    ignore_index: 255                        # optional, default 255
    ids: [0, 7, 26]                          # optional: the id each class is written as (predict --output labelids)

Splits: ``root/splits/{train,val}.txt`` (one stem per line) when present; otherwise ``train`` and
``val`` use every pair (say so in the split files once you have a validation set).
Masks are index PNGs (mode P or L, value = class index) or RGB PNGs coloured with the palette.
"""
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from utils.config import read_yaml_file
from utils.constants import IGNORE_INDEX

from .base import PairedSegmentation
from .utils import DatasetError, check_mask_values, decode_image, read_split

__all__ = ["FolderSegmentation", "read_classes", "read_class_ids", "palette_table", "default_palette",
           "write_splits_and_classes", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
CLASSES_FILE = "classes.yaml"
# A mask that is mostly 255 with 0 elsewhere is almost always a binary mask saved as 0/255.
BINARY_255_FRACTION = 0.05


def default_palette(n: int) -> np.ndarray:
    """Colours for ``n`` classes that name none: the VOC palette's first ``n``."""
    from .voc import voc_cmap

    return voc_cmap(max(n, 256))[:n]


CLASSES_KEYS = ("names", "palette", "ignore_index", "ids")


def _read_spec(path: str) -> dict:
    """The YAML mapping of a classes file, with its `names` and keys checked."""
    spec = read_yaml_file(path, "classes file", "`names: [background, ...]`", DatasetError,
                          if_missing="; write one with `names: [background, ...]` (see docs/own-data.md)")
    names = spec.get("names")
    if not isinstance(names, list) or len(names) < 2:
        raise DatasetError(f"{path}: `names` must list at least two class names")
    unknown = set(spec) - set(CLASSES_KEYS)
    if unknown:
        raise DatasetError(f"{path}: unknown keys {sorted(unknown)}; allowed: {', '.join(CLASSES_KEYS)}")
    return spec


def read_class_ids(path: str) -> Optional[List[int]]:
    """The classes file's `ids` (the value each class is written as in an id map, e.g. a benchmark's label ids),
    one per name, 0-255; None when it has none."""
    return _checked_ids(_read_spec(path), path)


def _checked_ids(spec: dict, path: str) -> Optional[List[int]]:
    ids = spec.get("ids")
    if ids is None:
        return None
    if (not isinstance(ids, list) or len(ids) != len(spec["names"])
            or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= 255 for i in ids)):
        raise DatasetError(f"{path}: `ids` must hold one whole number 0-255 per name ({len(spec['names'])})")
    return ids


def read_classes(path: str) -> Tuple[List[str], np.ndarray, int]:
    """(names, palette as an (n, 3) uint8 array, ignore index) from a classes YAML file."""
    spec = _read_spec(path)
    _checked_ids(spec, path)  # a malformed `ids` is reported whoever reads the file first
    names = spec["names"]
    palette = np.asarray(spec.get("palette", default_palette(len(names))), dtype=np.int64)
    if palette.shape != (len(names), 3) or palette.min() < 0 or palette.max() > 255:
        raise DatasetError(f"{path}: `palette` must hold one [r, g, b] (0-255) per name ({len(names)})")
    repeated = sorted({str(n) for n in names if [str(m) for m in names].count(str(n)) > 1})
    if repeated:
        raise DatasetError(f"{path}: class names must be unique (reports are keyed by name), but {repeated} "
                           "appear more than once")
    if len(names) > IGNORE_INDEX:  # classes 0-254, and 255 for ignored pixels
        raise DatasetError(f"{path}: {len(names)} class names, but masks hold 0-255 and {IGNORE_INDEX} marks ignored "
                           f"pixels: at most {IGNORE_INDEX} classes")
    return [str(n) for n in names], palette.astype(np.uint8), _checked_ignore_index(spec, names, path)


def _checked_ignore_index(spec: dict, names: Sequence[str], path: str) -> int:
    """`ignore_index`: a mask value 0-255 that no class has (a class's own index would never be trained or
    scored)."""
    value = spec.get("ignore_index", IGNORE_INDEX)
    if isinstance(value, str) and value.strip().isdecimal() and value.strip().isascii():  # '255', read before too
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
        raise DatasetError(f"{path}: `ignore_index` must be a whole number 0-255 (the mask value of pixels to "
                           f"ignore), not {value!r}")
    if value < len(names):
        raise DatasetError(f"{path}: `ignore_index` {value} is the index of class {names[value]!r}, whose pixels "
                           f"would then be ignored; mark ignored pixels with a value no class has "
                           f"({len(names)}-255, {IGNORE_INDEX} by default)")
    return value


def write_splits_and_classes(root: str, splits: Dict[str, Sequence[str]], names: Sequence[str],
                             palette: Sequence[Sequence[int]]) -> None:
    """``root/splits/{split}.txt`` for each of ``splits`` (split name -> stems) and ``root/classes.yaml`` with
    ``names`` and ``palette``, as a generator of data in this layout writes them."""
    os.makedirs(os.path.join(root, "splits"), exist_ok=True)
    for split, stems in splits.items():
        with open(os.path.join(root, "splits", split + ".txt"), "w") as f:
            f.write("\n".join(stems) + "\n")
    with open(os.path.join(root, CLASSES_FILE), "w") as f:
        f.write(f"names: [{', '.join(names)}]\n"
                f"palette: [{', '.join(str(list(colour)) for colour in palette)}]\n")


def palette_table(palette: np.ndarray) -> np.ndarray:
    """A 256x3 colour table for drawing masks: the classes' colours, black elsewhere (void included)."""
    table = np.zeros((256, 3), np.uint8)
    table[: len(palette)] = palette
    return table


_WARNED = set()


def _warn_once(message: str) -> None:
    """Print ``message`` to stderr the first time this process sees it (train and val sets share a folder)."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(message, file=sys.stderr)


def _stems(folder: str, extensions: Sequence[str]) -> Dict[str, str]:
    """The files of ``folder`` with one of ``extensions``, by stem; two files of one stem are an error (which of
    a.jpg and a.png would go with masks/a.png?)."""
    if not os.path.isdir(folder):
        raise DatasetError(f"folder {folder} does not exist; your own data needs images/ and masks/ side by side")
    stems = {}
    for name in sorted(os.listdir(folder)):
        if name.lower().endswith(tuple(extensions)):
            stem = os.path.splitext(name)[0]
            if stem in stems:
                raise DatasetError(f"{stems[stem]} and {os.path.join(folder, name)} have the same stem {stem!r}: "
                                   "keep one of them, or rename the other (files are paired by stem)")
            stems[stem] = os.path.join(folder, name)
    return stems


class FolderSegmentation(PairedSegmentation):
    """Image/mask pairs from ``root``; ``split`` is 'train', 'val' or None (all pairs)."""

    mask_extensions: Tuple[str, ...] = (".png",)

    def __init__(self, root: str, split: Optional[str] = "train", transform: Optional[Callable] = None,
                 classes_file: Optional[str] = None):
        self.root = os.path.expanduser(root)
        classes_path = classes_file or os.path.join(self.root, CLASSES_FILE)
        names, palette, ignore_index = read_classes(classes_path)
        self.class_names = tuple(names)
        self.palette = palette
        self.mask_ignore_index = ignore_index  # as stored in the masks; encode_mask turns it into IGNORE_INDEX
        # a file that says which value is "ignore" is taken at its word: masks of 0 and 255 are then meant so
        self.ignore_declared = "ignore_index" in _read_spec(classes_path)
        self.cmap = palette_table(palette)
        images = _stems(os.path.join(self.root, "images"), IMAGE_EXTENSIONS)
        masks = _stems(os.path.join(self.root, "masks"), self.mask_extensions)
        stems = self._split_stems(split, images)
        absent = [s for s in stems if s not in images]
        if absent:
            stem_only = " (a split lists file stems, without extension)" if absent[0].lower().endswith(
                IMAGE_EXTENSIONS) else ""
            raise DatasetError(f"split lists {absent[0]!r} but images/ has no such file{stem_only} ({len(absent)} "
                               "missing)")
        missing = [s for s in stems if s not in masks]
        if missing:
            raise DatasetError(f"no mask masks/{missing[0]}.png for image {images[missing[0]]} "
                               f"({len(missing)} images without a mask)")
        orphans = sorted(set(masks) - set(images))
        if orphans:
            _warn_once(f"warning: {len(orphans)} mask(s) in {os.path.join(self.root, 'masks')} have no image (first: "
                       f"{os.path.basename(masks[orphans[0]])}); they are not used. A misnamed image, or one whose "
                       f"extension is not {', '.join(IMAGE_EXTENSIONS)}?")
        super().__init__([images[s] for s in stems], [masks[s] for s in stems], transform)

    def _split_stems(self, split: Optional[str], images: Dict[str, str]) -> List[str]:
        split_file = os.path.join(self.root, "splits", f"{split}.txt") if split else None
        if split_file and os.path.isfile(split_file):
            self.split_file = split_file
            return read_split(split_file)
        if not images:
            raise DatasetError(f"{os.path.join(self.root, 'images')} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        return sorted(images)

    def label_spec(self) -> str:
        return repr((list(self.class_names), self.palette.tolist(), self.mask_ignore_index))

    def decode_target(self, target: np.ndarray) -> np.ndarray:
        return self.cmap[np.asarray(target, dtype=np.int64) & 0xFF]

    def encode_mask(self, mask: Image.Image, path: str) -> Image.Image:
        if mask.mode in ("RGB", "RGBA"):
            mask = Image.fromarray(self._colours_to_indices(np.asarray(mask.convert("RGB")), path))
        values = np.asarray(mask)
        self._check_binary_255(values, path)
        check_mask_values(values, self.num_classes, path, self.mask_ignore_index)
        if self.mask_ignore_index != IGNORE_INDEX:  # transforms, losses and metrics all ignore 255
            mask = Image.fromarray(np.where(values == self.mask_ignore_index, IGNORE_INDEX, values).astype(np.uint8))
        return mask

    def read_mask(self, index: int, image: Optional[Image.Image] = None) -> Image.Image:
        mask = decode_image(self.masks[index], f"mask {self.masks[index]}")  # may be RGB here, so not load_mask
        if image is not None and mask.size != image.size:
            raise DatasetError(f"mask {self.masks[index]} is {mask.size[0]}x{mask.size[1]} but image "
                               f"{self.images[index]} is {image.size[0]}x{image.size[1]}; they must be the same size")
        if mask.mode not in ("P", "L", "RGB", "RGBA"):
            raise DatasetError(f"mask {self.masks[index]} has mode {mask.mode}; save it as an index or RGB PNG")
        return mask

    def _colours_to_indices(self, rgb: np.ndarray, path: str) -> np.ndarray:
        codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
        palette_codes = (self.palette[:, 0].astype(np.int64) << 16) | (self.palette[:, 1].astype(np.int64) << 8) \
            | self.palette[:, 2]
        lookup = {int(code): index for index, code in enumerate(palette_codes)}
        if len(lookup) < len(palette_codes):  # the colour would stand for the last of its classes alone
            colours = self.palette.tolist()
            second = next(index for index, colour in enumerate(colours) if colours.index(colour) != index)
            first = colours.index(colours[second])
            raise DatasetError(f"RGB mask {path} cannot be read: classes {self.class_names[first]!r} and "
                               f"{self.class_names[second]!r} have the same colour {colours[second]} in the palette "
                               "of classes.yaml; give each class its own")
        out = np.full(codes.shape, self.mask_ignore_index, dtype=np.uint8)
        unknown = []
        for code in np.unique(codes):
            if int(code) in lookup:
                out[codes == code] = lookup[int(code)]
            else:
                unknown.append((int(code) >> 16, (int(code) >> 8) & 255, int(code) & 255))
        if unknown:
            raise DatasetError(f"RGB mask {path} has colours {unknown[:5]} that are not in the palette of classes.yaml")
        return out

    def _check_binary_255(self, values: np.ndarray, path: str) -> None:
        if self.mask_ignore_index != IGNORE_INDEX or self.ignore_declared or values.size == 0:
            return
        present = np.unique(values)
        share = float((values == IGNORE_INDEX).mean())
        if set(present.tolist()) <= {0, IGNORE_INDEX} and share > BINARY_255_FRACTION:
            raise DatasetError(f"mask {path} holds only 0 and 255 ({share:.0%} of pixels 255): a binary mask saved "
                               "as 0/255? 255 means 'ignore'; save the foreground as 1 (e.g. mask // 255), or, if 255 "
                               "does mark pixels to ignore, say `ignore_index: 255` in classes.yaml")
