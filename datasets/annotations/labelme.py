"""LabelMe: one ``*.json`` per image, its shapes drawn the way LabelMe's own export draws them.

A file holds ``shapes`` (``label``, ``points``, ``shape_type``), ``imagePath`` (relative to the file),
``imageData`` (the image, base64; may be null) and ``imageHeight``/``imageWidth``. Shapes are drawn in
file order with PIL, as LabelMe's ``shape_to_mask`` does: polygons (and oriented rectangles) filled with
their outline, rectangles and circles (radius: the distance between the two points) filled, lines and
line strips ``line_width`` wide, points as discs of radius ``point_size``; ``mask`` shapes paste their
bitmap at the first point.
"""
import base64
import binascii
import dataclasses
import io
import math
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from utils.io.image_limit import ImageTooLargeError, check_image_pixels

from ..utils import DatasetError
from .base import AnnotatedImage, Export, Problem, Region, is_text, no_pixel_reason, read_json, size_of
from .images import SourceImage, open_bytes, open_file

__all__ = ["read_labelme_folder", "DEFAULT_LINE_WIDTH", "DEFAULT_POINT_SIZE"]

DEFAULT_LINE_WIDTH = 10  # LabelMe's shape_to_mask defaults, which its own converters use
DEFAULT_POINT_SIZE = 5
# shape_type -> (fewest, most) points; None: no upper bound
POINTS_NEEDED = {"polygon": (3, None), "rectangle": (2, 2), "circle": (2, 2), "line": (2, 2),
                 "linestrip": (2, None), "point": (1, 1), "oriented_rectangle": (4, 4), "mask": (2, 2)}


@dataclasses.dataclass(frozen=True)
class LabelMeShape:
    """One entry of ``shapes``, checked; ``number`` counts from 1 in file order."""

    number: int
    label: str
    kind: str
    points: List[Tuple[float, float]]
    mask_data: Optional[str] = None

    def __str__(self) -> str:
        return f"shape {self.number} ({self.kind} {self.label!r})"


def _parse_points(raw: object) -> List[Tuple[float, float]]:
    def is_number(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    if not isinstance(raw, list) or not all(isinstance(p, list) and len(p) == 2 and all(map(is_number, p))
                                            for p in raw):
        raise ValueError("its points are not a list of [x, y] numbers")
    return [(float(x), float(y)) for x, y in raw]


def _parse_shape(number: int, raw: object) -> LabelMeShape:
    """A checked shape; ValueError saying what is wrong with it."""
    if not isinstance(raw, dict):
        raise ValueError("is not a shape (an object with label and points)")
    label, kind = raw.get("label"), raw.get("shape_type") or "polygon"
    if not isinstance(label, str) or not label:
        raise ValueError("has no label")
    if not is_text(label):
        raise ValueError(f"has the label {label!r}, which is not UTF-8 text")
    if kind not in POINTS_NEEDED:
        raise ValueError(f"has shape_type {kind!r}, which is not one of {', '.join(POINTS_NEEDED)}")
    shape = LabelMeShape(number, label, kind, _parse_points(raw.get("points")), raw.get("mask"))
    fewest, most = POINTS_NEEDED[kind]
    count = len(shape.points)
    if count < fewest or (most is not None and count > most):
        needed = f"at least {fewest}" if most is None else str(fewest)
        raise ValueError(f"has {count} point{'s' * (count != 1)}; a {kind} needs {needed}")
    if kind == "mask" and not isinstance(shape.mask_data, str):
        raise ValueError("is a mask shape without its mask (base64 PNG)")
    return shape


def _paste_mask(shape: LabelMeShape, width: int, height: int) -> np.ndarray:
    """The shape's bitmap placed with its top-left corner at the first point (truncated to whole pixels)."""
    try:
        with Image.open(io.BytesIO(base64.b64decode(shape.mask_data, validate=True))) as image:
            check_image_pixels(image.size, "its mask")
            bitmap = np.asarray(image)
    except ImageTooLargeError:
        raise
    except (binascii.Error, ValueError, OSError, UnidentifiedImageError) as exc:
        raise ValueError(f"its mask is not a base64 image ({exc})") from exc
    bitmap = bitmap.any(axis=2) if bitmap.ndim == 3 else bitmap != 0
    left, top = (int(v) for v in shape.points[0])
    pixels = np.zeros((height, width), bool)
    # clamped to the image: a mask that lies (partly) outside keeps only what overlaps it (maybe nothing)
    rows = slice(max(top, 0), max(min(top + bitmap.shape[0], height), max(top, 0)))
    cols = slice(max(left, 0), max(min(left + bitmap.shape[1], width), max(left, 0)))
    pixels[rows, cols] = bitmap[rows.start - top:rows.stop - top, cols.start - left:cols.stop - left]
    return pixels


def draw_shape(shape: LabelMeShape, width: int, height: int, line_width: int = DEFAULT_LINE_WIDTH,
               point_size: int = DEFAULT_POINT_SIZE) -> np.ndarray:
    """The (H, W) boolean pixels of ``shape`` on a ``width`` x ``height`` image."""
    if shape.kind == "mask":
        return _paste_mask(shape, width, height)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    points = shape.points
    if shape.kind in ("polygon", "oriented_rectangle"):
        draw.polygon(points, outline=1, fill=1)
    elif shape.kind == "rectangle":  # the two corners in either order; Pillow wants top-left first
        (x0, y0), (x1, y1) = points
        draw.rectangle((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), outline=1, fill=1)
    elif shape.kind in ("circle", "point"):
        (cx, cy) = points[0]
        radius = math.dist(points[0], points[1]) if shape.kind == "circle" else point_size
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=1, fill=1)
    else:  # line, linestrip
        draw.line(points, fill=1, width=line_width)
    return np.asarray(canvas, dtype=bool)


