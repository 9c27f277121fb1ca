"""Datasets: Pascal VOC, Cityscapes, your own folders, and the synthetic demo in VOC layout."""
from .cityscapes import Cityscapes
from .demo import make_demo_dataset
from .folder import FolderSegmentation
from .utils import DatasetError
from .voc import VOCSegmentation, voc_cmap

__all__ = ["VOCSegmentation", "Cityscapes", "FolderSegmentation", "make_demo_dataset", "DatasetError", "voc_cmap"]
