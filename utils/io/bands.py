"""Multi-band imagery: which bands a model reads, how they are normalised, and how they are shown as RGB.

A :class:`BandSpec` is what a multi-band checkpoint (or ONNX file) records under ``input_bands``: the 1-based band
numbers it reads from its files (GDAL's convention) in input order, the per-band mean and std in the files' own
units, the files' nodata value, and the bands shown as red, green and blue. Checkpoints of RGB images record
none: they keep the ImageNet normalisation of 8-bit RGB.
"""
import argparse
import dataclasses
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from utils.config import read_yaml_file
from utils.constants import IMAGENET_MEAN, IMAGENET_STD
from utils.utils import Denormalize

__all__ = ["BANDS_KEY", "BandSpec", "BandStats", "band_list", "default_rgb_bands", "read_band_stats_file",
           "normalize_bands",
           "stretch_to_uint8", "display_rgb", "picture", "PREVIEW_PERCENTILES"]

BANDS_KEY = "input_bands"  # the checkpoint's key for :meth:`BandSpec.to_record`
RGB_NAMES = (("r", "red"), ("g", "green"), ("b", "blue"))
PREVIEW_PERCENTILES = (2.0, 98.0)  # the usual stretch of satellite previews: clip the darkest and brightest 2%
SMALLEST_STD = 1e-6  # a constant band (std 0) is divided by this instead


