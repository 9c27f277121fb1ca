"""Evaluation outputs on disk: metrics.json, confusion_matrix.csv and a confusion_matrix.png heatmap."""
import csv
import functools
import io
import json
import math
import os
import sys
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from utils.io.atomic import atomic_write
from utils.io.optional_packages import optional_module, pip_install

__all__ = ["row_normalised", "write_evaluation", "cell_fontsize", "confusion_figure", "confusion_matrix_png"]

PER_CLASS_KEYS = {"IoU": "Class IoU", "Precision": "Class Precision", "Recall": "Class Recall", "F1": "Class F1"}
ANNOTATE_UP_TO = 30      # more classes than this: cells too small for their numbers
INCHES_PER_CLASS = 0.45
MIN_FIGURE_INCHES = 6.0
MIN_CELL_POINTS, MAX_CELL_POINTS = 7.0, 20.0
ABSENT_LABEL_POINTS = 10.0
CELL_POINTS_BUDGET = 120.0  # the cell numbers' size shrinks with the class count: 20 pt for 2 classes, 7 for 19


def _as_counts(confusion_matrix: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    if isinstance(confusion_matrix, torch.Tensor):
        confusion_matrix = confusion_matrix.detach().cpu().numpy()
    counts = np.asarray(confusion_matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"a confusion matrix is square, got shape {counts.shape}")
    return counts


def row_normalised(confusion_matrix: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    """Each truth row divided by its pixel count (float64, rows sum to 1); a row with no pixels stays all 0."""
    counts = _as_counts(confusion_matrix).astype(np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def write_evaluation(folder: str, results: Dict[str, object], confusion_matrix: Union[np.ndarray, torch.Tensor],
                     class_names: Sequence[str], info: Dict[str, object]) -> List[str]:
    """Write ``metrics.json``, ``confusion_matrix.csv`` and ``confusion_matrix.png`` in ``folder``; their paths.

    ``results`` is :meth:`StreamSegMetrics.get_results`; ``info`` what produced them (checkpoint, scales, flip,
    sliding window, crop_val, iteration...). metrics.json is strict JSON: a figure of an absent class (no pixel
    in truth or prediction) is null and the class is listed in "absent_classes". The CSV holds integer pixel
    counts: rows are the truth class, columns the predicted class, the header row and first column their names.
    The PNG is skipped, with a note on stderr, when matplotlib is not installed. Each file appears whole or not.
    """
    counts = _as_counts(confusion_matrix)
    names = [str(name) for name in class_names]
    if len(names) != counts.shape[0]:
        raise ValueError(f"{len(names)} class names for a {counts.shape[0]}-class confusion matrix")
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique to key metrics.json by name, got {names}")
    paths = [_write_json(os.path.join(folder, "metrics.json"), results, counts, names, info),
             _write_csv(os.path.join(folder, "confusion_matrix.csv"), counts, names)]
    png = os.path.join(folder, "confusion_matrix.png")
    if _write_png(png, counts, names):
        paths.append(png)
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


@functools.lru_cache(maxsize=None)
def _note_no_matplotlib() -> None:
    """Said once per process, however many evaluations are written."""
    print(f"note: confusion_matrix.png skipped: matplotlib is not installed ({pip_install('matplotlib')})",
          file=sys.stderr)


def _figure_module():
    """matplotlib's Figure and Agg canvas (no pyplot: no global backend switch or figure registry), or None."""
    backend, figure = optional_module("matplotlib.backends.backend_agg"), optional_module("matplotlib.figure")
    if backend is None or figure is None:
        _note_no_matplotlib()
        return None
    return figure.Figure, backend.FigureCanvasAgg


def cell_fontsize(num_classes: int) -> float:
    """Points for the numbers in the cells: large for a few classes, down to a readable 7 for 19 to 30."""
    return max(MIN_CELL_POINTS, min(MAX_CELL_POINTS, CELL_POINTS_BUDGET / num_classes))


def confusion_figure(counts: np.ndarray, names: Sequence[str]):
    """The row-normalised confusion matrix as a matplotlib Figure: class names, a colour bar, the fraction in each
    cell (up to ``ANNOTATE_UP_TO`` classes), and rows of classes without any pixel marked "absent" (not zeros).
    None without matplotlib."""
    module = _figure_module()
    if module is None:
        return None
    figure_class, canvas_class = module
    counts = _as_counts(counts)
    fractions = row_normalised(counts)
    n = len(names)
    side = max(MIN_FIGURE_INCHES, INCHES_PER_CLASS * n + 3)
    figure = figure_class(figsize=(side + 1, side))
    canvas_class(figure)
    axes = figure.add_subplot()
    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of the truth row")
    ticks = np.arange(n)
    axes.set_xticks(ticks, names, rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticks(ticks, names)
    axes.set_xlabel("prediction")
    axes.set_ylabel("truth")
    axes.set_title("Confusion matrix (rows = truth, each row normalised to sum 1)")
    fontsize = cell_fontsize(n)
    for row in np.flatnonzero(counts.sum(axis=1) == 0):  # no pixel of this class: nothing to normalise
        axes.axhspan(row - 0.5, row + 0.5, facecolor="none", edgecolor="0.6", hatch="///", linewidth=0)
        axes.text((n - 1) / 2, row, "absent (no pixel of this class)", ha="center", va="center",
                  fontsize=max(fontsize, ABSENT_LABEL_POINTS), color="0.3", style="italic",
                  bbox=dict(facecolor="white", edgecolor="none", pad=1.5))
    if n <= ANNOTATE_UP_TO:
        for (row, column), value in np.ndenumerate(fractions):
            if value >= 0.005:  # what would print as 0.00 stays blank, so the errors stand out
                axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=fontsize,
                          color="white" if value > 0.5 else "black")
    figure.tight_layout()
    return figure


def confusion_matrix_png(counts: Union[np.ndarray, torch.Tensor], names: Sequence[str]) -> Optional[bytes]:
    """:func:`confusion_figure` as PNG bytes (the file next to metrics.json, TensorBoard's image); None without
    matplotlib. The last one is kept: an evaluation's files and its TensorBoard image draw it once."""
    counts = _as_counts(counts)
    return _png(counts.tobytes(), counts.shape, counts.dtype.str, tuple(str(name) for name in names))


@functools.lru_cache(maxsize=1)
def _png(data: bytes, shape: tuple, dtype: str, names: tuple) -> Optional[bytes]:
    figure = confusion_figure(np.frombuffer(data, dtype=dtype).reshape(shape), names)
    if figure is None:
        return None
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _write_png(path: str, counts: np.ndarray, names: List[str]) -> bool:
    """The figure of :func:`confusion_figure`; False when matplotlib is missing."""
    png = confusion_matrix_png(counts, names)
    if png is None:
        return False
    with atomic_write(path) as f:
        f.write(png)
    return True
