"""StreamSegMetrics equals the original's numpy formulas, ignores 255, is NaN-aware, and adds hand-checked figures."""
import re

import numpy as np
import pytest
import torch

from metrics import AverageMeter, StreamSegMetrics


def _original_results(trues, preds, n):
    """The original's computation, written out with numpy as the reference."""
    hist = np.zeros((n, n))
    for t, p in zip(trues, preds):
        t, p = t.ravel(), p.ravel()
        mask = (t >= 0) & (t < n)
        hist += np.bincount(n * t[mask].astype(int) + p[mask], minlength=n ** 2).reshape(n, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.diag(hist).sum() / hist.sum()
        acc_cls = np.nanmean(np.diag(hist) / hist.sum(axis=1))
        iu = np.diag(hist) / (hist.sum(axis=1) + hist.sum(axis=0) - np.diag(hist))
    freq = hist.sum(axis=1) / hist.sum()
    return {"Overall Acc": acc, "Mean Acc": acc_cls, "FreqW Acc": (freq[freq > 0] * iu[freq > 0]).sum(),
            "Mean IoU": np.nanmean(iu), "Class IoU": dict(enumerate(iu))}


@pytest.mark.parametrize("as_tensor", [False, True])
def test_matches_original_with_ignore_and_absent_classes(as_tensor):
    rng = np.random.default_rng(0)
    n = 6
    trues = rng.integers(0, 4, (3, 17, 13)).astype(np.uint8)  # classes 4, 5 absent from truth
    trues[:, 0] = 255
    preds = rng.integers(0, 5, (3, 17, 13))                    # class 4 predicted, 5 never
    metrics = StreamSegMetrics(n)
    for t, p in zip(trues, preds):
        metrics.update(torch.from_numpy(t[None]) if as_tensor else t[None], torch.from_numpy(p[None]) if as_tensor else p[None])
    got, want = metrics.get_results(), _original_results(trues, preds, n)
    for key in ("Overall Acc", "Mean Acc", "FreqW Acc", "Mean IoU"):
        assert got[key] == pytest.approx(want[key], rel=1e-12)
    assert got["Class IoU"][4] == 0.0 and np.isnan(got["Class IoU"][5])
    np.testing.assert_allclose(list(got["Class IoU"].values()), list(want["Class IoU"].values()), rtol=1e-12)
    assert got["FreqW IoU"] == got["FreqW Acc"]  # the original's "FreqW Acc" is the frequency-weighted IoU
    assert got["Absent Classes"] == [5]
    assert metrics.confusion_matrix.dtype == torch.int64


def test_reset_and_to_str_with_names():
    metrics = StreamSegMetrics(2, ["background", "cat"])
    metrics.update(np.array([[0, 1]]), np.array([[0, 1]]))
    results = metrics.get_results()
    assert results["Mean IoU"] == 1.0
    text = metrics.to_str(results)
    assert "Mean IoU: 1.000000" in text and "cat" in text
    metrics.reset()
    assert int(metrics.confusion_matrix.sum()) == 0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="label shapes differ"):
        StreamSegMetrics(3).update(np.zeros((2, 2), np.int64), np.zeros((2, 3), np.int64))


def test_average_meter():
    meter = AverageMeter()
    meter.update("loss", 1.0)
    meter.update("loss", 3.0)
    assert meter.get_results("loss") == 2.0


def _metrics(n, trues, preds, names=None):
    metrics = StreamSegMetrics(n, names)
    metrics.update(np.array(trues), np.array(preds))
    return metrics


# Truth [0 0 0 1 3], prediction [0 0 1 1 2]: class 2 is only predicted, 3 only in the truth, 4 absent.
# Confusion rows (truth) 0: [2 1 0 0 0], 1: [0 1 0 0 0], 3: [0 0 1 0 0]; predicted column sums 2 2 1 0 0.
SMALL = dict(n=5, trues=[0, 0, 0, 1, 3], preds=[0, 0, 1, 1, 2])


def test_per_class_figures_by_hand():
    results = _metrics(**SMALL).get_results()
    nan = float("nan")
    expected = {"Class IoU": [2 / 3, 1 / 2, 0, 0, nan], "Class Precision": [1, 1 / 2, 0, 0, nan],
                "Class Recall": [2 / 3, 1, 0, 0, nan], "Class F1": [4 / 5, 2 / 3, 0, 0, nan]}
    for key, values in expected.items():
        np.testing.assert_allclose(list(results[key].values()), values, rtol=1e-12, err_msg=key)
        assert list(results[key]) == list(range(5))


def test_means_over_present_classes_by_hand():
    results = _metrics(**SMALL).get_results()
    expected = {"Overall Acc": 3 / 5, "Mean IoU": 7 / 24, "Mean Precision": 3 / 8, "Mean Recall": 5 / 12,
                "Mean F1": 11 / 30, "FreqW IoU": 3 / 5 * 2 / 3 + 1 / 5 * 1 / 2, "FreqW Acc": 1 / 2,
                "Mean Acc": 5 / 9}  # the original's Mean Acc leaves out class 2 (not in the truth)
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, rel=1e-12), key
    assert results["Absent Classes"] == [4]
    assert "Object IoU" not in results


def test_to_str_says_absent_never_nan():
    metrics = _metrics(**SMALL, names=["background", "cat", "dog", "traffic light", "bus"])
    text = metrics.to_str(metrics.get_results())
    assert "nan" not in text.lower()
    assert re.search(r"^Mean IoU: ([0-9.]+)$", text, re.M).group(1) == "0.291667"  # what scripts parse
    assert "Absent classes (in neither truth nor prediction): bus" in text
    assert re.search(r"^ +4  bus +absent$", text, re.M)
    assert re.search(r"^ +0  background +0\.6667 +1\.0000 +0\.6667 +0\.8000$", text, re.M)
    assert re.search(r"^ +3  traffic light +0\.0000", text, re.M)  # present (truth only): 0, not absent


def test_binary_task_reports_the_object_class():
    results = _metrics(2, [0, 0, 1, 1, 1], [0, 1, 1, 1, 0]).get_results()
    assert results["Object IoU"] == pytest.approx(2 / 4)    # 2 TP, 1 FP, 1 FN
    assert results["Object Dice"] == pytest.approx(4 / 6)
    assert results["Object Dice"] == results["Class F1"][1]


def test_binary_task_without_object_says_absent():
    metrics = _metrics(2, [0, 0, 0], [0, 0, 0])
    results = metrics.get_results()
    assert np.isnan(results["Object IoU"]) and np.isnan(results["Object Dice"])
    assert results["Absent Classes"] == [1] and results["Mean IoU"] == results["Mean F1"] == 1.0
    text = metrics.to_str(results)
    assert "Object IoU: absent" in text and "Object Dice: absent" in text and "nan" not in text.lower()


def test_no_pixels_at_all():
    metrics = StreamSegMetrics(3)
    results = metrics.get_results()
    assert results["Absent Classes"] == [0, 1, 2] and np.isnan(results["Mean F1"])
    assert "nan" not in metrics.to_str(results).lower()
