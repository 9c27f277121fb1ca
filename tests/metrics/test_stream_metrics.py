"""StreamSegMetrics equals the original's numpy formulas, ignores 255, and is NaN-aware."""
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
