"""Joint image/mask transforms (the original's ``Ext*`` names and signatures).

Each transform takes and returns ``(image, mask)``: PIL images before :class:`ExtToTensor`, tensors
after. Masks are always resampled with nearest neighbour and padded with the ignore index.

The geometric operations are Pillow's own calls, as torchvision makes them for PIL images (its
``transforms.functional``: same fill, rounding and size rules; tests/utils/test_transforms.py compares): leaving
torchvision out keeps ``import main`` and ``import predict`` from loading it, and torch's compiler with it (about
2 s a process).

The image may also be a (C, H, W) NumPy array of any number of bands (multi-band imagery), uint8 or float32:
each band then goes through the very PIL operation an RGB image's channels go through (:func:`_each_band`), so
a 3-band uint8 array gives exactly what its RGB image gives.
"""
import numbers
import random
from typing import Callable, List, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from utils.constants import IGNORE_INDEX

__all__ = ["ExtCompose", "ExtRandomHorizontalFlip", "ExtRandomVerticalFlip", "ExtCenterCrop", "ExtRandomScale",
           "ExtScale", "ExtRandomRotation", "ExtPad", "ExtToTensor", "ExtNormalize", "ExtRandomCrop", "ExtResize",
           "ExtColorJitter", "Lambda", "Compose"]

Size = Union[int, Tuple[int, int]]


def _each_band(operation: Callable, img):
    """``operation`` (on a PIL image) applied to ``img``: a PIL image as it is, a (C, H, W) array band by band, each
    as an 8-bit 'L' (uint8 values) or a float32 'F' image, restacked."""
    if not isinstance(img, np.ndarray):
        return operation(img)
    if img.dtype == np.uint8:
        return np.stack([np.asarray(operation(Image.fromarray(band, "L"))) for band in img])
    return np.stack([np.asarray(operation(Image.fromarray(np.ascontiguousarray(band, np.float32), "F")))
                     for band in img])


def _size(img) -> Tuple[int, int]:
    """(width, height) of a PIL image or a (C, H, W) array, as PIL's ``size``."""
    return (img.shape[2], img.shape[1]) if isinstance(img, np.ndarray) else img.size


def _pair(size: Size) -> Tuple[int, int]:
    """``size`` as (height, width)."""
    return (int(size), int(size)) if isinstance(size, numbers.Number) else (int(size[0]), int(size[1]))


def _fill(img: Image.Image, fill: float):
    """``fill`` as Pillow takes it for ``img``: one value per band, integers except for 32-bit float images."""
    value = fill if img.mode == "F" else int(fill)
    bands = len(img.getbands())
    return tuple([value] * bands) if bands > 1 else value


def _pil_pad(img: Image.Image, padding, fill: float = 0) -> Image.Image:
    """Pad with a constant: ``padding`` is one int for every side or (left, top, right, bottom)."""
    border = padding if isinstance(padding, numbers.Number) else tuple(padding)
    padded = ImageOps.expand(img, border=border, fill=_fill(img, fill))
    if img.mode == "P":
        padded.putpalette(img.getpalette())
    return padded


def _pad_pair(img, lbl: Image.Image, padding):
    """Pad the image with 0 and the mask with the ignore index (``padding`` as :func:`_pil_pad` takes it)."""
    return _each_band(lambda band: _pil_pad(band, padding), img), _pil_pad(lbl, padding, fill=IGNORE_INDEX)


def _pil_center_crop(img: Image.Image, size: Tuple[int, int]) -> Image.Image:
    """The centre (h, w) window of an image at least that large (the offsets rounded as torchvision rounds them)."""
    (th, tw), (w, h) = size, img.size
    top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return img.crop((left, top, left + tw, top + th))


def _pil_resize(img: Image.Image, size: Sequence[int], resample: int) -> Image.Image:
    """Resize to ``size``: [shorter side] keeps the aspect ratio (the longer side rounded down), [h, w] is exact."""
    w, h = img.size
    if len(size) == 1:
        short, long = sorted((w, h))
        new_short, new_long = size[0], int(size[0] * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    else:
        new_h, new_w = size
    return img if (new_w, new_h) == (w, h) else img.resize((new_w, new_h), resample)


def _pil_rotate(img: Image.Image, angle: float, resample: int, expand: bool, center, fill: float) -> Image.Image:
    """Rotate by ``angle`` degrees counter-clockwise; the corners that come in get ``fill``."""
    return img.rotate(angle, resample, expand, center, fillcolor=_fill(img, fill))


def _flip(img, method: int, dim: int):
    """A PIL image transposed by ``method``; a tensor (after :class:`ExtToTensor`) flipped along ``dim``."""
    return img.flip(dim) if isinstance(img, torch.Tensor) else img.transpose(method)


def _check_same_size(img, lbl: Image.Image) -> None:
    if _size(img) != lbl.size:
        raise ValueError(f"image size {_size(img)} and mask size {lbl.size} differ")


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

    flip = staticmethod(lambda img: _flip(img, Image.FLIP_LEFT_RIGHT, -1))

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, img, lbl):
        if random.random() < self.p:
            return _each_band(self.flip, img), self.flip(lbl)
        return img, lbl


