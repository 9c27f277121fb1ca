"""Calibration images for INT8 quantisation (``tools/export_onnx.py --int8``): chosen over a folder, file or glob,
decoded as predict.py decodes its inputs, scaled down to the export's size and normalised, one at a time.

ONNX Runtime's calibration first asks how many images there are, then for them by index, a group at a time. So the
chosen files are decoded once to find those that can be used, and again when asked for: whatever the folder holds,
memory holds one image at a time, of at most ``max_pixels`` pixels. (Held at full size, 32 phone photos took 4.6 GB.)
"""
import sys
from collections.abc import Sequence
from typing import List

import numpy as np
import torch
from PIL import Image

from utils.inference.predictor import normalize

from .image_files import find_images, is_video
from .utils import DatasetError, decode_image, scaled_size

__all__ = ["read_calibration_image", "CalibrationImages", "choose_calibration_images"]


def read_calibration_image(path: str, max_pixels: int) -> torch.Tensor:
    """The uint8 (3, H, W) pixels of ``path`` as predict.py decodes them (EXIF orientation applied, any mode as 8-bit
    RGB), scaled down to at most ``max_pixels`` pixels with their aspect ratio; DatasetError naming the file."""
    rgb = decode_image(path, f"calibration image {path}", upright=True, rgb=True, draft_pixels=max_pixels)
    target = scaled_size(rgb.size, max_pixels)
    if rgb.size != target:
        rgb = rgb.resize(target, Image.BILINEAR)  # Pillow's filters widen as they shrink: no aliasing
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)


class CalibrationImages(Sequence):
    """Item ``i`` is file ``i`` as ONNX Runtime takes it: a normalised (1, 3, H, W) float32 array (see
    :func:`read_calibration_image`), decoded when asked for and not kept."""

    def __init__(self, files: Sequence[str], max_pixels: int):
        self.files, self.max_pixels = list(files), max_pixels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> np.ndarray:
        return normalize(read_calibration_image(self.files[index], self.max_pixels)[None]).numpy()


def choose_calibration_images(spec: str, count: int, smallest: int, max_pixels: int) -> CalibrationImages:
    """Up to ``count`` images named by ``spec``, spread evenly over its sorted list (every folder of it has its say).
    Files that cannot be decoded, and images with a side under ``smallest`` once scaled, are skipped with a line each;
    DatasetError when none is left."""
    files = [path for path, _ in find_images(spec, what="--calibration") if not is_video(path)]
    picks = sorted(set(np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int).tolist()))
    usable: List[str] = []
    for path in (files[index] for index in picks):
        try:
            height, width = read_calibration_image(path, max_pixels).shape[-2:]
        except DatasetError as exc:
            print(f"skipped: {exc}", file=sys.stderr)
            continue
        if min(width, height) < smallest:
            print(f"skipped: calibration image {path}: an image of {width}x{height} is smaller than this model takes: "
                  f"at least {smallest}x{smallest} pixels", file=sys.stderr)
            continue
        usable.append(path)
    if not usable:
        raise DatasetError(f"--calibration {spec} holds no calibration image that can be decoded and is large enough "
                           "for the model; give a few dozen images like those you will predict on")
    return CalibrationImages(usable, max_pixels)
