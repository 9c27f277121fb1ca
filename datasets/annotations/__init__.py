"""Annotation tools' exports (LabelMe, COCO) turned into the folder layout that ``--dataset folder`` reads.

One reader per format (:mod:`.labelme`, :mod:`.coco`) yields :class:`~.base.AnnotatedImage` items; the
class list and painting are :mod:`.classes`, the images' pixels :mod:`.images`, and writing the folder
(then reading it back as training does) :mod:`.folder_writer`.
"""
from .base import AnnotatedImage, Export, Problem, Region
from .classes import LabelMap
from .coco import read_coco
from .folder_writer import ImportResult, check_folder, import_to_folder
from .labelme import read_labelme_folder

__all__ = ["AnnotatedImage", "Export", "Problem", "Region", "LabelMap", "read_coco", "read_labelme_folder",
           "ImportResult", "import_to_folder", "check_folder"]
