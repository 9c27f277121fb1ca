"""What every annotation reader yields: images to import, each with the shapes drawn on it in paint order."""
import abc
import dataclasses
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .images import SourceImage

__all__ = ["Region", "Problem", "AnnotatedImage", "Export", "size_of"]


def size_of(width: object, height: object) -> Optional[Tuple[int, int]]:
    """(width, height) as an export states it, or None when it states no usable size."""
    if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
        return width, height
    return None


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
    """What a reader found: the images, the files or entries it had to leave out, and the class names the
    export declares in its own order (COCO's categories by id; empty for formats without a class list)."""

    images: List[AnnotatedImage]
    problems: List[Problem]
    declared_labels: List[str] = dataclasses.field(default_factory=list)
