"""What every annotation reader yields: images to import, each with the shapes drawn on it in paint order."""
import abc
import dataclasses
import json
from typing import List, Optional, Sequence, Tuple

import numpy as np

from utils.config import decode_utf8
from .images import SourceImage

__all__ = ["Region", "Problem", "AnnotatedImage", "Export", "size_of", "is_text", "read_json", "no_pixel_reason"]


def size_of(width: object, height: object) -> Optional[Tuple[int, int]]:
    """(width, height) as an export states it, or None when it states no usable size."""
    if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
        return width, height
    return None


def is_text(value: object) -> bool:
    """Whether ``value`` is a string that can be written as UTF-8. A name read from bytes in another encoding (a file
    name in a Windows code page, say) holds lone surrogates, which no file of the folder layout can hold."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_json(path: str) -> object:
    """The JSON file ``path``, read as UTF-8 (with or without the byte-order mark Windows editors write); a
    ValueError that completes "``path`` ..." when it is not UTF-8 text or not JSON. OSError when it cannot be read."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = decode_utf8(data)
    except ValueError as exc:
        raise ValueError(f"{exc}: saved in a Windows code page such as cp1252 or GBK? save it as UTF-8") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"is not valid JSON ({exc})") from None


@dataclasses.dataclass(frozen=True)
class Region:
    """One shape drawn at its image's size: its label and the (H, W) boolean pixels it covers."""

    label: str
    pixels: np.ndarray


@dataclasses.dataclass(frozen=True)
class Problem:
    """Something left out of the import: ``where`` names the file (and shape), ``reason`` says why;
    ``shape`` tells one shape left out from a whole file or image."""

    where: str
    reason: str
    shape: bool = False

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def no_pixel_reason(points: Sequence[Tuple[float, float]], width: int, height: int) -> str:
    """Why a shape with these corner ``points`` drew no pixel of a ``width`` x ``height`` image: it lies outside the
    image, or it has no area (points on one line, a circle of radius 0, an empty mask)."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    if points and (max(xs) < 0 or max(ys) < 0 or min(xs) >= width or min(ys) >= height):
        return f"lies outside the {width}x{height} image"
    return (f"covers no pixel of the {width}x{height} image: it has no area at that size (points on one line, a "
            "radius of 0, an empty mask)")


class AnnotatedImage(abc.ABC):
    """One annotated image of an export.

    ``source`` names it in messages (the annotation file, and the entry within it); ``stem`` is its name in
    the folder layout; ``labels`` are its shapes' labels, known before any pixel is read; ``annotated_size``
    is the (width, height) the tool drew on, or None when the export does not say.
    """

    source: str
    stem: str
    labels: Sequence[str]
    annotated_size: Optional[Tuple[int, int]]

    @abc.abstractmethod
    def open_image(self) -> SourceImage:
        """The image's pixels; DatasetError naming the file when it is missing or cannot be decoded."""

    @abc.abstractmethod
    def draw(self, width: int, height: int) -> Tuple[List[Region], List[Problem]]:
        """The shapes as regions in the tool's paint order (a later one covers an earlier one), and the
        shapes that could not be drawn, with why."""


@dataclasses.dataclass
class Export:
    """What a reader found: the images, the files or entries it had to leave out, the class names the export
    declares in its own order (COCO's categories by id; empty for formats without a class list), and notes for the
    summary (what the reader decided for the user, such as categories merged by name)."""

    images: List[AnnotatedImage]
    problems: List[Problem]
    declared_labels: List[str] = dataclasses.field(default_factory=list)
    notes: List[str] = dataclasses.field(default_factory=list)

    def drop_unwritable_names(self) -> None:
        """Move the images whose file name stem is not UTF-8 text to the problems (before their labels are counted):
        no split file can list them."""
        for item in [item for item in self.images if not is_text(item.stem)]:
            self.images.remove(item)
            self.problems.append(Problem(item.source, f"the name {item.stem!r} is not UTF-8 text (a file name in "
                                                      "another system's code page?); rename the file"))
