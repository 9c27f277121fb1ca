"""An export written in the folder layout (``images/``, ``masks/``, ``classes.yaml``, ``splits/``), then read
back the way training reads it."""
import dataclasses
import os
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import yaml
from PIL import Image
from tqdm import tqdm

from utils.io.atomic import atomic_write
from utils.constants import IGNORE_INDEX

from ..folder import CLASSES_FILE, FolderSegmentation, palette_table
from ..utils import DatasetError
from .base import Export, Problem
from .classes import LabelMap

__all__ = ["ImportResult", "import_to_folder", "split_stems", "check_folder", "check_output_folder"]

SPLITS = ("train", "val")


@dataclasses.dataclass
class ImportResult:
    """What an import wrote (``stems``, ``train``, ``val``), which of them had no shape drawn, and what it
    left out: whole images (``problems``) and single shapes (``skipped_shapes``)."""

    stems: List[str] = dataclasses.field(default_factory=list)
    without_shapes: List[str] = dataclasses.field(default_factory=list)
    problems: List[Problem] = dataclasses.field(default_factory=list)
    skipped_shapes: List[Problem] = dataclasses.field(default_factory=list)
    train: List[str] = dataclasses.field(default_factory=list)
    val: List[str] = dataclasses.field(default_factory=list)


def _existing_ancestors(path: str) -> Iterator[str]:
    """``path`` (its links resolved) and the folders above it, those that exist."""
    path = os.path.realpath(path)
    while True:
        if os.path.exists(path):
            yield path
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def _within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it, however either is spelt (relative, through links, in
    another case on a case-insensitive file system)."""
    return os.path.isdir(folder) and any(os.path.samefile(ancestor, folder) for ancestor in _existing_ancestors(path))


def check_output_folder(out: str, inputs: Sequence[str] = ()) -> None:
    """``out`` must be new or empty, an import never mixes with older images and masks, and apart from ``inputs``
    (the export's files and folders): neither is inside the other."""
    for given in inputs:
        if os.path.exists(out) and os.path.exists(given) and os.path.samefile(out, given):
            clash = "is the input"
        elif _within(out, given):
            clash = "is inside the input folder"
        elif _within(given, out):
            clash = "holds the input"
        else:
            continue
        raise DatasetError(f"--out {out} {clash} {given}; the import goes to a new folder apart from the export's "
                           "files: choose one outside them")
    if os.path.exists(out) and not os.path.isdir(out):
        raise DatasetError(f"--out {out} is a file, not a folder; choose another folder")
    if os.path.isdir(out) and os.listdir(out):
        raise DatasetError(f"--out {out} already holds files ({sorted(os.listdir(out))[0]}, ...); choose a new "
                           "folder, or delete it to import again")


def split_stems(stems: Sequence[str], val_fraction: float, seed: int) -> Tuple[List[str], List[str]]:
    """(train, val): a seeded shuffle puts ``val_fraction`` of the stems (at least one, and never all) into
    val. A single image is in both, so that both split files list something."""
    if len(stems) < 2:
        return list(stems), list(stems)
    order = np.random.default_rng(seed).permutation(len(stems))
    num_val = min(max(round(len(stems) * val_fraction), 1), len(stems) - 1)
    val = {stems[i] for i in order[:num_val]}
    return [s for s in stems if s not in val], [s for s in stems if s in val]


def _write_mask(mask: np.ndarray, path: str, palette: np.ndarray) -> None:
    image = Image.fromarray(mask)
    image.putpalette(palette_table(palette).flatten().tolist())  # an index PNG that shows in colour
    with atomic_write(path) as out:
        image.save(out, format="PNG")


def _write_text(path: str, text: str) -> None:
    with atomic_write(path) as out:
        out.write(text.encode("utf-8"))


def import_to_folder(export: Export, out: str, label_map: LabelMap, background: int = 0,
                     val_fraction: float = 0.2, seed: int = 0) -> ImportResult:
    """Write every usable image of ``export`` and its index mask into ``out``, then ``classes.yaml`` and the
    split files. ``background`` is the value of pixels outside every shape (0, or 255 to ignore them)."""
    result = ImportResult(problems=[p for p in export.problems if not p.shape],
                          skipped_shapes=[p for p in export.problems if p.shape])
    images_dir, masks_dir = os.path.join(out, "images"), os.path.join(out, "masks")
    sources: Dict[str, Tuple[str, str]] = {}  # stem in any case -> (stem, source) of the image written with it
    for item in tqdm(export.images, desc="importing", unit="image", disable=None):
        if item.stem.casefold() in sources:  # names that differ in case only are one file on Windows and macOS
            stem, source = sources[item.stem.casefold()]
            clash = (f"the same file name stem {stem!r} as {source}" if stem == item.stem else
                     f"the file name stem {item.stem!r}, which only the case tells from {stem!r} of {source} (one "
                     "name on Windows and macOS)")
            result.problems.append(Problem(item.source, f"has {clash}; rename one of the images"))
            continue
        if item.stem != item.stem.strip():  # split files hold one stem a line, read without its outer spaces
            result.problems.append(Problem(item.source, f"has the file name stem {item.stem!r}, which begins or ends "
                                                        "with a space that a split file cannot keep; rename it"))
            continue
        try:
            image = item.open_image()
            image.match(item.annotated_size)
        except DatasetError as exc:
            result.problems.append(Problem(item.source, str(exc)))
            continue
        width, height = image.size
        regions, skipped = item.draw(width, height)
        result.skipped_shapes.extend(skipped)
        image.write(images_dir, item.stem)
        _write_mask(label_map.paint(regions, width, height, background), os.path.join(masks_dir, item.stem + ".png"),
                    label_map.palette)
        sources[item.stem.casefold()] = (item.stem, item.source)
        result.stems.append(item.stem)
        if not regions:
            result.without_shapes.append(item.stem)
    if not result.stems:
        return result
    result.train, result.val = split_stems(result.stems, val_fraction, seed)
    for split, stems in zip(SPLITS, (result.train, result.val)):
        _write_text(os.path.join(out, "splits", f"{split}.txt"), "\n".join(stems) + "\n")
    # ignore_index stated: masks where ignored regions (--background ignore, __ignore__) are most of an image
    # are then not taken for a binary mask saved as 0/255
    classes = {"names": label_map.names, "palette": label_map.palette.tolist(), "ignore_index": IGNORE_INDEX}
    _write_text(os.path.join(out, CLASSES_FILE), yaml.safe_dump(classes, default_flow_style=None, sort_keys=False,
                                                                allow_unicode=True))
    return result


def check_folder(root: str) -> Tuple[List[str], np.ndarray]:
    """Read ``root`` as ``--dataset folder`` does: both splits, then every image and mask through
    :class:`FolderSegmentation` (sizes, mask values, decoding). Returns (class names, pixel count of each
    mask value 0..255); DatasetError at the first problem."""
    for split in SPLITS:
        FolderSegmentation(root, split)
    dataset = FolderSegmentation(root, split=None)
    counts = np.zeros(256, np.int64)
    for index in range(len(dataset)):
        _, mask = dataset.load_pair(index)
        counts += np.bincount(np.asarray(mask).ravel(), minlength=256)
    return list(dataset.class_names), counts
