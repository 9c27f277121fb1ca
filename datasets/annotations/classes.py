"""Labels to class indices (background 0, then the classes 1..N) and the index mask painted from regions."""
from typing import Dict, List, Optional, Sequence

import numpy as np

from utils.constants import IGNORE_INDEX

from ..utils import DatasetError
from ..voc import voc_cmap
from .base import Region

__all__ = ["BACKGROUND", "LabelMap", "parse_class_list"]

BACKGROUND = "background"
# labelme2voc's conventions, which LabelMe users' label lists follow: these paint class 0 and void
BACKGROUND_LABELS = (BACKGROUND, "_background_")
IGNORE_LABELS = ("__ignore__",)
RESERVED_LABELS = BACKGROUND_LABELS + IGNORE_LABELS


def parse_class_list(text: str) -> List[str]:
    """``a,b,c`` as class names 1..N; a leading ``background`` may be given and stands for class 0."""
    names = [name.strip() for name in text.split(",")]
    if names and names[0] in BACKGROUND_LABELS:
        names = names[1:]
    if not names or any(not name for name in names):
        raise ValueError(f"--classes {text!r}: give class names separated by commas, e.g. --classes cat,dog")
    reserved = [name for name in names if name in RESERVED_LABELS]
    if reserved:
        raise ValueError(f"--classes {text!r}: {reserved[0]!r} is not a class name here (class 0 is background; "
                         "__ignore__ marks pixels 255)")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"--classes {text!r}: {repeated} appear more than once")
    return names


class LabelMap:
    """Class names (``background`` first) and the mask value of every label; ``unknown_index`` is what a
    label outside the classes paints (255, ignored in training), or None when such a label is an error."""

    def __init__(self, classes: Sequence[str], unknown_index: Optional[int] = None):
        if len(classes) > IGNORE_INDEX - 1:  # 8-bit masks: background 0, classes 1..254, 255 means "ignore"
            raise DatasetError(f"{len(classes)} classes do not fit 8-bit masks, where 255 means 'ignore': at most "
                               f"{IGNORE_INDEX - 1} besides background; keep the ones to train on with --classes "
                               "(and --unknown ignore for the rest)")
        self.names = [BACKGROUND, *classes]
        self.unknown_index = unknown_index
        self._index = {name: index for index, name in enumerate(self.names)}
        self._index.update({label: 0 for label in BACKGROUND_LABELS})
        self._index.update({label: IGNORE_INDEX for label in IGNORE_LABELS})

    @classmethod
    def build(cls, found: Dict[str, str], declared: Sequence[str] = (), given: Optional[Sequence[str]] = None,
              ignore_unknown: bool = False) -> "LabelMap":
        """The classes of an export. ``found`` maps each label to the first file it appears in.

        With ``given`` the classes are those, in that order, and a found label outside them is a
        DatasetError unless ``ignore_unknown``. Without, they are the labels found: those the export
        declares first, in its order, then the rest sorted by name, so the order never depends on which
        file was read first.
        """
        labels = [label for label in found if label not in RESERVED_LABELS]
        if given is None:
            first = [label for label in declared if label in labels]
            return cls(first + sorted(set(labels) - set(first)))
        unknown = [label for label in labels if label not in given]
        if unknown and not ignore_unknown:
            shown = unknown[0] if len(unknown) == 1 else unknown
            raise DatasetError(f"label {shown!r} (in {found[unknown[0]]}) is not in --classes {','.join(given)}; "
                               "add it there, or pass --unknown ignore to mark its pixels 255 (not trained on)")
        return cls(given, IGNORE_INDEX if ignore_unknown else None)

    @property
    def palette(self) -> np.ndarray:
        """(num_classes, 3) uint8 colours: the VOC palette, so class 0 is black."""
        return voc_cmap(len(self.names))

    def index(self, label: str) -> int:
        """The mask value ``label`` paints."""
        if label in self._index:
            return self._index[label]
        if self.unknown_index is None:
            raise DatasetError(f"label {label!r} is not a class ({', '.join(self.names)})")
        return self.unknown_index

    def paint(self, regions: Sequence[Region], width: int, height: int, fill: int = 0) -> np.ndarray:
        """(H, W) uint8 mask: ``fill`` where no region is, each region's class where it is, in order, so a
        later region covers an earlier one (instances of one class merge)."""
        mask = np.full((height, width), fill, np.uint8)
        for region in regions:
            mask[region.pixels] = self.index(region.label)
        return mask
