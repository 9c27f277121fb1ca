"""Streaming segmentation metrics from a confusion matrix kept on the predictions' device."""
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch

__all__ = ["StreamSegMetrics", "AverageMeter"]

ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def _absent(hist: np.ndarray) -> np.ndarray:
    """Classes with no pixel in the truth and none in the prediction."""
    return hist.sum(axis=0) + hist.sum(axis=1) == 0


def _precision_recall_f1(hist: np.ndarray) -> Dict[str, np.ndarray]:
    """Per-class figures: NaN for absent classes, 0 where a present class makes the ratio 0/0."""
    true_positives = np.diag(hist)
    truth, predicted = hist.sum(axis=1), hist.sum(axis=0)
    absent = _absent(hist)
    figures = {}
    for name, denominator in (("Precision", predicted), ("Recall", truth), ("F1", (truth + predicted) / 2)):
        # F1 = 2TP / (truth + predicted) is the Dice coefficient; it equals 2PR / (P + R) when both exist.
        values = np.divide(true_positives, denominator, out=np.zeros_like(true_positives), where=denominator > 0)
        values[absent] = np.nan
        figures[name] = values
    return figures


def _mean_of_present(values: np.ndarray) -> float:
    """Mean over the classes that are not NaN (absent); NaN when every class is absent."""
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else float("nan")


def _format(value: float, spec: str) -> str:
    return "absent" if np.isnan(value) else format(value, spec)


