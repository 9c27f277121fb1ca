"""Images to predict on: a file, a folder (recursive) or a glob; decoded robustly to RGB in DataLoader workers."""
import glob
import os
from typing import List, Tuple

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils import data

from .folder import IMAGE_EXTENSIONS
from .utils import DatasetError, as_rgb8

# PIL warns above 89 MP and refuses above 179 MP (its decompression-bomb guard). Drone, satellite and scanner
# images pass that, and these are the user's own files; predict.py bounds memory with sliding windows.
MAX_IMAGE_PIXELS = 1_000_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

__all__ = ["find_images", "ImageFiles", "to_rgb"]

GLOB_CHARS = "*?["


def find_images(spec: str) -> List[Tuple[str, str]]:
    """(path, path relative to the input root) for every image named by ``spec``, sorted.

    Extensions match case-insensitively (``.JPG`` counts), in globs too. A folder is searched recursively.
    """
    if any(c in spec for c in GLOB_CHARS):
        paths = [p for p in glob.glob(_any_case_extension(spec), recursive=True) if os.path.isfile(p)]
        root = os.path.dirname(spec.split("*")[0].split("?")[0].split("[")[0]) or "."
    elif os.path.isfile(spec):
        return [(spec, os.path.basename(spec))]
    elif os.path.isdir(spec):
        root = spec
        paths = [os.path.join(d, f) for d, _, files in os.walk(spec) for f in files]
    else:
        raise DatasetError(f"input {spec} does not exist (give a file, a folder or a glob)")
    images = sorted(p for p in paths if p.lower().endswith(IMAGE_EXTENSIONS))
    if not images:
        raise DatasetError(f"input {spec} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return [(p, os.path.relpath(p, root)) for p in images]


def _any_case_extension(pattern: str) -> str:
    """``pattern`` with a plain extension at its end matching in any case: ``*.jpg`` finds ``A.JPG`` too, as a
    folder's walk does, on case-sensitive file systems as well."""
    stem, extension = os.path.splitext(pattern)
    if not extension or any(c in extension for c in GLOB_CHARS):
        return pattern
    return stem + "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in extension)


def to_rgb(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation (a phone photo shows upright) and convert any mode to 8-bit RGB."""
    return as_rgb8(ImageOps.exif_transpose(img))


class ImageFiles(data.Dataset):
    """Item ``i`` is ``(i, uint8 tensor (3, H, W))``, or ``(i, error message)`` when the file cannot be decoded."""

    def __init__(self, files: List[Tuple[str, str]]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tuple[int, object]:
        path = self.files[index][0]
        try:
            with Image.open(path) as img:
                img.load()
                rgb = to_rgb(img)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
            return index, f"cannot decode {path}: {exc}"
        return index, torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous()
