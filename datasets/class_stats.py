"""Class statistics of a split: how many pixels and images each class has, counted once and cached.

The counts come from the masks alone (:meth:`PairedSegmentation.load_target`), and are cached in
``root/.class_stats/`` under the split's identity (:meth:`PairedSegmentation.split_key`) and class
count, so changing the split recounts. A read-only data folder is counted again on every run.
"""
import dataclasses
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from utils.io.atomic import atomic_write
from utils.io.locks import file_lock

from .base import PairedSegmentation
from .utils import CLASS_STATS_DIR

__all__ = ["ClassStats", "compute_class_stats", "load_class_stats", "background_only_warning"]

STATS_DIR = CLASS_STATS_DIR
STATS_VERSION = 1  # bump when the counting changes, so old caches are recounted
MAX_READERS = 8  # threads decoding masks: PNG decoding releases the GIL
BACKGROUND_ONLY_FRACTION = 0.9  # of training images: above it, a binary dataset mostly teaches "background"


@dataclasses.dataclass(frozen=True)
class ClassStats:
    """Per-class counts over a split's masks; ignored pixels count nowhere.

    ``pixel_counts[c]``: pixels of class c. ``image_counts[c]``: images in which c appears.
    ``image_pixels[c]``: labelled pixels of the images in which c appears (for median frequency).
    ``background_only_images``: images with no pixel of a class other than 0.
    """

    pixel_counts: List[int]
    image_counts: List[int]
    image_pixels: List[int]
    num_images: int
    background_only_images: int


def _count(dataset: PairedSegmentation, index: int) -> np.ndarray:
    target = dataset.load_target(index)
    labelled = target[target != dataset.ignore_index]
    return np.bincount(labelled, minlength=dataset.num_classes)[: dataset.num_classes]


def compute_class_stats(dataset: PairedSegmentation) -> ClassStats:
    """Count every mask of ``dataset`` (with a progress bar); no caching."""
    num_classes = dataset.num_classes
    pixels, images, image_pixels = (np.zeros(num_classes, np.int64) for _ in range(3))
    background_only = 0
    pool = ThreadPoolExecutor(min(MAX_READERS, os.cpu_count() or 1))
    try:
        counts = pool.map(lambda index: _count(dataset, index), range(len(dataset)))
        for count in tqdm(counts, total=len(dataset), desc="class statistics", disable=None):
            present = count > 0
            pixels += count
            images += present
            image_pixels += present * count.sum()
            background_only += not present[1:].any()
    finally:
        pool.shutdown(cancel_futures=True)  # a bad mask stops the count now, not after every other mask
    return ClassStats(pixels.tolist(), images.tolist(), image_pixels.tolist(), len(dataset), int(background_only))


def _read_cache(path: str, key: str, num_classes: int) -> Optional[ClassStats]:
    try:
        with open(path) as f:
            cached = json.load(f)
        if cached["version"] == STATS_VERSION and cached["split_key"] == key and cached["num_classes"] == num_classes:
            return ClassStats(**cached["stats"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # missing, half-understood or from another version: count again
    return None


def load_class_stats(dataset: PairedSegmentation, log: Callable[[str], None] = print) -> ClassStats:
    """The class statistics of ``dataset``, from its cache when the split is unchanged, else counted and cached.

    Processes that share the folder count one at a time; the later ones read the first one's cache.
    """
    key = dataset.split_key()
    folder = os.path.join(dataset.root, STATS_DIR)
    path = os.path.join(folder, f"{key[:32]}-{dataset.num_classes}classes.json")
    with file_lock(os.path.join(folder, ".lock")):
        stats = _read_cache(path, key, dataset.num_classes)
        if stats is not None:
            return stats
        stats = compute_class_stats(dataset)
        record = {"version": STATS_VERSION, "split_key": key, "num_classes": dataset.num_classes,
                  "stats": dataclasses.asdict(stats)}
        try:
            with atomic_write(path) as f:
                f.write(json.dumps(record).encode())
        except OSError as exc:
            log(f"note: cannot cache class statistics in {folder} ({exc.strerror or exc}); they are counted "
                "again on the next run")
    return stats


def background_only_warning(stats: ClassStats, class_names: Sequence[str],
                            remedies: Sequence[str] = ("--class_weights auto", "--loss_type ce+dice")) -> Optional[str]:
    """A one-line warning when a binary (2-class) dataset has no object pixel in most training images, else None.

    ``remedies`` are the options to suggest (the caller leaves out those already in use).
    """
    if len(class_names) != 2 or stats.background_only_images <= BACKGROUND_ONLY_FRACTION * stats.num_images:
        return None
    if stats.image_counts[1] == 0:
        return (f"warning: no training mask has a {class_names[1]} pixel (value 1), so the model cannot learn it; "
                "check the masks")
    advice = [f"use {' or '.join(remedies)}"] if remedies else []
    return (f"warning: {stats.background_only_images} of {stats.num_images} training images have no "
            f"{class_names[1]} pixel, so the model mostly learns that everything is {class_names[0]} (and may "
            f"predict it everywhere); {', or '.join(advice + ['drop most empty images from the training split'])}")
