"""Per-class loss weights (``--class_weights``): none, ``auto`` (median frequency balancing) or a YAML file."""
import math
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from utils.config import read_yaml_file

from .class_stats import ClassStats, load_class_stats

__all__ = ["median_frequency_weights", "read_class_weights", "resolve_class_weights"]

ABSENT_CLASS_WEIGHT = 1.0


def median_frequency_weights(stats: ClassStats, class_names: Sequence[str],
                             log: Callable[[str], None] = print) -> torch.Tensor:
    """Median frequency balancing (Eigen & Fergus, 2015): ``weight(c) = median(freq) / freq(c)``.

    ``freq(c)`` is the pixels of class c over the labelled pixels of the training images in which c
    appears; the median runs over the classes that appear. A class that never appears gets 1.0 and a
    warning: no pixel has it as its target, so its weight changes no loss (0 would read as "silenced").
    """
    pixels = np.asarray(stats.pixel_counts, dtype=np.float64)
    present = pixels > 0
    if not present.any():
        raise ValueError(f"--class_weights auto: the {stats.num_images} training masks have no labelled pixel "
                         "(all ignored); check the masks, or give the weights in a YAML file")
    freq = pixels / np.maximum(np.asarray(stats.image_pixels, dtype=np.float64), 1)
    weights = np.full(len(class_names), ABSENT_CLASS_WEIGHT)
    weights[present] = np.median(freq[present]) / freq[present]
    absent = [name for name, seen in zip(class_names, present) if not seen]
    if absent:
        log(f"warning: class(es) {', '.join(absent)} never appear in the training masks, so the model cannot "
            f"learn them; their weight is {ABSENT_CLASS_WEIGHT:g} (it has no effect)")
    return torch.tensor(weights, dtype=torch.float32)


def read_class_weights(path: str, class_names: Sequence[str]) -> torch.Tensor:
    """Weights from a YAML list of numbers, one per class (``[0.5, 4.0, 2.0]``); ValueError naming the file."""
    shape = "a YAML list of numbers, one per class, such as [1.0, 5.0]"
    values = read_yaml_file(path, "--class_weights", shape, expected=list,
                            if_missing="; give none, auto, or a YAML file listing one weight per class")
    if not all(_is_number(v) for v in values):
        raise ValueError(f"--class_weights {path} must hold {shape}")
    if len(values) != len(class_names):
        raise ValueError(f"--class_weights {path} lists {len(values)} weights for {len(class_names)} classes "
                         f"({', '.join(class_names)}); give one per class")
    bad = [v for v in values if not (math.isfinite(v) and v >= 0)]
    if bad:
        raise ValueError(f"--class_weights {path}: weights must be finite and 0 or more, not {bad[0]}")
    if not any(values):
        raise ValueError(f"--class_weights {path}: every weight is 0, so nothing would be trained")
    return torch.tensor(values, dtype=torch.float32)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)  # YAML's yes/true are bools


def resolve_class_weights(spec: str, dataset, log: Callable[[str], None] = print,
                          stats: Optional[ClassStats] = None) -> Optional[torch.Tensor]:
    """``--class_weights`` as a float32 tensor (one weight per class of ``dataset``, the training set), or None.

    ``spec`` is 'none', 'auto' (median frequency from the training masks' class statistics: ``stats`` when the
    caller has them, else loaded from the cache or counted) or the path of a YAML file. Logs the weights with
    the class names.
    """
    if spec == "none":
        return None
    if spec == "auto":
        weights = median_frequency_weights(stats or load_class_stats(dataset, log), dataset.class_names, log)
        source = "auto, median frequency"
    else:
        weights = read_class_weights(spec, dataset.class_names)
        source = spec
    listed = ", ".join(f"{name} {weight:.3g}" for name, weight in zip(dataset.class_names, weights.tolist()))
    log(f"class weights ({source}): {listed}")
    return weights
