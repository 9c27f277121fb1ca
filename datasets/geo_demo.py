"""A small synthetic multi-band dataset in the folder layout (``make demo-geo``): 4-band uint16 GeoTIFF tiles in which
one class can be told from the background only in the near-infrared.

Bands 1-3 are red, green and blue and band 4 near-infrared (NIR), as reflectance x 10000 (as Sentinel-2 products
store it), described so in the files. Classes: ``vegetation`` (the background), ``water`` (dark and blue: seen in
RGB) and ``artificial_turf``, which has vegetation's colours but reflects little NIR (plastic), so a model that
reads RGB alone cannot find it. Tiles lie side by side in UTM zone 33N (EPSG:32633), 10 m pixels; some are cut by
the edge of the swath, where every band is 0, the files' nodata. ``scene.tif`` is a larger scene to predict,
with its true classes in ``scene_truth.tif``.
"""
import os
from typing import Tuple

import numpy as np
from PIL import Image, ImageDraw

from utils.io.raster import import_rasterio, write_raster

from .folder import write_splits_and_classes
from .utils import generate_once

__all__ = ["make_geo_dataset", "CLASS_NAMES", "PALETTE", "BAND_NAMES", "SCENE_FILE", "SCENE_TRUTH_FILE"]

CLASS_NAMES = ("vegetation", "water", "artificial_turf")
PALETTE = ((40, 160, 60), (30, 80, 200), (230, 120, 30))
BAND_NAMES = ("Red", "Green", "Blue", "NIR")
# Mean reflectance x 10000 per band (R, G, B, NIR) of each class: turf has vegetation's colours, not its NIR.
REFLECTANCE = ((600, 900, 500, 3500), (400, 600, 900, 300), (600, 900, 500, 1200))
TEXTURE_STD = (70, 90, 60, 350)  # smooth variation within a class, per band
NOISE_STD = (25, 25, 25, 80)  # sensor noise, per band
TEXTURE_CELLS = 6  # the smooth texture's grid over a tile (of TILE_AREA_SIDE pixels a side)
TILE_AREA_SIDE = 128  # shapes and texture are drawn per this many pixels a side, whatever the image's size
WATER_PER_TILE, TURF_PER_TILE = 1.0, 2.0  # mean count of each kind of shape
CRS = "EPSG:32633"
ORIGIN = (500000.0, 5101000.0)  # west and north edge of the first tile: near 46.05 N, 15 E
PIXEL_SIZE = 10.0  # metres, Sentinel-2's visible and NIR resolution
NODATA = 0
SWATH_EDGE_SHARE = 0.2  # of tiles cut by the swath's edge (nodata beyond it)
SCENE_FILE, SCENE_TRUTH_FILE = "scene.tif", "scene_truth.tif"
VERSION = "2"  # bump when the generator changes, so stale data is regenerated
STAMP_FILE = "geo_demo_version.txt"  # written last: only a complete dataset has it


def _classes(size: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) uint8 class map: water bodies (ellipses) and sports fields of turf (rotated rectangles), as many per
    area in a large scene as in a tile."""
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    tiles = (size / TILE_AREA_SIDE) ** 2
    for _ in range(int(rng.poisson(WATER_PER_TILE * tiles))):
        cx, cy = rng.uniform(0, size, 2)
        rx, ry = rng.uniform(8, 28, 2)
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=1)
    for _ in range(max(1, int(rng.poisson(TURF_PER_TILE * tiles)))):
        cx, cy = rng.uniform(0, size, 2)
        half_w, half_h = rng.uniform(6, 20), rng.uniform(4, 12)
        angle = rng.uniform(0, np.pi)
        corners = [(-half_w, -half_h), (half_w, -half_h), (half_w, half_h), (-half_w, half_h)]
        draw.polygon([(cx + x * np.cos(angle) - y * np.sin(angle), cy + x * np.sin(angle) + y * np.cos(angle))
                      for x, y in corners], fill=2)
    return np.asarray(layer)


def _bands(classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(4, H, W) uint16 reflectance for a class map: class means, smooth texture, noise, a scene-wide gain."""
    size = classes.shape[0]
    means = np.asarray(REFLECTANCE, np.float32)[classes].transpose(2, 0, 1)
    cells = max(2, round(TEXTURE_CELLS * size / TILE_AREA_SIDE))
    texture = np.stack([np.asarray(Image.fromarray(rng.normal(0, std, (cells, cells)).astype(np.float32),
                                                   mode="F").resize((size, size), Image.BICUBIC))
                        for std in TEXTURE_STD])
    noise = rng.normal(0, 1, means.shape) * np.asarray(NOISE_STD, np.float32)[:, None, None]
    values = (means + texture + noise) * rng.uniform(0.9, 1.1)
    return np.clip(values, 1, 65535).round().astype(np.uint16)  # 0 is nodata


