"""Joint image/mask transforms (the original's ``Ext*`` names and signatures).

Each transform takes and returns ``(image, mask)``: PIL images before :class:`ExtToTensor`, tensors
after. Masks are always resampled with nearest neighbour and padded with the ignore index.
"""
import numbers
import random
from typing import Callable, List, Sequence, Tuple, Union

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image

from .constants import IGNORE_INDEX

__all__ = ["ExtCompose", "ExtRandomHorizontalFlip", "ExtRandomVerticalFlip", "ExtCenterCrop", "ExtRandomScale",
           "ExtScale", "ExtRandomRotation", "ExtPad", "ExtToTensor", "ExtNormalize", "ExtRandomCrop", "ExtResize",
           "ExtColorJitter", "Lambda", "Compose"]

Size = Union[int, Tuple[int, int]]


def _pair(size: Size) -> Tuple[int, int]:
    """``size`` as (height, width)."""
    return (int(size), int(size)) if isinstance(size, numbers.Number) else (int(size[0]), int(size[1]))


def _check_same_size(img: Image.Image, lbl: Image.Image) -> None:
    if img.size != lbl.size:
        raise ValueError(f"image size {img.size} and mask size {lbl.size} differ")


class ExtCompose:
    """Apply joint transforms in order."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, img, lbl):
        for t in self.transforms:
            img, lbl = t(img, lbl)
        return img, lbl

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(repr(t) for t in self.transforms)})"


class _RandomFlip:
    """Flip image and mask together with probability ``p``; subclasses choose the axis."""

    flip = staticmethod(F.hflip)

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, img, lbl):
        if random.random() < self.p:
            return self.flip(img), self.flip(lbl)
        return img, lbl


class ExtRandomHorizontalFlip(_RandomFlip):
    """Flip image and mask left-right with probability ``p``."""


class ExtRandomVerticalFlip(_RandomFlip):
    """Flip image and mask upside down with probability ``p``."""

    flip = staticmethod(F.vflip)


def _pad_to(img, lbl, size: Tuple[int, int]):
    """Pad both evenly up to ``size`` (h, w) where they are smaller: the image with 0, the mask with the
    ignore index, so padding never counts as background."""
    th, tw = size
    w, h = img.size
    pad_w, pad_h = max(tw - w, 0), max(th - h, 0)
    if not (pad_w or pad_h):
        return img, lbl
    padding = [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2]
    return F.pad(img, padding), F.pad(lbl, padding, fill=IGNORE_INDEX)


class ExtCenterCrop:
    """Crop the centre ``size`` (int or (h, w)) of image and mask; a smaller pair is padded first (see
    :func:`_pad_to`; the original padded masks with 0, background)."""

    def __init__(self, size: Size):
        self.size = _pair(size)

    def __call__(self, img, lbl):
        _check_same_size(img, lbl)
        img, lbl = _pad_to(img, lbl, self.size)
        return F.center_crop(img, list(self.size)), F.center_crop(lbl, list(self.size))


class ExtResize:
    """Resize both; an int ``size`` sets the shorter side (as torchvision), a pair sets (h, w)."""

    def __init__(self, size: Size, interpolation=Image.BILINEAR):
        self.size = size
        self.interpolation = interpolation

    def __call__(self, img, lbl):
        size = [self.size] if isinstance(self.size, numbers.Number) else list(self.size)
        return (F.resize(img, size, F.InterpolationMode(_mode_name(self.interpolation)), antialias=True),
                F.resize(lbl, size, F.InterpolationMode.NEAREST))


def _mode_name(pil_mode: int) -> str:
    return {Image.NEAREST: "nearest", Image.BILINEAR: "bilinear", Image.BICUBIC: "bicubic"}[pil_mode]


def _scale_pair(img, lbl, scale: float, interpolation):
    _check_same_size(img, lbl)
    size = (max(1, int(round(img.size[0] * scale))), max(1, int(round(img.size[1] * scale))))
    return img.resize(size, interpolation), lbl.resize(size, Image.NEAREST)


class ExtScale:
    """Resize both by a fixed factor ``scale``."""

    def __init__(self, scale: float, interpolation=Image.BILINEAR):
        self.scale = scale
        self.interpolation = interpolation

    def __call__(self, img, lbl):
        return _scale_pair(img, lbl, self.scale, self.interpolation)


class ExtRandomScale:
    """Resize both by a factor drawn uniformly from ``scale_range`` (e.g. (0.5, 2.0))."""

    def __init__(self, scale_range: Tuple[float, float], interpolation=Image.BILINEAR):
        self.scale_range = scale_range
        self.interpolation = interpolation

    def __call__(self, img, lbl):
        return _scale_pair(img, lbl, random.uniform(*self.scale_range), self.interpolation)


class ExtRandomRotation:
    """Rotate both by an angle from ``degrees`` (a number d means (-d, d)); the mask's new corners are void."""

    def __init__(self, degrees, resample: bool = False, expand: bool = False, center=None):
        if isinstance(degrees, numbers.Number):
            if degrees < 0:
                raise ValueError("degrees must be non-negative when given as one number")
            degrees = (-degrees, degrees)
        self.degrees = tuple(degrees)
        self.resample = resample
        self.expand = expand
        self.center = center

    def __call__(self, img, lbl):
        angle = random.uniform(*self.degrees)
        img = F.rotate(img, angle, F.InterpolationMode.BILINEAR if self.resample else F.InterpolationMode.NEAREST,
                       self.expand, self.center)
        lbl = F.rotate(lbl, angle, F.InterpolationMode.NEAREST, self.expand, self.center, fill=IGNORE_INDEX)
        return img, lbl


