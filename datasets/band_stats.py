"""Per-band statistics of multi-band imagery and the :class:`BandSpec` a training run normalises with.

The mean and std of every band read are computed once over the training split's valid (not nodata) pixels,
streamed a block of rows at a time, and cached in ``root/.band_stats/`` under a fingerprint of the images (paths,
sizes, modification times) and the bands read, so new or changed images are counted again.
"""
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence, Tuple

from tqdm import tqdm

from utils.io.atomic import atomic_write
from utils.io.bands import BandSpec, BandStats, default_rgb_bands, read_band_stats_file
from utils.io.locks import file_lock

from .raster_folder import MAX_READERS, RasterFolderSegmentation
from .utils import BAND_STATS_DIR, DatasetError

__all__ = ["band_stats_key", "compute_band_stats", "load_band_stats", "resolve_band_spec"]

STATS_DIR = BAND_STATS_DIR
STATS_VERSION = 1  # bump when the computation changes, so old caches are computed again
ROWS_PER_READ = 1024  # a block of rows at a time: a large image is never held whole

Stats = Tuple[Tuple[float, ...], Tuple[float, ...]]


def band_stats_key(dataset: RasterFolderSegmentation) -> str:
    """A sha256 hex digest of what the statistics depend on: the bands read, the nodata value, and every image's
    path (relative to the root), size and modification time."""
    digest = hashlib.sha256(repr((STATS_VERSION, dataset.bands, dataset.nodata)).encode())
    for path in sorted(dataset.images):
        stat = os.stat(path)
        digest.update(f"{os.path.relpath(path, dataset.root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _image_stats(dataset: RasterFolderSegmentation, index: int) -> BandStats:
    stats, top = BandStats(len(dataset.bands)), 0
    while True:
        values, missing, info = dataset.read_bands(index, top, top + ROWS_PER_READ)
        stats.add(values[:, ~missing])
        top += ROWS_PER_READ
        if top >= info.height:
            return stats


def compute_band_stats(dataset: RasterFolderSegmentation) -> Stats:
    """(mean, std) per band read over every image of ``dataset`` (with a progress bar); no caching."""
    total = BandStats(len(dataset.bands))
    pool = ThreadPoolExecutor(min(MAX_READERS, os.cpu_count() or 1))
    try:
        for stats in tqdm(pool.map(lambda index: _image_stats(dataset, index), range(len(dataset))),
                          total=len(dataset), desc="band statistics", disable=None):
            total.merge(stats)
    finally:
        pool.shutdown(cancel_futures=True)  # a bad image stops the count now, not after every other image
    return total.result()


def load_band_stats(dataset: RasterFolderSegmentation, log: Callable[[str], None] = print) -> Stats:
    """The statistics of ``dataset``, from its cache when the images are unchanged, else computed and cached.
    Processes that share the folder compute one at a time; the later ones read the first one's cache."""
    key = band_stats_key(dataset)
    folder = os.path.join(dataset.root, STATS_DIR)
    path = os.path.join(folder, f"{key[:32]}.json")
    with file_lock(os.path.join(folder, ".lock")):
        try:
            with open(path) as f:
                cached = json.load(f)
            if cached["key"] == key:
                return tuple(cached["mean"]), tuple(cached["std"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # missing or unreadable: compute again
        mean, std = compute_band_stats(dataset)
        try:
            with atomic_write(path) as f:
                f.write(json.dumps({"key": key, "bands": list(dataset.bands), "mean": mean, "std": std}).encode())
        except OSError as exc:
            log(f"note: cannot cache band statistics in {folder} ({exc.strerror or exc}); they are computed again on "
                "the next run")
    return mean, std


def _rgb_bands(dataset: RasterFolderSegmentation, rgb_bands: Optional[Sequence[int]]) -> Optional[Tuple[int, ...]]:
    if rgb_bands is None:
        return default_rgb_bands(dataset.bands, dataset.band_names)
    if len(rgb_bands) != 3 or not set(rgb_bands) <= set(dataset.bands):
        raise DatasetError(f"--rgb_bands {','.join(map(str, rgb_bands))} must be three of the bands read "
                           f"({','.join(map(str, dataset.bands))})")
    return tuple(rgb_bands)


def resolve_band_spec(dataset: RasterFolderSegmentation, rgb_bands: Optional[Sequence[int]] = None,
                      stats_file: Optional[str] = None, recorded: Optional[BandSpec] = None,
                      log: Callable[[str], None] = print) -> BandSpec:
    """The bands of a training run on ``dataset`` and their normalisation: ``stats_file``'s statistics
    (``--band_stats``), else those ``recorded`` in the checkpoint it starts from, else the training split's
    (:func:`load_band_stats`). Says which in one line."""
    if recorded is not None and (recorded.file_bands, recorded.bands) != (dataset.file_bands, dataset.bands):
        raise DatasetError(f"the checkpoint reads bands {','.join(map(str, recorded.bands))} of "
                           f"{recorded.file_bands}-band files, but the images have {dataset.file_bands} bands and "
                           f"bands {','.join(map(str, dataset.bands))} are read; use data and --bands that fit it")
    if stats_file:
        (mean, std), source = read_band_stats_file(stats_file, dataset.bands, dataset.file_bands), stats_file
    elif recorded is not None:
        (mean, std), source = (recorded.mean, recorded.std), "the checkpoint's record"
    else:
        (mean, std), source = load_band_stats(dataset, log), f"the {len(dataset)} training images"
    spec = BandSpec(dataset.bands, dataset.file_bands, mean, std, dataset.nodata, _rgb_bands(dataset, rgb_bands),
                    dataset.band_names)
    log(f"Bands: {spec.describe()} (statistics of {source})")
    return spec
