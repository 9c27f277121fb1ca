"""write_evaluation writes strict metrics.json, an exact confusion_matrix.csv and a readable heatmap PNG."""
import csv
import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from metrics import StreamSegMetrics
from utils.reporting import eval_report
from utils.reporting.eval_report import row_normalised, write_evaluation

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
    """The folder and returned paths of one write_evaluation (the PNG takes a second or two to draw)."""
    folder = tmp_path_factory.mktemp("eval")
    paths = write_evaluation(str(folder), voc_metrics.get_results(), voc_metrics.confusion_matrix, VOC_NAMES, INFO)
    return folder, paths


def _reject(constant: str):
    raise AssertionError(f"metrics.json holds {constant}")


def test_writes_three_files_atomically(written):
    pytest.importorskip("matplotlib")
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
    pytest.importorskip("matplotlib")
    with Image.open(written[0] / "confusion_matrix.png") as image:
        assert image.format == "PNG"
        width, height = image.size
    assert 1000 <= width <= 3000 and 1000 <= height <= 3000  # about 45 pixels per class and room for names


def test_without_matplotlib_the_png_is_skipped_with_one_note(voc_metrics, tmp_path, monkeypatch, capsys):
    for name in [name for name in sys.modules if name.split(".")[0] == "matplotlib"] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # every `import matplotlib...` raises ImportError
    eval_report._note_no_matplotlib.cache_clear()
    eval_report._png.cache_clear()  # the figure of these counts, drawn by an earlier test
    for folder in ("a", "b"):
        paths = write_evaluation(str(tmp_path / folder), voc_metrics.get_results(), voc_metrics.confusion_matrix,
                                 VOC_NAMES, INFO)
        assert [os.path.basename(path) for path in paths] == ["metrics.json", "confusion_matrix.csv"]
        assert sorted(os.listdir(tmp_path / folder)) == ["confusion_matrix.csv", "metrics.json"]
    note = ("note: confusion_matrix.png skipped: matplotlib is not installed (pip install matplotlib==3.11.2)\n")
    assert capsys.readouterr().err == note
    eval_report._note_no_matplotlib.cache_clear()


def test_row_normalised_rows_sum_to_one_and_empty_rows_stay_zero():
    counts = torch.tensor([[3, 1, 0], [0, 0, 0], [0, 2, 2]])
    fractions = row_normalised(counts)
    assert fractions.dtype == np.float64 and not np.isnan(fractions).any()
    np.testing.assert_allclose(fractions, [[0.75, 0.25, 0], [0, 0, 0], [0, 0.5, 0.5]])
    np.testing.assert_array_equal(row_normalised(counts.numpy()), fractions)


def test_names_must_match_the_matrix(voc_metrics, tmp_path):
    results = voc_metrics.get_results()
    with pytest.raises(ValueError, match="20 class names for a 21-class"):
        write_evaluation(str(tmp_path), results, voc_metrics.confusion_matrix, VOC_NAMES[:20], INFO)
    with pytest.raises(ValueError, match="unique"):
        write_evaluation(str(tmp_path), results, voc_metrics.confusion_matrix, ["x"] * 21, INFO)


def test_the_figure_marks_absent_rows_and_sizes_its_numbers_by_the_class_count():
    pytest.importorskip("matplotlib")
    counts = np.array([[5, 1, 0], [0, 0, 0], [2, 0, 7]])  # class 1 has no pixel
    texts = eval_report.confusion_figure(counts, ["a", "b", "c"]).axes[0].texts
    absent = [t for t in texts if t.get_text().startswith("absent")]
    assert len(absent) == 1 and absent[0].get_position()[1] == 1  # on row 1, not a row of zeros
    two = eval_report.confusion_figure(np.array([[9, 1], [2, 8]]), ["background", "crack"]).axes[0].texts
    many = eval_report.confusion_figure(np.eye(21, dtype=np.int64) * 5, [f"c{i}" for i in range(21)]).axes[0].texts
    assert two[0].get_fontsize() >= 2.5 * many[0].get_fontsize() and many[0].get_fontsize() >= 7
