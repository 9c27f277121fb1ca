"""Numbers that mean the same thing everywhere in the project, defined once."""

IGNORE_INDEX = 255
"""Mask value that marks "void" pixels: not scored, not trained on (VOC borders, Cityscapes' unlabeled)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel statistics of ImageNet, which every pretrained backbone expects its input normalised by."""
