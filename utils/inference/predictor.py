"""Inference building blocks: normalisation, test-time augmentation and sliding windows with bounded memory.

:class:`SegmentationPredictor` is the one implementation of an inference recipe (scales, flip, windows) that
``predict.py`` and ``main.py``'s evaluation share.
"""
import argparse
import dataclasses
import math
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from utils.constants import IMAGENET_MEAN, IMAGENET_STD
from utils.runtime.device import autocast

__all__ = ["normalize", "predict_logits", "window_taper", "sliding_window_rows",
           "sliding_window_labels", "InferenceRecipe", "SegmentationPredictor",
           "add_window_options", "check_recipe_options", "InputTooSmallError", "is_too_small"]

Logits = Callable[[torch.Tensor], torch.Tensor]


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float, ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def predict_logits(model: nn.Module, images: torch.Tensor, amp: str = "off", channels_last: bool = False,
                   scales: Sequence[float] = (1.0,), flip: bool = False) -> torch.Tensor:
    """Class scores (N, C, H, W) at the input size for normalised ``images``.

    With several ``scales`` or ``flip`` (test-time augmentation) the softmax probabilities of every
    variant are summed (float32); with scale 1.0 alone and no flip the model's logits are returned
    unchanged, in the autocast dtype (an argmax needs no float32 copy).
    """
    size = images.shape[-2:]

    def run(x: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(images.device, amp):
            return model(x)

    if list(scales) == [1.0] and not flip:
        return run(images)
    total: Optional[torch.Tensor] = None
    for scale in scales:
        x = images if scale == 1.0 else F.interpolate(images, scale_factor=scale, mode="bilinear",
                                                      align_corners=False)
        variants = [x, x.flip(-1)] if flip else [x]
        for i, v in enumerate(variants):
            out = run(v).float()
            out = out.flip(-1) if i == 1 else out
            if out.shape[-2:] != size:
                out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
            prob = out.softmax(dim=1)
            total = prob if total is None else total + prob
    return total


def _starts(length: int, window: int, stride: int):
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


TAPER_FLOOR = 1e-3  # every pixel of a window keeps some weight: a pixel that one window alone covers is its


def window_taper(height: int, width: int, overlap: int) -> torch.Tensor:
    """(height, width) weights that fall from 1, ``overlap`` pixels from a window's edge, towards 0 at the edge, as the
    square of the distance (never below TAPER_FLOOR): where windows overlap, each counts most away from its own
    edge, where its model saw the most context."""
    def ramp(length: int) -> torch.Tensor:
        position = torch.arange(length, dtype=torch.float32)
        distance = torch.minimum(position + 1, length - position)
        return (distance / max(overlap, 1)).clamp(max=1.0).square().clamp(min=TAPER_FLOOR)

    return ramp(height)[:, None] * ramp(width)[None, :]


def sliding_window_rows(logits_fn: Logits, read_rows: Callable[[int, int], torch.Tensor], height: int, width: int,
                        num_classes: int, window: int, stride: int, emit: Callable[[int, torch.Tensor], None],
                        taper: bool = False) -> None:
    """Per-pixel argmax of ``logits_fn`` run on overlapping ``window`` crops of an image of ``height`` x ``width``,
    handed to ``emit(top, labels)`` band of rows by band of rows ((h, W) int64, from row ``top`` down, in order).

    ``read_rows(top, bottom)`` returns the image's rows ``top:bottom`` (C, h, W): from memory, or from a file window
    by window. Scores of overlapping windows are summed (same argmax as their mean); with ``taper`` each window's
    weighted by :func:`window_taper`, so that no seam shows where a window's edge (little context) meets the middle
    of the next. Only a band of ``window`` rows of scores is kept at a time and finished rows are emitted at once, so
    memory grows with the image's width, not its area. An image smaller than the window is predicted whole, as plain
    inference does.
    """
    rows = _starts(height, window, stride)
    cols = _starts(width, window, stride)
    h, w = min(window, height), min(window, width)
    weights = window_taper(h, w, window - stride) if taper else None
    band_top = 0
    band = torch.zeros(num_classes, h, width)
    for top in rows:
        if top > band_top:  # rows above `top` are complete: emit them and slide the band down
            shift = top - band_top
            emit(band_top, band[:, :shift].max(0).indices)
            band = torch.cat([band[:, shift:], torch.zeros(num_classes, shift, width)], dim=1)
            band_top = top
        strip = read_rows(top, top + h)
        for left in cols:
            crop = strip[:, :, left:left + w].unsqueeze(0)
            scores = logits_fn(crop)[0].float().cpu()
            band[:, :, left:left + w] += scores if weights is None else scores * weights
    emit(band_top, band.max(0).indices)


def sliding_window_labels(logits_fn: Logits, image: torch.Tensor, num_classes: int, window: int,
                          stride: int, taper: bool = False) -> torch.Tensor:
    """Per-pixel argmax (H, W) of ``logits_fn`` run on overlapping ``window`` crops of a (C, H, W) image in memory
    (see :func:`sliding_window_rows`)."""
    _, height, width = image.shape
    labels = torch.empty(height, width, dtype=torch.int64)

    def emit(top: int, rows: torch.Tensor) -> None:
        labels[top:top + rows.shape[0]] = rows

    sliding_window_rows(logits_fn, lambda top, bottom: image[:, top:bottom], height, width, num_classes, window,
                        stride, emit, taper)
    return labels


DEFAULT_WINDOW, DEFAULT_STRIDE = 513, 341  # the training crop, and two thirds of it


def add_window_options(parser: argparse.ArgumentParser, slide_flag: str) -> None:
    """``--window`` and ``--stride``: the geometry of the sliding windows that ``slide_flag`` turns on."""
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help=f"{slide_flag} window size")
    parser.add_argument("--stride", type=int, default=DEFAULT_STRIDE, help=f"{slide_flag} step between windows")


