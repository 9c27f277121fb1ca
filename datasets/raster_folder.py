"""Your own multi-band imagery: the folder layout of :mod:`datasets.folder` with images of any band count and data type
(GeoTIFF, or anything GDAL reads), read through rasterio.

* ``bands`` (``--bands 4,3,2``, 1-based) picks and orders the bands read; by default all of them. Every image must
  have the same band count.
* Masks are index PNGs (or RGB ones, as in the folder layout) or single-band GeoTIFFs with the image's stem; a
  GeoTIFF mask must lie on the image's pixels (same size, geotransform and CRS).
* Pixels equal to the file's nodata value in every band read are 255 in the target (ignored by the losses and the
  metrics), whatever the mask says there.

Samples are ``(bands array (C, H, W), mask)`` before the transform: uint8 for 8-bit files, else float32.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from utils.constants import IGNORE_INDEX
from utils.io.raster import TIFF_EXTENSIONS, RasterFile, RasterInfo, is_raster_image, same_grid_problem

from .folder import FolderSegmentation
from .utils import DatasetError

__all__ = ["RasterFolderSegmentation", "holds_rasters", "MAX_READERS"]

MAX_READERS = 8  # threads reading file headers and bands: GDAL releases the GIL


def holds_rasters(root: str) -> bool:
    """Whether ``root/images`` holds multi-band imagery: its first TIFF is a GeoTIFF or not an ordinary picture
    (:func:`utils.raster.is_raster_image`). Folders of pictures (JPEG, PNG, RGB TIFF) are read as 8-bit RGB."""
    folder = os.path.join(os.path.expanduser(root), "images")
    if not os.path.isdir(folder):
        return False
    tiffs = sorted(name for name in os.listdir(folder) if name.lower().endswith(TIFF_EXTENSIONS))
    return bool(tiffs) and is_raster_image(os.path.join(folder, tiffs[0]))


def _header(path: str) -> RasterInfo:
    with RasterFile(path) as src:
        return src.info


def _picture_info(path: str, size: Tuple[int, int]) -> RasterInfo:
    """What a mask picture (PNG) holds, for :func:`same_grid_problem`: a size, no georeferencing."""
    return RasterInfo(path, size[0], size[1], 1, "uint8", (None,), None, None, ())


def _check_grid(image: RasterInfo, mask: RasterInfo) -> None:
    problem = same_grid_problem(image, mask)
    if problem:
        raise DatasetError(f"mask {mask.path} {problem}")


class RasterFolderSegmentation(FolderSegmentation):
    """Image/mask pairs from ``root`` (see the module docstring); ``nodata`` is the value taken for files that
    declare none (a checkpoint's record), None to take only what each file declares."""

    mask_extensions = (".png",) + TIFF_EXTENSIONS

    def __init__(self, root: str, split: Optional[str] = "train", transform: Optional[Callable] = None,
                 bands: Optional[Sequence[int]] = None, classes_file: Optional[str] = None,
                 nodata: Optional[float] = None):
        super().__init__(root, split, transform, classes_file)
        with ThreadPoolExecutor(min(MAX_READERS, len(self.images))) as pool:
            headers = list(pool.map(_header, self.images))
        first = headers[0]
        for header in headers[1:]:
            if header.count != first.count:
                raise DatasetError(f"image {header.path} has {header.count} bands but {first.path} has "
                                   f"{first.count}; every image must have the same bands")
        self.file_bands = first.count
        self.bands: Tuple[int, ...] = tuple(bands) if bands else tuple(range(1, first.count + 1))
        beyond = [band for band in self.bands if band > first.count]
        if beyond:
            raise DatasetError(f"band {beyond[0]} (--bands) does not exist: image {first.path} has {first.count} "
                               "band(s), numbered from 1")
        self.band_names = tuple(first.descriptions[band - 1] for band in self.bands)
        declared = first.nodata[self.bands[0] - 1]
        self.nodata = nodata if declared is None else declared
        with ThreadPoolExecutor(min(MAX_READERS, len(self.images))) as pool:  # masks on their images' pixels, now
            list(pool.map(lambda index: self._check_mask_header(index, headers[index]), range(len(self.images))))

    def read_bands(self, index: int, top: int = 0, bottom: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray,
                                                                                          RasterInfo]:
        """Rows ``top:bottom`` of the bands read of image ``index``, their nodata mask, and the file's header."""
        with RasterFile(self.images[index]) as src:
            src.check_bands(self.bands)
            values, missing = src.read(self.bands, top, bottom, src.nodata_values(self.bands, self.nodata))
            return values, missing, src.info

    def load_pair(self, index: int) -> Tuple[np.ndarray, Image.Image]:
        values, missing, info = self.read_bands(index)
        mask = np.array(self.encode_mask(self.read_mask(index, info), self.masks[index]))
        mask[missing] = IGNORE_INDEX
        return values, Image.fromarray(mask, mode="L")

    def load_target(self, index: int) -> np.ndarray:
        target = np.array(self.encode_mask(self.read_mask(index), self.masks[index]))
        with RasterFile(self.images[index]) as src:
            nodata = src.nodata_values(self.bands, self.nodata)
        if nodata is not None:  # only then does the image need reading
            target[self.read_bands(index)[1]] = IGNORE_INDEX
        return target

    def _check_mask_header(self, index: int, image: RasterInfo) -> None:
        path = self.masks[index]
        if path.lower().endswith(TIFF_EXTENSIONS):
            with RasterFile(path, "mask") as src:
                _check_grid(image, src.info)
        else:
            with Image.open(path) as mask:
                _check_grid(image, _picture_info(path, mask.size))

    def read_mask(self, index: int, image: Optional[RasterInfo] = None) -> Image.Image:
        """The stored mask of sample ``index`` (a PIL image), checked to lie on ``image``'s pixels when given."""
        path = self.masks[index]
        if not path.lower().endswith(TIFF_EXTENSIONS):
            mask = super().read_mask(index)
            if image is not None:
                _check_grid(image, _picture_info(path, mask.size))
            return mask
        with RasterFile(path, "mask") as src:
            if src.info.count != 1:
                raise DatasetError(f"mask {path} has {src.info.count} bands; save it as a single band of class indices")
            if image is not None:
                _check_grid(image, src.info)
            values = src.read((1,))[0][0]
        if values.dtype != np.uint8:
            if values.size and (values.min() < 0 or values.max() > 255 or not np.array_equal(values, np.round(values))):
                raise DatasetError(f"mask {path} holds values that are not class indices 0-255; save whole numbers")
            values = values.astype(np.uint8)
        return Image.fromarray(values, mode="L")

    def label_spec(self) -> str:
        return repr((super().label_spec(), self.bands, self.nodata))