def band_list(text: str) -> Tuple[int, ...]:
    """argparse type for ``4,3,2``: 1-based band numbers, in the order the model reads them."""
    try:
        bands = tuple(int(part) for part in str(text).replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of band numbers such as 4,3,2") from None
    if any(band < 1 for band in bands):
        raise argparse.ArgumentTypeError(f"{text!r}: bands are numbered from 1 (GDAL's convention)")
    if len(set(bands)) != len(bands):
        raise argparse.ArgumentTypeError(f"{text!r} names a band twice")
    return bands


@dataclasses.dataclass(frozen=True)
class BandSpec:
    """The bands a model reads and their normalisation (see the module docstring).

    ``file_bands``: how many bands its files have (inputs with another count are refused). ``names``: the files'
    band descriptions of the bands read ('' where none).
    """

    bands: Tuple[int, ...]
    file_bands: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    nodata: Optional[float] = None
    rgb_bands: Optional[Tuple[int, ...]] = None
    names: Tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return len(self.bands)

    @property
    def rgb_positions(self) -> Optional[Tuple[int, ...]]:
        """Where the RGB bands are among the bands read (0-based), or None (fewer than three bands read)."""
        if self.rgb_bands is None or not set(self.rgb_bands) <= set(self.bands):
            return None
        return tuple(self.bands.index(band) for band in self.rgb_bands)

    def to_record(self) -> Dict[str, object]:
        """Plain data for a checkpoint (``weights_only`` loading reads it) or JSON."""
        return {"bands": list(self.bands), "file_bands": self.file_bands, "mean": list(self.mean),
                "std": list(self.std), "nodata": self.nodata,
                "rgb_bands": list(self.rgb_bands) if self.rgb_bands else None, "names": list(self.names)}

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> "BandSpec":
        """The spec of :meth:`to_record`; ValueError when the record does not hold one."""
        try:
            spec = cls(bands=tuple(int(b) for b in record["bands"]), file_bands=int(record["file_bands"]),
                       mean=tuple(float(v) for v in record["mean"]), std=tuple(float(v) for v in record["std"]),
                       nodata=None if record.get("nodata") is None else float(record["nodata"]),
                       rgb_bands=tuple(int(b) for b in record["rgb_bands"]) if record.get("rgb_bands") else None,
                       names=tuple(str(n) for n in record.get("names") or ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed {BANDS_KEY} record ({exc})") from None
        if not (len(spec.mean) == len(spec.std) == spec.count > 0):
            raise ValueError(f"the {BANDS_KEY} record has {spec.count} bands but {len(spec.mean)} means and "
                             f"{len(spec.std)} stds")
        return spec

    def describe(self) -> str:
        """One line for the log: the bands and their statistics."""
        parts = [f"band {band}{' (' + name + ')' if name else ''} mean {mean:.4g} std {std:.4g}"
                 for band, name, mean, std in zip(self.bands, self.names or ("",) * self.count, self.mean, self.std)]
        nodata = "none" if self.nodata is None else f"{self.nodata:g}"
        return f"{self.count} bands of {self.file_bands}: {'; '.join(parts)}; nodata {nodata}"


def default_rgb_bands(bands: Sequence[int], names: Sequence[str]) -> Optional[Tuple[int, ...]]:
    """The bands shown (and given ImageNet's filters) as R, G, B: those described so (R/red, G/green, B/blue),
    else the first three read; None when fewer than three are read."""
    if len(bands) < 3:
        return None
    lowered = [str(name).strip().lower() for name in names]
    found = [next((band for band, name in zip(bands, lowered) if name in spellings), None)
             for spellings in RGB_NAMES]
    if all(band is not None for band in found):
        return tuple(found)
    return tuple(bands[:3])


class BandStats:
    """Per-band count, mean and sum of squared deviations, merged image by image (Chan et al.'s update, stable
    for large counts of 16-bit values)."""

    def __init__(self, bands: int):
        self.count = np.zeros(bands, np.float64)
        self.mean = np.zeros(bands, np.float64)
        self.m2 = np.zeros(bands, np.float64)

    def add(self, pixels: np.ndarray) -> None:
        """Add (bands, n) valid pixel values."""
        if pixels.shape[1] == 0:
            return
        values = pixels.astype(np.float64)
        mean = values.mean(axis=1)
        self._combine(np.full(len(mean), float(values.shape[1])), mean, ((values - mean[:, None]) ** 2).sum(axis=1))

    def merge(self, other: "BandStats") -> None:
        """Add the pixels ``other`` has counted."""
        self._combine(other.count, other.mean, other.m2)

    def _combine(self, count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        total = self.count + count
        share = np.divide(count, total, out=np.zeros_like(total), where=total > 0)
        delta = mean - self.mean
        self.mean = self.mean + delta * share
        self.m2 = self.m2 + m2 + delta ** 2 * self.count * share
        self.count = total

    def result(self) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        """(mean, std) per band; a band without spread gets std SMALLEST_STD, so that dividing by it is defined."""
        std = np.sqrt(self.m2 / np.maximum(self.count, 1.0))
        return tuple(self.mean.tolist()), tuple(np.maximum(std, SMALLEST_STD).tolist())


def read_band_stats_file(path: str, bands: Sequence[int], file_bands: int) -> Tuple[Tuple[float, ...],
                                                                                       Tuple[float, ...]]:
    """(mean, std) of the ``bands`` read, from ``--band_stats FILE.yaml`` (``mean: [...]``, ``std: [...]``): one
    value per band of the files (the bands read are picked from them) or one per band read. ValueError naming the
    file otherwise."""
    spec = read_yaml_file(path, "--band_stats", "`mean: [...]` and `std: [...]`")
    lists: List[Tuple[float, ...]] = []
    for key in ("mean", "std"):
        values = spec.get(key)
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise ValueError(f"--band_stats {path}: `{key}` must be a list of numbers")
        if len(values) == file_bands:
            values = [values[band - 1] for band in bands]
        elif len(values) != len(bands):
            raise ValueError(f"--band_stats {path}: `{key}` has {len(values)} values; give one per band of the files "
                             f"({file_bands}) or per band read ({len(bands)})")
        lists.append(tuple(float(v) for v in values))
    if any(v <= 0 for v in lists[1]):
        raise ValueError(f"--band_stats {path}: every `std` must be positive")
    return lists[0], lists[1]


def normalize_bands(images: torch.Tensor, spec: BandSpec) -> torch.Tensor:
    """Raw band values (N, C, H, W), any dtype -> float32, ``(value - mean) / std`` per band."""
    mean = torch.tensor(spec.mean, device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
    return (images.float() - mean) / std


def stretch_to_uint8(values: np.ndarray, valid: Optional[np.ndarray] = None,
                     percentiles: Tuple[float, float] = PREVIEW_PERCENTILES) -> np.ndarray:
    """(C, H, W) values -> uint8, each band stretched linearly from its low to its high percentile (over the
    ``valid`` pixels when given); 0 where not valid."""
    out = np.zeros(values.shape, np.uint8)
    for band, plane in enumerate(values):
        chosen = plane[valid] if valid is not None else plane.ravel()
        chosen = chosen[np.isfinite(chosen)]
        if chosen.size == 0:
            continue
        low, high = np.percentile(chosen, percentiles)
        scaled = (plane.astype(np.float32) - low) / max(float(high - low), 1e-12) * 255.0
        out[band] = np.nan_to_num(np.clip(scaled, 0, 255), nan=0.0).round().astype(np.uint8)
    if valid is not None:
        out[:, ~valid] = 0
    return out


def display_rgb(bands: np.ndarray, rgb_positions: Optional[Sequence[int]],
                valid: Optional[np.ndarray] = None) -> np.ndarray:
    """(3, H, W) uint8 picture of (C, H, W) band values: the bands at ``rgb_positions`` (else the first band as
    gray), stretched 2-98 %."""
    chosen = bands[list(rgb_positions)] if rgb_positions else np.repeat(bands[:1], 3, axis=0)
    return stretch_to_uint8(chosen, valid)


def picture(image: np.ndarray, spec: Optional[BandSpec]) -> np.ndarray:
    """(3, H, W) uint8 picture of a normalised (C, H, W) model input, for dashboards and saved results: an RGB
    image (``spec`` None) denormalised with ImageNet's statistics, else the RGB bands stretched 2-98 %."""
    if spec is None:
        return (Denormalize(IMAGENET_MEAN, IMAGENET_STD)(image) * 255).clip(0, 255).astype(np.uint8)
    return display_rgb(image, spec.rgb_positions)
