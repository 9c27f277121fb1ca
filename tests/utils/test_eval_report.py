"""write_evaluation writes strict metrics.json, an exact confusion_matrix.csv and a readable heatmap PNG."""
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from metrics import StreamSegMetrics
from utils.reporting.eval_report import write_evaluation

VOC_NAMES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
             "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
             "tvmonitor"]
INFO = {"checkpoint": "checkpoints/best.pth", "scales": (0.75, 1.0), "flip": True, "slide": False,
        "crop_val": False, "iteration": 30000}


@pytest.fixture(scope="module")
def voc_metrics() -> StreamSegMetrics:
    """21 classes, "tvmonitor" (20) in neither truth nor prediction."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 20, (2, 32, 32))
    pred = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, 20, truth.shape))
    metrics = StreamSegMetrics(21, VOC_NAMES)
    metrics.update(truth, pred)
    return metrics


@pytest.fixture(scope="module")
def written(voc_metrics, tmp_path_factory):
    """The folder and returned paths of one write_evaluation."""
    folder = tmp_path_factory.mktemp("eval")
    paths = write_evaluation(str(folder), voc_metrics.get_results(), voc_metrics.confusion_matrix, VOC_NAMES, INFO)
    return folder, paths


def _reject(constant: str):
    raise AssertionError(f"metrics.json holds {constant}")


def test_writes_three_files_atomically(written):
    folder, paths = written
    names = ["metrics.json", "confusion_matrix.csv", "confusion_matrix.png"]
    assert paths == [str(folder / name) for name in names]
    assert sorted(os.listdir(folder)) == sorted(names)  # no temporary file left behind


def test_json_is_strict_and_readable(voc_metrics, written):
    results = voc_metrics.get_results()
    with open(written[0] / "metrics.json", encoding="utf-8") as f:
        report = json.load(f, parse_constant=_reject)
    assert report["info"] == {**INFO, "scales": [0.75, 1.0]}
    assert report["class_names"] == VOC_NAMES and report["absent_classes"] == ["tvmonitor"]
    assert report["summary"]["Mean IoU"] == results["Mean IoU"]
    assert report["summary"]["FreqW IoU"] == report["summary"]["FreqW Acc"]
    cat = report["per_class"]["cat"]
    assert cat["index"] == 8 and cat["absent"] is False
    assert cat["IoU"] == results["Class IoU"][8] and cat["F1"] == results["Class F1"][8]
    assert cat["truth_pixels"] == int(voc_metrics.confusion_matrix[8].sum())
    tv = report["per_class"]["tvmonitor"]
    assert tv["absent"] is True and tv["IoU"] is None and tv["Precision"] is None
    assert report["results"]["Class IoU"]["8"] == results["Class IoU"][8]  # by index, as get_results()
    assert report["results"]["Class IoU"]["20"] is None and report["results"]["Absent Classes"] == [20]


def test_csv_rows_are_truth_with_integer_counts(voc_metrics, written):
    with open(written[0] / "confusion_matrix.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["truth \\ prediction", *VOC_NAMES]
    assert [row[0] for row in rows[1:]] == VOC_NAMES
    counts = np.array([[int(cell) for cell in row[1:]] for row in rows[1:]])
    np.testing.assert_array_equal(counts, voc_metrics.confusion_matrix.numpy())


def test_png_is_a_large_enough_image_for_21_classes(written):
    with Image.open(written[0] / "confusion_matrix.png") as image:
        assert image.format == "PNG"
        width, height = image.size
    assert 1000 <= width <= 3000 and 1000 <= height <= 3000  # about 45 pixels per class and room for names


def test_names_must_match_the_matrix(voc_metrics, tmp_path):
    results = voc_metrics.get_results()
    with pytest.raises(ValueError, match="20 class names for a 21-class"):
        write_evaluation(str(tmp_path), results, voc_metrics.confusion_matrix, VOC_NAMES[:20], INFO)
    with pytest.raises(ValueError, match="unique"):
        write_evaluation(str(tmp_path), results, voc_metrics.confusion_matrix, ["x"] * 21, INFO)