class ExtPad:
    """Pad both on the right and bottom up to the next multiple of ``diviser`` (mask with the ignore index)."""

    def __init__(self, diviser: int = 32):
        self.diviser = diviser

    def __call__(self, img, lbl):
        w, h = img.size
        pad_w = (-w) % self.diviser
        pad_h = (-h) % self.diviser
        padding = [0, 0, pad_w, pad_h]
        return F.pad(img, padding), F.pad(lbl, padding, fill=IGNORE_INDEX)


class ExtToTensor:
    """Image to a float tensor (C, H, W) in [0, 1] (``normalize=True``) or 0-255; mask to an integer tensor
    of ``target_type``."""

    # The original defaulted to 'uint8' and cast masks to long in its training loop. Here masks leave the
    # transform as the int64 class indices cross-entropy takes; 'uint8' (8x less to copy to a GPU) works
    # too, as utils/loss.py and the metrics cast.
    def __init__(self, normalize: bool = True, target_type: str = "int64"):
        if not np.issubdtype(np.dtype(target_type), np.integer):
            raise ValueError(f"target_type must be an integer type (masks hold class indices), not {target_type!r}")
        self.normalize = normalize
        self.target_type = target_type

    def __call__(self, img, lbl):
        array = np.array(img.convert("RGB") if img.mode != "RGB" else img)  # a writable copy
        tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
        tensor = tensor.float().div_(255) if self.normalize else tensor.float()
        mask = torch.from_numpy(np.array(lbl, dtype=self.target_type))
        return tensor, mask


class ExtNormalize:
    """Normalise the image tensor per channel: ``(x - mean) / std``. The mask passes through."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, tensor: torch.Tensor, lbl):
        return (tensor - self.mean) / self.std, lbl


class ExtRandomCrop:
    """Crop a random ``size`` window from both.

    With ``pad_if_needed`` an image smaller than ``size`` is first padded, by exactly what is
    missing, with 0 in the image and the ignore index (255) in the mask, so padding never counts as
    background (the original padded the mask with 0 and padded more than needed).
    """

    def __init__(self, size: Size, padding: int = 0, pad_if_needed: bool = False):
        self.size = _pair(size)
        self.padding = padding
        self.pad_if_needed = pad_if_needed

    def __call__(self, img, lbl):
        _check_same_size(img, lbl)
        if self.padding > 0:
            img = F.pad(img, self.padding)
            lbl = F.pad(lbl, self.padding, fill=IGNORE_INDEX)
        if self.pad_if_needed:
            img, lbl = _pad_to(img, lbl, self.size)
        th, tw = self.size
        w, h = img.size
        if w < tw or h < th:
            raise ValueError(f"crop size {self.size} is larger than the image ({h}, {w}); use pad_if_needed=True")
        top = random.randint(0, h - th)
        left = random.randint(0, w - tw)
        box = (left, top, left + tw, top + th)
        return img.crop(box), lbl.crop(box)


class ExtColorJitter:
    """Random brightness, contrast, saturation and hue on the image only (torchvision's ColorJitter)."""

    def __init__(self, brightness=0, contrast=0, saturation=0, hue=0):
        from torchvision.transforms import ColorJitter

        self.jitter = ColorJitter(brightness, contrast, saturation, hue)

    def __call__(self, img, lbl):
        return self.jitter(img), lbl


class Lambda:
    """Apply a user function ``fn(img, lbl) -> (img, lbl)``."""

    def __init__(self, lambd: Callable):
        if not callable(lambd):
            raise TypeError(f"Lambda needs a callable, got {type(lambd).__name__}")
        self.lambd = lambd

    def __call__(self, img, lbl):
        return self.lambd(img, lbl)


class Compose:
    """Compose single-input transforms (image only), as torchvision's Compose."""

    def __init__(self, transforms: List[Callable]):
        self.transforms = list(transforms)

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img
