"""Rasters (GeoTIFF, and whatever else GDAL reads) through rasterio: the optional import, what a file holds, and
its bands row by row with their nodata mask; errors name the file.

rasterio is optional: it is imported only when multi-band imagery is read or written (:func:`import_rasterio`).
Band values come back as uint8 when the file is 8-bit, else as float32 (exact for 16-bit integers).
"""
import contextlib
import dataclasses
import math
import warnings
from types import ModuleType
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from utils.io.optional_packages import import_optional

__all__ = ["RasterError", "import_rasterio", "is_raster_image", "RasterInfo", "RasterFile",
           "same_grid_problem", "write_raster", "not_georeferenced_is_fine"]

# The TIFF tags that georeference a GeoTIFF: ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory.
GEOTIFF_TAGS = (33550, 33922, 34264, 34735)
# What PIL opens as an ordinary picture (read as 8-bit RGB, as before multi-band support).
PICTURE_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I;16B", "I;16L")
TIFF_EXTENSIONS = (".tif", ".tiff")


class RasterError(ValueError):
    """A raster that cannot be read or used as it is (or rasterio missing); the message names the file."""


def import_rasterio() -> ModuleType:
    """The ``rasterio`` package; a RasterError with the pip command when it is not installed."""
    return import_optional("rasterio", "multi-band and GeoTIFF imagery", RasterError)


def is_raster_image(path: str) -> bool:
    """Whether ``path`` is a TIFF that holds imagery rather than a picture: georeferenced (a GeoTIFF), or with bands
    or a data type that a picture does not have (PIL cannot open it, or opens it as float or signed integers)."""
    if not path.lower().endswith(TIFF_EXTENSIONS):
        return False
    try:
        with Image.open(path) as img:
            tags = getattr(img, "tag_v2", {})
            return any(tag in tags for tag in GEOTIFF_TAGS) or img.mode not in PICTURE_MODES
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return True


@dataclasses.dataclass(frozen=True)
class RasterInfo:
    """What a raster file holds: size, band count and data type, nodata per band, georeferencing, descriptions."""

    path: str
    width: int
    height: int
    count: int
    dtype: str
    nodata: Tuple[Optional[float], ...]
    crs: Optional[object]  # rasterio's CRS, None when the file has none
    transform: object  # rasterio's Affine (the identity for a file that is not georeferenced)
    descriptions: Tuple[str, ...]

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None


@contextlib.contextmanager
def not_georeferenced_is_fine() -> Iterator[None]:
    """Silence rasterio's warning about files without georeferencing: a PNG or a plain TIFF is fine here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", import_rasterio().errors.NotGeoreferencedWarning)
        yield


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def same_grid_problem(image: RasterInfo, mask: RasterInfo) -> Optional[str]:
    """Why ``mask`` does not lie on ``image``'s pixels (another size, transform or CRS), completing "mask PATH ...";
    None when it does. A file without georeferencing is compared by size alone."""
    if (mask.width, mask.height) != (image.width, image.height):
        return (f"is {mask.width}x{mask.height} but image {image.path} is {image.width}x{image.height}; they must be "
                "the same size")
    if image.georeferenced and mask.georeferenced:
        if image.crs != mask.crs:
            return f"has CRS {mask.crs} but image {image.path} has {image.crs}; save the mask in the image's CRS"
        if not mask.transform.almost_equals(image.transform):
            return (f"has another geotransform than image {image.path} ({tuple(mask.transform)[:6]} against "
                    f"{tuple(image.transform)[:6]}): it is shifted or scaled; resample it onto the image's grid")
    return None


class RasterFile:
    """An open raster, read band by band and row by row; a context manager that closes it.

    ``what`` names it in errors ("image", "mask", "input").
    """

    def __init__(self, path: str, what: str = "image"):
        rasterio = import_rasterio()
        self.path, self.what = path, what
        with not_georeferenced_is_fine():
            try:
                self._src = rasterio.open(path)
            except (rasterio.errors.RasterioError, OSError) as exc:
                raise RasterError(f"cannot read {what} {path}: {_first_line(exc)}") from None
            src = self._src
            self.info = RasterInfo(path, src.width, src.height, src.count, src.dtypes[0], tuple(src.nodatavals),
                                   src.crs, src.transform, tuple(d or "" for d in src.descriptions))

    def __enter__(self) -> "RasterFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._src.close()

    def check_bands(self, bands: Sequence[int]) -> None:
        """RasterError when a band number is beyond the file's bands."""
        beyond = [band for band in bands if band > self.info.count]
        if beyond:
            raise RasterError(f"{self.what} {self.path} has {self.info.count} band(s); band {beyond[0]} does not "
                              "exist (bands are numbered from 1: check --bands and --rgb_bands)")

    def nodata_values(self, bands: Sequence[int], fallback: Optional[float] = None) -> Optional[Tuple[float, ...]]:
        """The nodata value of each band of ``bands`` (``fallback`` for a file that declares none), or None when
        one of them has none: then no pixel is nodata."""
        values = [self.info.nodata[band - 1] for band in bands]
        if all(value is None for value in values) and fallback is not None:
            values = [fallback] * len(values)
        return None if any(value is None for value in values) else tuple(float(v) for v in values)

    def read(self, bands: Sequence[int], top: int = 0, bottom: Optional[int] = None,
             nodata: Optional[Sequence[float]] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Rows ``top:bottom`` (all by default) of ``bands`` as (C, h, W) uint8 or float32 values, and the (h, W) mask
        of nodata pixels: equal to ``nodata`` (one value per band) in every band. Nodata NaNs become 0; any other NaN
        is a RasterError."""
        rasterio = import_rasterio()
        bottom = self.info.height if bottom is None else min(bottom, self.info.height)
        window = rasterio.windows.Window(0, top, self.info.width, bottom - top)
        try:
            values = self._src.read(list(bands), window=window)
        except (rasterio.errors.RasterioError, OSError) as exc:
            raise RasterError(f"cannot read {self.what} {self.path}: {_first_line(exc)}") from None
        missing = np.zeros(values.shape[1:], bool)
        if nodata is not None:
            missing = np.logical_and.reduce([np.isnan(plane) if math.isnan(value) else plane == value
                                             for plane, value in zip(values, nodata)])
        if values.dtype.kind == "f":
            nans = np.isnan(values)
            if nans.any():
                if (nans & ~missing).any():
                    raise RasterError(f"{self.what} {self.path} has NaN pixels that are not its nodata; fill them, or "
                                      "set the file's nodata to nan (gdal_edit.py -a_nodata nan) if they mean no data")
                values[nans] = 0
        return (values if values.dtype == np.uint8 else values.astype(np.float32)), missing


def write_raster(path: str, values: np.ndarray, crs: Optional[str] = None, transform: Optional[object] = None,
                 nodata: Optional[float] = None, descriptions: Sequence[str] = ()) -> None:
    """A (bands, H, W) array as a DEFLATE-compressed GeoTIFF, georeferenced when ``crs`` and ``transform`` (an
    Affine) are given; ``descriptions`` name the bands."""
    rasterio = import_rasterio()
    georeference = dict(crs=crs, transform=transform) if crs is not None else {}
    with not_georeferenced_is_fine(), rasterio.open(path, "w", driver="GTiff", width=values.shape[2], height=values.shape[1], count=values.shape[0],
                       dtype=values.dtype.name, nodata=nodata, compress="deflate", **georeference) as dst:
        dst.write(values)
        for band, description in enumerate(descriptions, start=1):
            dst.set_band_description(band, description)