def check_recipe_options(scales: Sequence[float], scales_flag: str, slide: bool, window: int, stride: int) -> None:
    """ValueError naming the flag when a recipe cannot work: a scale not above 0, windows that skip pixels."""
    if any(not (scale > 0 and math.isfinite(scale)) for scale in scales):
        raise ValueError(f"{scales_flag} must all be positive and finite, not {' '.join(map(str, scales))}")
    if slide and stride > window:
        raise ValueError(f"--stride {stride} is larger than --window {window}: pixels would be skipped")


class InputTooSmallError(ValueError):
    """An image, at one of the recipe's scales, is smaller than the model can take; ``option`` names the option
    that cut it down (--crop_size, --window), None when the image itself is too small."""

    def __init__(self, message: str, option: Optional[str] = None):
        super().__init__(message)
        self.option = option


# How PyTorch says that a tensor became too small for a layer (pooling, convolution, resize) or for BatchNorm,
# and how ONNX Runtime says it (its convolution and pooling kernels check their input's spatial shape).
_TOO_SMALL_MARKS = ("Calculated padded input size", "Kernel size can't be greater than actual input size",
                    "Input and output sizes should be greater than 0", "Expected more than 1 value per channel",
                    "Output size is too small", "Invalid input shape")
SMALLEST_SIDE_PROBED = 4096  # the smallest side a model takes is searched up to this


def is_too_small(exc: BaseException) -> bool:
    """Whether ``exc`` is PyTorch or ONNX Runtime saying that an input became too small for a layer."""
    return isinstance(exc, RuntimeError) and any(mark in str(exc) for mark in _TOO_SMALL_MARKS)


def smallest_side(logits: Logits, make: Callable[[int], torch.Tensor]) -> Optional[int]:
    """The smallest side ``s`` for which ``logits(make(s))`` runs, found by doubling then bisecting (a dozen
    small forward passes); None when even ``SMALLEST_SIDE_PROBED`` is too small. Other errors propagate."""
    def runs(side: int) -> bool:
        try:
            logits(make(side))
            return True
        except RuntimeError as exc:
            if not is_too_small(exc):
                raise
            return False

    fails, works = 0, 1
    while not runs(works):
        fails, works = works, works * 2
        if works > SMALLEST_SIDE_PROBED:
            return None
    while works - fails > 1:
        middle = (fails + works) // 2
        fails, works = (fails, middle) if runs(middle) else (middle, works)
    return works