class ExtRandomHorizontalFlip(_RandomFlip):
    """Flip image and mask left-right with probability ``p``."""


class ExtRandomVerticalFlip(_RandomFlip):
    """Flip image and mask upside down with probability ``p``."""

    flip = staticmethod(lambda img: _flip(img, Image.FLIP_TOP_BOTTOM, -2))


def _pad_to(img, lbl, size: Tuple[int, int]):
    """Pad both evenly up to ``size`` (h, w) where they are smaller: the image with 0, the mask with the
    ignore index, so padding never counts as background."""
    th, tw = size
    w, h = _size(img)
    pad_w, pad_h = max(tw - w, 0), max(th - h, 0)
    if not (pad_w or pad_h):
        return img, lbl
    return _pad_pair(img, lbl, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2])


class ExtCenterCrop:
    """Crop the centre ``size`` (int or (h, w)) of image and mask; a smaller pair is padded first (see
    :func:`_pad_to`; the original padded masks with 0, background)."""

    def __init__(self, size: Size):
        self.size = _pair(size)

    def __call__(self, img, lbl):
        _check_same_size(img, lbl)
        img, lbl = _pad_to(img, lbl, self.size)
        return _each_band(lambda band: _pil_center_crop(band, self.size), img), _pil_center_crop(lbl, self.size)


class ExtResize:
    """Resize both; an int ``size`` sets the shorter side (as torchvision), a pair sets (h, w)."""

    def __init__(self, size: Size, interpolation=Image.BILINEAR):
        self.size = size
        self.interpolation = interpolation

    def __call__(self, img, lbl):
        size = [self.size] if isinstance(self.size, numbers.Number) else list(self.size)
        return (_each_band(lambda band: _pil_resize(band, size, self.interpolation), img),
                _pil_resize(lbl, size, Image.NEAREST))


def _scale_pair(img, lbl, scale: float, interpolation):
    _check_same_size(img, lbl)
    width, height = _size(img)
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    return _each_band(lambda band: band.resize(size, interpolation), img), lbl.resize(size, Image.NEAREST)


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
        mode = Image.BILINEAR if self.resample else Image.NEAREST
        img = _each_band(lambda band: _pil_rotate(band, angle, mode, self.expand, self.center, 0), img)
        lbl = _pil_rotate(lbl, angle, Image.NEAREST, self.expand, self.center, IGNORE_INDEX)
        return img, lbl


class ExtPad:
    """Pad both on the right and bottom up to the next multiple of ``diviser`` (mask with the ignore index)."""

    def __init__(self, diviser: int = 32):
        self.diviser = diviser

    def __call__(self, img, lbl):
        w, h = _size(img)
        pad_w = (-w) % self.diviser
        pad_h = (-h) % self.diviser
        return _pad_pair(img, lbl, [0, 0, pad_w, pad_h])


class ExtToTensor:
    """Image to a float tensor (C, H, W) in [0, 1] (``normalize=True``) or 0-255; mask to an integer tensor
    of ``target_type``. A band array's values are kept as they are, except that 8-bit ones are scaled as an
    image's with ``normalize=True``."""

    # The original defaulted to 'uint8' and cast masks to long in its training loop. Here masks leave the
    # transform as the int64 class indices cross-entropy takes; 'uint8' (8x less to copy to a GPU) works
    # too, as utils/loss.py and the metrics cast.
    def __init__(self, normalize: bool = True, target_type: str = "int64"):
        if not np.issubdtype(np.dtype(target_type), np.integer):
            raise ValueError(f"target_type must be an integer type (masks hold class indices), not {target_type!r}")
        self.normalize = normalize
        self.target_type = target_type

    def __call__(self, img, lbl):
        if isinstance(img, np.ndarray):
            tensor = torch.from_numpy(np.array(img))  # a writable copy, already (C, H, W)
            eight_bit = img.dtype == np.uint8
        else:
            array = np.array(img.convert("RGB") if img.mode != "RGB" else img)  # a writable copy
            tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
            eight_bit = True
        tensor = tensor.float().div_(255) if self.normalize and eight_bit else tensor.float()
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
            img, lbl = _pad_pair(img, lbl, self.padding)
        if self.pad_if_needed:
            img, lbl = _pad_to(img, lbl, self.size)
        th, tw = self.size
        w, h = _size(img)
        if w < tw or h < th:
            raise ValueError(f"crop size {self.size} is larger than the image ({h}, {w}); use pad_if_needed=True")
        top = random.randint(0, h - th)
        left = random.randint(0, w - tw)
        box = (left, top, left + tw, top + th)
        return _each_band(lambda band: band.crop(box), img), lbl.crop(box)


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
