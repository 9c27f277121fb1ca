"""Evaluation outputs on disk: metrics.json, confusion_matrix.csv and a confusion_matrix.png heatmap."""
import csv
import io
import json
import math
import os
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from utils.io.atomic import atomic_write
from utils.reporting.confusion_picture import as_counts, check_names, confusion_picture

__all__ = ["write_evaluation"]

PER_CLASS_KEYS = {"IoU": "Class IoU", "Precision": "Class Precision", "Recall": "Class Recall", "F1": "Class F1"}


def write_evaluation(folder: str, results: Dict[str, object], confusion_matrix: Union[np.ndarray, torch.Tensor],
                     class_names: Sequence[str], info: Dict[str, object],
                     picture: Optional[Image.Image] = None) -> List[str]:
    """Write ``metrics.json``, ``confusion_matrix.csv`` and ``confusion_matrix.png`` in ``folder``; their paths.

    ``results`` is :meth:`StreamSegMetrics.get_results`; ``info`` what produced them (checkpoint, scales, flip,
    sliding window, crop_val, iteration...). metrics.json is strict JSON: a figure of an absent class (no pixel
    in truth or prediction) is null and the class is listed in "absent_classes". The CSV holds integer pixel
    counts: rows are the truth class, columns the predicted class, the header row and first column their names.
    The PNG is ``picture`` when given (this matrix as utils.reporting.confusion_picture draws it), else drawn
    here. Each file appears whole or not.
    """
    counts = as_counts(confusion_matrix)
    names = [str(name) for name in class_names]
    check_names(counts, names)
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique to key metrics.json by name, got {names}")
    paths = [_write_json(os.path.join(folder, "metrics.json"), results, counts, names, info),
             _write_csv(os.path.join(folder, "confusion_matrix.csv"), counts, names),
             os.path.join(folder, "confusion_matrix.png")]
    with atomic_write(paths[-1]) as f:
        (picture or confusion_picture(counts, names)).save(f, format="PNG")
    return paths


def _json_safe(value: object) -> object:
    """Plain JSON values: NaN/inf become null, numpy scalars and arrays Python ones, dict keys strings."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_json(path: str, results: Dict[str, object], counts: np.ndarray, names: List[str],
                info: Dict[str, object]) -> str:
    absent = set(results.get("Absent Classes", []))
    per_class = {}
    for index, name in enumerate(names):
        figures = {label: results[key][index] for label, key in PER_CLASS_KEYS.items() if key in results}
        per_class[name] = {"index": index, "absent": index in absent, **figures,
                           "truth_pixels": int(counts[index].sum()), "predicted_pixels": int(counts[:, index].sum())}
    report = {
        "info": info,
        "class_names": names,
        "absent_classes": [names[index] for index in sorted(absent)],
        "summary": {key: value for key, value in results.items() if not isinstance(value, (dict, list))},
        "per_class": per_class,  # by name, each with its index: the figures of one class side by side
        "results": results,      # get_results() as it is (per-class dicts keyed by index) for programs
    }
    # default=str: info may hold paths or other objects that only need to be shown
    text = json.dumps(_json_safe(report), indent=2, allow_nan=False, default=str)
    with atomic_write(path) as f:
        f.write((text + "\n").encode("utf-8"))
    return path


def _write_csv(path: str, counts: np.ndarray, names: List[str]) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["truth \\ prediction", *names])
    for name, row in zip(names, counts):
        writer.writerow([name, *(int(count) for count in row)])
    with atomic_write(path) as f:
        f.write(text.getvalue().encode("utf-8"))
    return path