class LabelMeImage(AnnotatedImage):
    """The image of one LabelMe file and its shapes."""

    def __init__(self, json_path: str, spec: dict, shapes: Sequence[LabelMeShape], invalid: Sequence[Problem],
                 line_width: int, point_size: int):
        self.source = json_path
        self.invalid = list(invalid)  # shapes that could not be read, reported with those that cannot be drawn
        self.stem = os.path.splitext(os.path.basename(json_path))[0]
        self.shapes = list(shapes)
        self.labels = [shape.label for shape in self.shapes]
        self.annotated_size = size_of(spec.get("imageWidth"), spec.get("imageHeight"))
        image_path = spec.get("imagePath")
        # imagePath is relative to the .json; LabelMe on Windows writes it with backslashes
        self.image_path = (os.path.join(os.path.dirname(json_path), image_path.replace("\\", "/"))
                           if isinstance(image_path, str) and image_path else None)
        self.image_data = spec.get("imageData") if isinstance(spec.get("imageData"), str) else None
        self.line_width, self.point_size = line_width, point_size

    def open_image(self) -> SourceImage:
        """The file at imagePath (the original bytes), else the embedded imageData."""
        if self.image_path and os.path.isfile(self.image_path):
            return open_file(self.image_path)
        if self.image_data:
            try:
                data = base64.b64decode(self.image_data, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise DatasetError(f"the imageData of {self.source} is not base64 ({exc})") from exc
            return open_bytes(data, self.source)
        if self.image_path:
            encoding = "" if is_text(self.image_path) else " (its imagePath is not UTF-8 text: a Windows code page?)"
            raise DatasetError(f"image {self.image_path} does not exist{encoding} and {self.source} embeds no "
                               "imageData; put the image there (imagePath is relative to the .json)")
        raise DatasetError(f"{self.source} names no image (no imagePath, no imageData)")

    def draw(self, width: int, height: int) -> Tuple[List[Region], List[Problem]]:
        regions, problems = [], list(self.invalid)
        for shape in self.shapes:
            where = f"{self.source} {shape}"
            try:
                pixels = draw_shape(shape, width, height, self.line_width, self.point_size)
            except (ValueError, OverflowError) as exc:
                problems.append(Problem(where, f"cannot be drawn: {exc}", shape=True))
                continue
            if not pixels.any():
                problems.append(Problem(where, no_pixel_reason(shape.points, width, height), shape=True))
                continue
            regions.append(Region(shape.label, pixels))
        return regions, problems


def _read_file(path: str, line_width: int, point_size: int) -> LabelMeImage:
    """One LabelMe file; ValueError saying why it cannot be used."""
    try:
        spec = read_json(path)
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror or exc})") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("shapes"), list):
        hint = ("; it looks like a COCO file: import it with --from coco"
                if isinstance(spec, dict) and "annotations" in spec else "")
        raise ValueError(f"is not a LabelMe file (it has no `shapes` list){hint}")
    shapes, invalid = [], []
    for number, raw in enumerate(spec["shapes"], start=1):
        try:
            shapes.append(_parse_shape(number, raw))
        except ValueError as exc:
            invalid.append(Problem(f"{path} shape {number}", str(exc), shape=True))
    return LabelMeImage(path, spec, shapes, invalid, line_width, point_size)


def read_labelme_folder(folder: str, line_width: int = DEFAULT_LINE_WIDTH,
                        point_size: int = DEFAULT_POINT_SIZE) -> Export:
    """Every ``*.json`` in ``folder``; a file that cannot be used is a problem, not an error."""
    if not os.path.isdir(folder):
        raise DatasetError(f"LabelMe folder {folder} does not exist (give the folder that holds the .json files)")
    paths = sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.lower().endswith(".json"))
    if not paths:
        raise DatasetError(f"{folder} holds no .json files; LabelMe saves one next to each image")
    export = Export([], [])
    for path in paths:
        try:
            export.images.append(_read_file(path, line_width, point_size))
        except ValueError as exc:
            export.problems.append(Problem(path, str(exc)))
    return export
