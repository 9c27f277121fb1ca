"""COCO JSON, as CVAT, Label Studio and Roboflow export it: polygons, RLE and crowd regions via pycocotools.

``images`` (id, file_name, width, height), ``annotations`` (image_id, category_id, segmentation, iscrowd) and
``categories`` (id, name). A segmentation is a list of polygons ([x1, y1, x2, y2, ...] each) or an RLE
(``counts`` a list: uncompressed, or a string: compressed); pycocotools turns each into pixels exactly as
its ``annToMask`` does. A category's name is the label; annotations are painted in file order.
"""
import os
from types import ModuleType
from typing import Dict, Iterator, List, Optional, Set, Tuple

import numpy as np

from utils.io.atomic import missing_file
from utils.io.optional_packages import import_optional

from ..utils import DatasetError
from .base import AnnotatedImage, Export, Problem, Region, is_text, no_pixel_reason, read_json, size_of
from .images import SourceImage, open_file

__all__ = ["read_coco", "run_lengths"]

MIN_POLYGON_POINTS = 3


def mask_api() -> ModuleType:
    """pycocotools.mask; a DatasetError with the pip command when pycocotools is not installed."""
    return import_optional("pycocotools.mask", "COCO import", DatasetError)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def run_lengths(counts: str) -> List[int]:
    """The runs of a compressed COCO RLE string. The format (COCO's maskApi): each number is written in 5-bit
    groups, lowest first, one character per group (value + 48); bit 0x20 says another group follows, and bit
    0x10 of the last group is the sign. From the fourth run on, a number is the difference to the run two
    before it."""
    if not isinstance(counts, str):
        raise TypeError(f"counts must be a list or a string, not {type(counts).__name__}")
    runs: List[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position == len(counts):
                raise ValueError("the string ends inside a number")
            group = ord(counts[position]) - 48
            if not 0 <= group < 64:
                raise ValueError(f"{counts[position]!r} is not an RLE character")
            value |= (group & 0x1F) << shift
            more, position, shift = bool(group & 0x20), position + 1, shift + 5
            if not more and group & 0x10:
                value -= 1 << shift  # negative: the sign bit extends to the left
        runs.append(value + runs[-2] if len(runs) > 2 else value)
    return runs


def _key(value: object) -> object:
    """An id as a dictionary key; None for a value that cannot be one (a list, say)."""
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None


def _polygon_rle(api: ModuleType, polygons: list, height: int, width: int) -> Tuple[Optional[dict], List[str]]:
    """The union of the usable polygons as one RLE (None when there is none), and why the others were not used.

    A part of fewer than three points is refused: pycocotools would read four numbers as a box.
    """
    usable, reasons = [], []
    for number, polygon in enumerate(polygons, start=1):
        if not isinstance(polygon, list) or not all(map(_is_number, polygon)) or len(polygon) % 2:
            reasons.append(f"polygon {number} is not a list of x, y numbers")
        elif len(polygon) < 2 * MIN_POLYGON_POINTS:
            reasons.append(f"polygon {number} has {len(polygon) // 2} points; a polygon needs at least "
                           f"{MIN_POLYGON_POINTS}")
        else:
            usable.append([float(v) for v in polygon])
    if not usable:
        return None, reasons
    return api.merge(api.frPyObjects(usable, height, width)), reasons


def _rle(api: ModuleType, segmentation: object, height: int, width: int) -> Tuple[Optional[dict], List[str]]:
    """``segmentation`` as an RLE of a ``height`` x ``width`` image (None when unusable), and what was wrong."""
    if isinstance(segmentation, list) and segmentation:
        return _polygon_rle(api, segmentation, height, width)
    if isinstance(segmentation, dict) and "counts" in segmentation:
        size = segmentation.get("size")
        if list(size or ()) != [height, width]:
            return None, [f"its RLE has size {size}, but the image's [height, width] is {[height, width]}"]
        counts = segmentation["counts"]
        try:
            runs = counts if isinstance(counts, list) else run_lengths(counts)
        except (TypeError, ValueError) as exc:
            return None, [f"its RLE counts cannot be read ({exc})"]
        # pycocotools trusts the counts: a short or damaged string would decode to arbitrary pixels
        if not all(isinstance(run, int) and run >= 0 for run in runs) or sum(runs) != height * width:
            return None, [f"its RLE counts do not add up to the {width}x{height} pixels of the image (damaged?)"]
        if isinstance(counts, list):  # uncompressed: pycocotools compresses it first
            return api.frPyObjects(segmentation, height, width), []
        return segmentation, []
    return None, ["has no segmentation (a box-only annotation?)"]


class CocoImage(AnnotatedImage):
    """One entry of ``images`` and its annotations, as (annotation id, label, segmentation) in file order."""

    def __init__(self, source: str, entry: dict, image_dir: str, annotations: List[Tuple[object, str, object]]):
        self.source = f"{source} image {entry['id']} ({entry['file_name']})"
        self.file_name = entry["file_name"].replace("\\", "/")  # an export made on Windows: export\\images\\a.jpg
        self.stem = os.path.splitext(os.path.basename(self.file_name))[0]
        self.annotated_size = size_of(entry.get("width"), entry.get("height"))
        self.annotations = annotations
        self.labels = [label for _, label, _ in annotations]
        self.image_dir = image_dir

    def open_image(self) -> SourceImage:
        """``file_name`` under the image folder; else its base name there (exports differ in the prefix)."""
        for path in (os.path.join(self.image_dir, self.file_name),
                     os.path.join(self.image_dir, os.path.basename(self.file_name))):
            if os.path.isfile(path):
                return open_file(path)
        raise DatasetError(f"image {self.file_name} is not in {self.image_dir}; give --images the folder that "
                           "holds the export's images")

    def draw(self, width: int, height: int) -> Tuple[List[Region], List[Problem]]:
        api = mask_api()
        regions, problems = [], []
        for annotation_id, label, segmentation in self.annotations:
            where = f"{self.source} annotation {annotation_id} ({label!r})"
            try:
                rle, reasons = _rle(api, segmentation, height, width)
                pixels = api.decode(rle).astype(bool) if rle is not None else None
            except (ValueError, TypeError, OverflowError) as exc:  # counts that pycocotools cannot read
                rle, reasons, pixels = None, [f"its segmentation cannot be decoded ({exc})"], None
            kept = "; its other polygons are kept" if rle is not None else ""
            problems.extend(Problem(where, reason + kept, shape=True) for reason in reasons)
            if pixels is None:
                continue
            if not pixels.any():
                problems.append(Problem(where, no_pixel_reason(_corners(segmentation), width, height), shape=True))
                continue
            regions.append(Region(label, pixels))
        return regions, problems


def _corners(segmentation: object) -> List[Tuple[float, float]]:
    """The (x, y) points of a polygon segmentation (a list of flat coordinate lists); none for run lengths."""
    if not isinstance(segmentation, list):
        return []
    return [(float(polygon[i]), float(polygon[i + 1])) for polygon in segmentation if isinstance(polygon, list)
            for i in range(0, len(polygon) - 1, 2)]


def _load(path: str) -> dict:
    why = missing_file(path)
    if why:
        raise DatasetError(f"COCO file {path} {why}")
    try:
        spec = read_json(path)
    except ValueError as exc:
        raise DatasetError(f"{path} {exc}") from None
    if not isinstance(spec, dict) or not all(isinstance(spec.get(key), list)
                                             for key in ("images", "annotations", "categories")):
        hint = ("; it looks like a LabelMe file: import its folder with --from labelme"
                if isinstance(spec, dict) and "shapes" in spec else "")
        raise DatasetError(f"{path} is not a COCO file (it needs `images`, `annotations` and `categories` "
                           f"lists){hint}")
    return spec


def _entries(spec: dict, key: str, text_field: str, path: str, problems: List[Problem]) -> Iterator[dict]:
    """The entries of ``spec[key]`` that have an id and a non-empty ``text_field``; the others are problems."""
    for number, entry in enumerate(spec[key], start=1):
        if (isinstance(entry, dict) and isinstance(entry.get(text_field), str) and entry[text_field]
                and _key(entry.get("id")) is not None):
            yield entry
        else:
            problems.append(Problem(f"{path} {key} entry {number}", f"has no id and {text_field}"))


def _categories(spec: dict, path: str, problems: List[Problem]) -> Dict[object, str]:
    """Category id -> name, in id order (ids need not be contiguous). Several ids may share a name (Roboflow
    exports do): they are one class."""
    names = {}
    for entry in _entries(spec, "categories", "name", path, problems):
        if is_text(entry["name"]):
            names[entry["id"]] = entry["name"]
        else:
            problems.append(Problem(f"{path} category {entry['id']}", f"its name {entry['name']!r} is not UTF-8 text; "
                                                                        "its annotations are left out"))
    return dict(sorted(names.items(), key=lambda item: (isinstance(item[0], str), item[0])))


def _same_name_notes(categories: Dict[object, str], used: Set[str]) -> List[str]:
    """A line for each name that several categories share and some annotation uses."""
    ids: Dict[str, List[object]] = {}
    for category_id, name in categories.items():
        ids.setdefault(name, []).append(category_id)
    return [f"categories {', '.join(map(str, shared))} share the name {name!r}: their shapes are one class"
            for name, shared in ids.items() if len(shared) > 1 and name in used]


def _images(spec: dict, path: str, problems: List[Problem]) -> Dict[object, dict]:
    """Image id -> its entry, in file order; an id that appears again is a problem."""
    images = {}
    for entry in _entries(spec, "images", "file_name", path, problems):
        if entry["id"] in images:
            problems.append(Problem(f"{path} image {entry['id']}", "appears twice in `images`; the second is left out"))
        else:
            images[entry["id"]] = entry
    return images


def read_coco(path: str, image_dir: str) -> Export:
    """The images of the COCO file ``path``, found under ``image_dir``; DatasetError when the file cannot be
    used at all (missing, not JSON, not COCO) or pycocotools is missing."""
    mask_api()
    if not os.path.isdir(image_dir):
        raise DatasetError(f"image folder {image_dir} does not exist; give --images the folder that holds the "
                           "export's images")
    spec = _load(path)
    problems: List[Problem] = []
    categories = _categories(spec, path, problems)
    images = _images(spec, path, problems)
    annotations: Dict[object, List[Tuple[object, str, object]]] = {image_id: [] for image_id in images}
    for number, entry in enumerate(spec["annotations"], start=1):
        entry = entry if isinstance(entry, dict) else {}
        annotation_id = entry.get("id", f"#{number}")
        image_id, category_id = _key(entry.get("image_id")), _key(entry.get("category_id"))
        where = f"{path} annotation {annotation_id}"
        if image_id not in images:
            problems.append(Problem(where, f"refers to image id {image_id!r}, which `images` does not list",
                                    shape=True))
        elif category_id not in categories:
            problems.append(Problem(where, f"has category_id {category_id!r}, which `categories` does not list",
                                    shape=True))
        else:
            annotations[image_id].append((annotation_id, categories[category_id], entry.get("segmentation")))
    used = {label for entries in annotations.values() for _, label, _ in entries}
    return Export([CocoImage(path, entry, image_dir, annotations[image_id]) for image_id, entry in images.items()],
                  problems, list(dict.fromkeys(categories.values())), _same_name_notes(categories, used))
