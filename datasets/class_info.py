"""What a model's classes are called and how they are drawn, for predict.py and tools/export_onnx.py alike.

The sources, first first: ``--classes classes.yaml`` and ``--dataset NAME`` (what the user says now), then what
the checkpoint or ONNX file records (this project's do: the training run's class names and palette), then the
class indices drawn with the VOC palette.
"""
import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np

from .cityscapes import Cityscapes
from .folder import default_palette, palette_table, read_class_ids, read_classes
from .utils import DatasetError
from .voc import VOCSegmentation

__all__ = ["NAMED_DATASETS", "ClassInfo", "resolve_classes", "label_id_table"]

NAMED_DATASETS = {"voc": VOCSegmentation, "demo": VOCSegmentation, "cityscapes": Cityscapes}


@dataclasses.dataclass(frozen=True)
class ClassInfo:
    """Class names, their colours ((n, 3) uint8), and where both came from (for messages)."""

    names: Tuple[str, ...]
    palette: np.ndarray
    source: str
    from_indices: bool = False  # nothing named the classes: indices in VOC's colours

    def colour_table(self) -> np.ndarray:
        """A 256x3 table for drawing class indices: the classes' colours, black elsewhere (void included)."""
        return palette_table(self.palette)


def resolve_classes(num_classes: int, classes_file: Optional[str] = None, dataset: Optional[str] = None,
                    recorded_names: Optional[Sequence[str]] = None,
                    recorded_palette: Optional[Sequence[Sequence[int]]] = None, model: str = "the model",
                    ) -> ClassInfo:
    """The classes of a model that predicts ``num_classes`` (see the module docstring for the order).

    ``dataset`` 'folder' names no classes of its own: it needs ``classes_file`` or a record. A file or dataset
    for another class count is a DatasetError saying so; so is 'folder' with neither.
    """
    if classes_file:
        names, palette, _ = read_classes(classes_file)
        return _checked(ClassInfo(tuple(names), palette, classes_file), num_classes, model)
    if dataset and dataset != "folder":
        named = NAMED_DATASETS[dataset]
        return _checked(ClassInfo(tuple(named.class_names), named.cmap[:len(named.class_names)],
                                  f"--dataset {dataset}"), num_classes, model)
    if recorded_names is not None and len(recorded_names) == num_classes:
        palette = (np.asarray(recorded_palette, dtype=np.uint8) if recorded_palette is not None
                   and np.shape(recorded_palette) == (num_classes, 3) else default_palette(num_classes))
        return ClassInfo(tuple(str(name) for name in recorded_names), palette, f"{model}'s record")
    if dataset == "folder":
        raise DatasetError(f"{model} does not record its class names; --dataset folder needs --classes "
                           "PATH/classes.yaml for them and their colours")
    return ClassInfo(tuple(str(index) for index in range(num_classes)), default_palette(num_classes),
                     "the class indices (VOC colours)", from_indices=True)


def label_id_table(classes_file: Optional[str] = None, dataset: Optional[str] = None) -> np.ndarray:
    """For ``--output labelids``: a 256-entry table from class index to the id written: the ``ids`` of
    ``classes_file``, else Cityscapes' label id of each train id (``dataset`` 'cityscapes'). Call it after
    :func:`resolve_classes`, which checks the class count. DatasetError when neither gives ids."""
    if classes_file:
        ids = read_class_ids(classes_file)
        if ids is None:
            raise DatasetError(f"--output labelids needs the id of each class: add `ids: [...]` (one per name) to "
                               f"{classes_file}")
        table = np.zeros(256, np.uint8)
        table[: len(ids)] = ids
        return table
    if dataset != "cityscapes":
        raise DatasetError("--output labelids writes Cityscapes label ids (--dataset cityscapes) or the ids of your "
                           "own classes (--classes classes.yaml with `ids`)")
    return Cityscapes.train_id_to_id


def _checked(info: ClassInfo, num_classes: int, model: str) -> ClassInfo:
    if len(info.names) != num_classes:
        raise DatasetError(f"{info.source} names {len(info.names)} classes but {model} predicts {num_classes}; give "
                           "the classes it was trained on (--classes classes.yaml for your own)")
    return info