class StreamSegMetrics:
    """Accumulate a ``n_classes`` x ``n_classes`` confusion matrix (rows: truth, columns: prediction).

    Pixels whose truth is outside ``0..n_classes-1`` (the ignore index 255) are not counted.
    On CUDA the update is a single ``index_add_`` with no host synchronisation; on CPU it is one
    ``numpy.bincount`` over the whole batch (several times faster than ``torch.bincount`` there).
    """

    def __init__(self, n_classes: int, class_names: Optional[Sequence[str]] = None):
        self.n_classes = n_classes
        self.class_names = list(class_names) if class_names is not None else None
        self.confusion_matrix = torch.zeros(n_classes, n_classes, dtype=torch.int64)

    def update(self, label_trues: ArrayLike, label_preds: ArrayLike) -> None:
        """Add a batch (any shape; truths and predictions aligned) of integer labels."""
        preds = _as_tensor(label_preds)
        trues = _as_tensor(label_trues).to(preds.device)
        if trues.shape != preds.shape:
            raise ValueError(f"label shapes differ: truth {tuple(trues.shape)} vs prediction {tuple(preds.shape)}")
        if self.confusion_matrix.device != preds.device:
            with torch.inference_mode(False):  # a normal tensor, so reset() works outside inference mode
                self.confusion_matrix = self.confusion_matrix.to(preds.device)
        n = self.n_classes
        if preds.device.type == "cpu":
            self._update_cpu(trues.numpy().ravel(), preds.numpy().ravel())
            return
        trues = trues.reshape(-1).long()
        valid = (trues >= 0) & (trues < n)
        # Invalid pixels go to an overflow bin that is dropped: no boolean gather, no sync.
        index = torch.where(valid, trues * n + preds.reshape(-1).long(), torch.full_like(trues, n * n))
        counts = torch.zeros(n * n + 1, dtype=torch.int64, device=preds.device)
        counts.index_add_(0, index, torch.ones_like(index))
        self.confusion_matrix += counts[: n * n].view(n, n)

    def _update_cpu(self, trues: np.ndarray, preds: np.ndarray) -> None:
        n = self.n_classes
        if trues.dtype.kind == "i" and trues.size and trues.min() < 0:
            keep = trues >= 0
            trues, preds = trues[keep], preds[keep]
        # Truths >= n (255) land at index >= n*n and are cut off below: no mask needed.
        index = trues.astype(np.int64) * n + preds
        counts = np.bincount(index, minlength=n * n)[: n * n]
        self.confusion_matrix += torch.from_numpy(counts.reshape(n, n))

    def get_results(self) -> Dict[str, object]:
        """The original's figures (Overall Acc, Mean Acc, FreqW Acc, Mean IoU, Class IoU) with their exact values,
        then FreqW IoU, Mean/Class Precision, Recall and F1, Absent Classes, and Object IoU/Dice for 2 classes.

        A class is *absent* when neither truth nor prediction has a pixel of it: its per-class figures are NaN
        (as the original's Class IoU) and it is left out of every mean. A present class never gets NaN: a 0/0
        precision (class only in truth) or recall (class only in prediction) counts as 0, like its IoU and F1.
        Mean Acc is the original's mean recall over classes in the truth; Mean Recall also counts the classes
        found only in the prediction (recall 0), like Mean IoU does.
        """
        hist = self.confusion_matrix.double().cpu().numpy()
        diag = np.diag(hist)
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = diag.sum() / hist.sum()
            acc_cls = np.nanmean(diag / hist.sum(axis=1)) if (hist.sum(axis=1) > 0).any() else float("nan")
            iu = diag / (hist.sum(axis=1) + hist.sum(axis=0) - diag)
            mean_iu = np.nanmean(iu) if not np.isnan(iu).all() else float("nan")
            freq = hist.sum(axis=1) / hist.sum()
        # The original calls this "FreqW Acc" but it weights IoU, not accuracy: it is the frequency-weighted
        # IoU. The key stays for old readers; "FreqW IoU" below is the same value under its right name.
        fwavacc = (freq[freq > 0] * iu[freq > 0]).sum() if hist.sum() else float("nan")  # no pixel: no figure
        results: Dict[str, object] = {
            "Overall Acc": float(acc),
            "Mean Acc": float(acc_cls),
            "FreqW Acc": float(fwavacc),
            "Mean IoU": float(mean_iu),
            "Class IoU": {i: float(v) for i, v in enumerate(iu)},
            "FreqW IoU": float(fwavacc),
        }
        per_class = _precision_recall_f1(hist)
        for name, values in per_class.items():
            results[f"Mean {name}"] = _mean_of_present(values)
        if self.n_classes == 2:  # mean IoU averages in the (easy) background: report the object alone too
            results["Object IoU"] = float(iu[1])
            results["Object Dice"] = float(per_class["F1"][1])
        for name, values in per_class.items():
            results[f"Class {name}"] = {i: float(v) for i, v in enumerate(values)}
        results["Absent Classes"] = [int(i) for i in np.flatnonzero(_absent(hist))]
        return results

    def to_str(self, results: Dict[str, object]) -> str:
        """The scalar results one per line, then a table of per-class IoU, precision, recall and F1."""
        lines = [f"{key}: {_format(value, '.6f')}" for key, value in results.items() if isinstance(value, float)]
        absent = results["Absent Classes"]
        names = [self.class_names[i] if self.class_names else str(i) for i in range(self.n_classes)]
        width = max(len("class"), *map(len, names))
        columns = ("IoU", "Precision", "Recall", "F1")
        listed = ", ".join(names[i] for i in absent) or "none"
        lines.append(f"Absent classes (in neither truth nor prediction): {listed}")
        lines.append(f"  {'index':>5s}  {'class':<{width}s}" + "".join(f"  {c:>9s}" for c in columns))
        for index, name in enumerate(names):
            row = f"  {index:5d}  {name:<{width}s}"
            if index in absent:
                lines.append(row + f"  {'absent':>9s}")
                continue
            lines.append(row + "".join(f"  {_format(results[f'Class {c}'][index], '.4f'):>9s}" for c in columns))
        return "\n".join(lines)

    def reset(self) -> None:
        self.confusion_matrix.zero_()


class AverageMeter:
    """Running averages of several named values (``update(id, val)``, ``get_results(id)``)."""

    def __init__(self):
        self.book: Dict[str, list] = {}

    def reset_all(self) -> None:
        self.book.clear()

    def reset(self, id: str) -> None:
        if id in self.book:
            self.book[id] = [0.0, 0]

    def update(self, id: str, val: float) -> None:
        total, count = self.book.get(id, [0.0, 0])
        self.book[id] = [total + float(val), count + 1]

    def get_results(self, id: str) -> float:
        total, count = self.book[id]
        return total / count