@dataclasses.dataclass(frozen=True)
class InferenceRecipe:
    """How images become label maps: test-time scales and flip, sliding windows, precision and layout."""

    scales: Tuple[float, ...] = (1.0,)
    flip: bool = False
    slide: bool = False
    window: int = DEFAULT_WINDOW
    stride: int = DEFAULT_STRIDE
    short_side: Optional[int] = None  # resize so that the shorter side has this length first (predict --crop_val)
    slide_above_pixels: Optional[int] = None  # images larger than this are predicted in windows too (and say so)
    amp: str = "off"
    channels_last: bool = False

    def describe(self, inputs: str = "whole images") -> str:
        """The recipe in words, for the log: scales, flip, windows and precision; ``inputs`` says what the predictor
        is given (main.py's --crop_val gives it crops), in front of the windows cut from them."""
        scales = "single scale" if list(self.scales) == [1.0] else "scales " + " ".join(f"{s:g}" for s in self.scales)
        windows = f"windows of {self.window} every {self.stride} pixels"
        parts = [scales, "flipped copies" if self.flip else "no flip", windows if self.slide else inputs]
        if self.slide and inputs != "whole images":
            parts.insert(0, inputs)
        if self.short_side:
            parts.append(f"shorter side {self.short_side}")
        precision = "fp32" if self.amp == "off" else self.amp
        return ", ".join(parts) + f"; {precision}{', channels_last' if self.channels_last else ''}"

    def settings(self) -> Dict[str, object]:
        """What decides the scores (for metrics.json): scales, flip and windows, not speed options."""
        return {"scales": list(self.scales), "flip": self.flip, "slide": self.slide,
                **({"window": self.window, "stride": self.stride} if self.slide else {}),
                **({"short_side": self.short_side} if self.short_side else {})}