def _cut_by_swath_edge(values: np.ndarray, rng: np.random.Generator) -> None:
    """Set every band to nodata beyond a straight edge across one corner, in place."""
    size = values.shape[1]
    rows, cols = np.mgrid[0:size, 0:size]
    reach = rng.uniform(0.3, 0.8) * size
    values[:, rows + cols < reach] = NODATA


def _write_tile(path: str, values: np.ndarray, west: float, north: float, nodata=None, descriptions=()) -> None:
    transform = import_rasterio().transform.Affine(PIXEL_SIZE, 0.0, west, 0.0, -PIXEL_SIZE, north)  # north up
    write_raster(path, values, CRS, transform, nodata, descriptions)


def _sample(size: int, rng: np.random.Generator, swath_edge: bool) -> Tuple[np.ndarray, np.ndarray]:
    classes = _classes(size, rng)
    values = _bands(classes, rng)
    if swath_edge:
        _cut_by_swath_edge(values, rng)
    return values, classes


def _write(folder: str, num_train: int, num_val: int, size: int, scene_size: int, seed: int) -> None:
    for sub in ("images", "masks", "splits"):
        os.makedirs(os.path.join(folder, sub))
    names = [f"geo_{i:05d}" for i in range(num_train + num_val)]
    per_row = int(np.ceil(np.sqrt(len(names))))
    for index, name in enumerate(names):
        rng = np.random.default_rng([seed, index])  # one stream per tile
        values, classes = _sample(size, rng, rng.random() < SWATH_EDGE_SHARE)
        west = ORIGIN[0] + (index % per_row) * size * PIXEL_SIZE
        north = ORIGIN[1] - (index // per_row) * size * PIXEL_SIZE
        _write_tile(os.path.join(folder, "images", name + ".tif"), values, west, north, NODATA, BAND_NAMES)
        _write_tile(os.path.join(folder, "masks", name + ".tif"), classes[None], west, north)
    write_splits_and_classes(folder, {"train": names[:num_train], "val": names[num_train:]}, CLASS_NAMES, PALETTE)
    values, classes = _sample(scene_size, np.random.default_rng([seed, len(names)]), swath_edge=True)
    west, north = ORIGIN[0], ORIGIN[1] - (per_row + 1) * size * PIXEL_SIZE  # south of the tiles
    _write_tile(os.path.join(folder, SCENE_FILE), values, west, north, NODATA, BAND_NAMES)
    _write_tile(os.path.join(folder, SCENE_TRUTH_FILE), classes[None], west, north)


def make_geo_dataset(root: str, num_train: int = 96, num_val: int = 24, size: int = 128, scene_size: int = 1024,
                     seed: int = 0) -> str:
    """Write the multi-band demo to ``root`` unless the same one is already there; return ``root``
    (see :func:`datasets.utils.generate_once`)."""
    if num_train < 1 or num_val < 1:
        raise ValueError(f"need at least one training and one validation tile (got {num_train} and {num_val})")
    if size < 32 or scene_size < 32:
        raise ValueError(f"tiles and the scene need 32 pixels a side or more (got {size} and {scene_size})")
    expected = f"{VERSION} {num_train} {num_val} {size} {scene_size} {seed}"
    total = num_train + num_val
    return generate_once(root, STAMP_FILE, expected, [("images", total), ("masks", total)],
                         lambda folder: _write(folder, num_train, num_val, size, scene_size, seed))
