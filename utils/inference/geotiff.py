"""Predicting a multi-band scene window by window: rows of bands read from the file, sliding windows whose
probabilities are summed where they overlap (each weighted down towards its own edges, so that no seam shows), and
rows of labels written to a georeferenced GeoTIFF as they are finished, so memory stays bounded whatever the
scene's size.

Outputs, beside the ``stem`` given: ``_label.tif`` (single-band uint8 class indices on the input's grid: CRS,
transform and size; 255 where the input is nodata; the palette as its colour table; tiled, DEFLATE), and the PNG
previews ``.png`` (colours) and ``_overlay.png`` (over the RGB bands stretched 2-98 %), at most
:data:`PREVIEW_MAX_SIDE` pixels a side. Every file appears whole or not at all.
"""
import contextlib
import math
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from utils.io.atomic import atomic_write
from utils.io.bands import BandSpec, stretch_to_uint8
from utils.constants import IGNORE_INDEX
from utils.inference.predictor import sliding_window_rows
from utils.inference.outputs import IMAGE_SUFFIXES, OVERLAY_ALPHA, SCENE_LABEL_SUFFIX, overlay, save_png
from utils.io.own_outputs import OWN_MARK, TIFF_MARK_KEY
from utils.io.raster import RasterError, RasterFile, RasterInfo, import_rasterio, not_georeferenced_is_fine

__all__ = ["PREVIEW_KINDS", "PREVIEW_MAX_SIDE", "GeoLabelWriter", "predict_scene"]

PREVIEW_KINDS = ("color", "overlay")
PREVIEW_MAX_SIDE = 4096  # larger scenes get previews scaled down (every k-th pixel); the label GeoTIFF is whole
TILE_SIDE = 256  # GeoTIFF tiles of the label map


class GeoLabelWriter:
    """The label GeoTIFF of a scene (see the module docstring), written row band by row band with
    :meth:`write_rows`; a context manager: the file appears when it ends without an error."""

    def __init__(self, path: str, info: RasterInfo, colour_table: np.ndarray):
        self.path, self.info, self.colour_table = path, info, colour_table
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "GeoLabelWriter":
        rasterio = import_rasterio()
        info = self.info
        georeference = dict(crs=info.crs, transform=info.transform) if info.georeferenced else {}
        with self._stack:
            target = self._stack.enter_context(atomic_write(self.path))
            self._stack.enter_context(not_georeferenced_is_fine())  # a scene without a CRS gives a plain TIFF
            self._dst = self._stack.enter_context(rasterio.open(
                target, "w", driver="GTiff", width=info.width, height=info.height, count=1, dtype="uint8",
                nodata=IGNORE_INDEX, compress="deflate", tiled=True, blockxsize=TILE_SIDE,
                blockysize=TILE_SIDE, **georeference))
            self._stack = self._stack.pop_all()
        return self

    def write_rows(self, top: int, labels: np.ndarray) -> None:
        """Rows ``top:top + h`` of (h, W) uint8 class indices (255: nodata)."""
        window = import_rasterio().windows.Window(0, top, labels.shape[1], labels.shape[0])
        self._dst.write(labels[None], window=window)

    def __exit__(self, *exc) -> Optional[bool]:
        if exc[0] is None:
            self._dst.update_tags(**{TIFF_MARK_KEY: OWN_MARK})  # a later run that walks this folder knows it
            self._dst.write_colormap(1, {index: (*map(int, colour), 255) for index, colour in
                                         enumerate(self.colour_table)})
        return self._stack.__exit__(*exc)


class _Previews:
    """Every ``step``-th row and column of the labels and of the RGB bands, as they are emitted; then the PNGs."""

    def __init__(self, info: RasterInfo, kinds: Sequence[str]):
        self.kinds = [kind for kind in kinds if kind in PREVIEW_KINDS]
        self.step = max(1, math.ceil(max(info.width, info.height) / PREVIEW_MAX_SIDE))
        height, width = math.ceil(info.height / self.step), math.ceil(info.width / self.step)
        self.labels = np.zeros((height, width), np.uint8)
        self.rgb = np.zeros((3, height, width), np.float32) if "overlay" in self.kinds else None

    def add(self, top: int, labels: np.ndarray, rgb: Optional[np.ndarray]) -> None:
        first = -top % self.step  # the first row of this band that the previews keep
        rows = slice(first, labels.shape[0], self.step)
        at = slice((top + first) // self.step, (top + first) // self.step + len(range(*rows.indices(len(labels)))))
        self.labels[at] = labels[rows, ::self.step]
        if self.rgb is not None:
            self.rgb[:, at] = rgb[:, rows, ::self.step]

    def save(self, base: str, palette: np.ndarray, alpha: float) -> None:
        colours = palette[self.labels]
        for kind in self.kinds:
            if kind == "color":
                picture = colours
            else:
                valid = self.labels != IGNORE_INDEX
                rgb = stretch_to_uint8(self.rgb, valid).transpose(1, 2, 0)
                picture = overlay(rgb, colours, alpha)
            save_png(Image.fromarray(picture), base + IMAGE_SUFFIXES[kind])


def predict_scene(path: str, base: str, spec: BandSpec, probabilities: Callable[[torch.Tensor], torch.Tensor],
                  num_classes: int, window: int, stride: int, kinds: Sequence[str], colour_table: np.ndarray,
                  rgb_bands: Optional[Sequence[int]] = None, overlay_alpha: float = OVERLAY_ALPHA) -> RasterInfo:
    """Predict the scene at ``path`` (its bands as ``spec`` says) and write the outputs of ``kinds`` at ``base``
    (see the module docstring); returns what the input holds.

    ``probabilities`` maps a (1, C, h, w) crop of raw band values to summed class probabilities; ``rgb_bands``
    (file band numbers) are what the overlay shows (else a gray picture of the first band read). RasterError for an
    input with another band count than the model's files, or that cannot be read.
    """
    with RasterFile(path, "input") as src:
        info = src.info
        if info.count != spec.file_bands:
            raise RasterError(f"input {path} has {info.count} band(s) but the model reads bands "
                              f"{','.join(map(str, spec.bands))} of {spec.file_bands}-band images; give it such images")
        shown = tuple(rgb_bands) if rgb_bands else spec.bands[:1] * 3
        src.check_bands(shown)
        nodata = src.nodata_values(spec.bands, spec.nodata)
        previews = _Previews(info, kinds)
        strip: Dict[str, np.ndarray] = {}

        def read_rows(top: int, bottom: int) -> torch.Tensor:
            values, strip["missing"] = src.read(spec.bands, top, bottom, nodata)
            return torch.from_numpy(values)

        with contextlib.ExitStack() as stack:
            writer = stack.enter_context(GeoLabelWriter(base + SCENE_LABEL_SUFFIX, info, colour_table)) \
                if "label" in kinds else None

            def emit(top: int, rows: torch.Tensor) -> None:
                labels = rows.to(torch.uint8).numpy()
                labels[strip["missing"][:len(labels)]] = IGNORE_INDEX  # emitted rows start the last strip read
                if writer is not None:
                    writer.write_rows(top, labels)
                if previews.kinds:
                    rgb = src.read(shown, top, top + len(labels))[0] if previews.rgb is not None else None
                    previews.add(top, labels, rgb)

            sliding_window_rows(probabilities, read_rows, info.height, info.width, num_classes, window, stride, emit,
                                taper=True)
        if previews.kinds:
            previews.save(base, colour_table, overlay_alpha)
    return info