class SegmentationPredictor:
    """Label maps for image batches with an :class:`InferenceRecipe`.

    ``prepare`` turns a batch or a window crop as the caller holds it into the model's input (``predict.py``
    moves uint8 crops to the device and normalises them there, so a huge image is never normalised whole).
    ``model`` is any callable from (N, 3, H, W) to class scores: a PyTorch model or an ONNX Runtime session.
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], num_classes: int, recipe: InferenceRecipe,
                 prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x, log: Callable[..., None] = print):
        self.model, self.num_classes, self.recipe, self.prepare, self.log = model, num_classes, recipe, prepare, log
        self._smallest_side: Optional[int] = None  # found on the first image that is too small

    def logits(self, images: torch.Tensor, scales: Optional[Sequence[float]] = None) -> torch.Tensor:
        """Scores (N, C, H, W) of whole images (summed probabilities with test-time augmentation)."""
        scales = self.recipe.scales if scales is None else scales
        return predict_logits(self.model, self.prepare(images), self.recipe.amp, self.recipe.channels_last,
                              scales, self.recipe.flip)

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities (N, C, H, W) of whole images, summed over the test-time variants;
        InputTooSmallError as :meth:`labels`."""
        recipe = self.recipe
        try:
            if list(recipe.scales) == [1.0] and not recipe.flip:
                return self.logits(images).float().softmax(dim=1)
            return self.logits(images)  # already summed probabilities
        except RuntimeError as exc:
            self._raise_if_too_small(images, exc)
            raise

    def _too_large(self, images: torch.Tensor) -> bool:
        """Whether whole images of this size would take unbounded memory: more pixels than slide_above_pixels."""
        height, width = images.shape[-2:]
        return self.recipe.slide_above_pixels is not None and height * width > self.recipe.slide_above_pixels

    def _slides(self, images: torch.Tensor) -> bool:
        recipe = self.recipe
        if recipe.slide:
            return True
        if not self._too_large(images):
            return False
        height, width = images.shape[-2:]
        self.log(f"an image of {width}x{height} is predicted in sliding windows (--window {recipe.window} "
                 f"--stride {recipe.stride}) so that memory stays bounded")
        return True

    def _labels_as_they_are(self, images: torch.Tensor) -> torch.Tensor:
        if self._slides(images):
            return torch.stack([sliding_window_labels(self.logits, image, self.num_classes, self.recipe.window,
                                                      self.recipe.stride) for image in images])
        return self.logits(images).max(1).indices  # max: several times faster than argmax on NCHW CPU tensors

    def _labels_at_short_side(self, images: torch.Tensor) -> torch.Tensor:
        """With ``short_side``: whole images are scaled with the recipe's scales (the scores come back at the
        input size); for windows the image is resized first, the windows slide over the resized image, and its
        labels are scaled back (nearest), so every window is a real crop of what the model sees. So are images over
        ``slide_above_pixels``: their scores at the input size would take C floats a pixel."""
        height, width = images.shape[-2:]
        factor = self.recipe.short_side / min(height, width)
        if not self.recipe.slide and not self._too_large(images):
            return self.logits(images, tuple(s * factor for s in self.recipe.scales)).max(1).indices
        if not self.recipe.slide:
            self.log(f"an image of {width}x{height} is labelled at its shorter side {self.recipe.short_side} and its "
                     "labels are scaled back, so that memory stays bounded")
        size = (max(1, round(height * factor)), max(1, round(width * factor)))
        resized = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False)
        labels = self._labels_as_they_are(resized)
        return F.interpolate(labels[:, None].float(), size=(height, width), mode="nearest")[:, 0].long()

    def labels(self, images: torch.Tensor) -> torch.Tensor:
        """Class indices (N, H, W), int64: on the model's device for whole images, on the CPU from windows.

        InputTooSmallError when the images, at the smallest scale, are too small for the model; it says the
        smallest size the model takes (found by trying, once).
        """
        try:
            if self.recipe.short_side:
                return self._labels_at_short_side(images)
            return self._labels_as_they_are(images)
        except RuntimeError as exc:
            self._raise_if_too_small(images, exc)
            raise

    def _raise_if_too_small(self, images: torch.Tensor, exc: RuntimeError) -> None:
        """InputTooSmallError, from ``exc``, when ``exc`` says that ``images`` were too small for a layer."""
        if is_too_small(exc):
            raise self._too_small_error(images) from exc

    def _too_small_error(self, images: torch.Tensor) -> InputTooSmallError:
        """What was too small, in our words: the image, or the --crop_size or --window it is cut down to, and
        the smallest size the model takes (at the recipe's smallest scale)."""
        height, width = images.shape[-2:]
        if self._smallest_side is None:
            pixel = self.prepare(images[:1, :, :1, :1])  # the model's input: its device, and its bands
            self._smallest_side = smallest_side(
                lambda x: predict_logits(self.model, x, self.recipe.amp, self.recipe.channels_last),
                lambda side: torch.zeros(1, pixel.shape[1], side, side, device=pixel.device)) or 0  # 0: none probed
        recipe, scale = self.recipe, min(self.recipe.scales)
        what, option = f"an image of {width}x{height} is", None
        if recipe.short_side and recipe.short_side < min(height, width):
            what, option = f"--crop_size {recipe.short_side} (--crop_val) is", "--crop_size"
        if recipe.slide and recipe.window < min(height, width, recipe.short_side or height):
            what, option = f"--window {recipe.window} is", "--window"
        at = f" at the smallest scale {scale:g}" if scale != 1 else ""
        side = math.ceil(self._smallest_side / scale)
        needed = f"at least {side}x{side} pixels" if side else f"more than {SMALLEST_SIDE_PROBED} pixels a side"
        return InputTooSmallError(f"{what} smaller than this model takes{at}: {needed}", option)
