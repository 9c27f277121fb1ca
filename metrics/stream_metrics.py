"""Streaming segmentation metrics from a confusion matrix kept on the predictions' device."""
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch

__all__ = ["StreamSegMetrics", "AverageMeter"]

ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


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
        """Overall Acc, Mean Acc, FreqW Acc, Mean IoU (NaN-aware: classes absent from truth and prediction
        are left out) and Class IoU, as the original computes them."""
        hist = self.confusion_matrix.double().cpu().numpy()
        diag = np.diag(hist)
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = diag.sum() / hist.sum()
            acc_cls = np.nanmean(diag / hist.sum(axis=1)) if (hist.sum(axis=1) > 0).any() else float("nan")
            iu = diag / (hist.sum(axis=1) + hist.sum(axis=0) - diag)
            mean_iu = np.nanmean(iu) if not np.isnan(iu).all() else float("nan")
            freq = hist.sum(axis=1) / hist.sum()
        fwavacc = (freq[freq > 0] * iu[freq > 0]).sum()
        return {
            "Overall Acc": float(acc),
            "Mean Acc": float(acc_cls),
            "FreqW Acc": float(fwavacc),
            "Mean IoU": float(mean_iu),
            "Class IoU": {i: float(v) for i, v in enumerate(iu)},
        }

    def to_str(self, results: Dict[str, object]) -> str:
        """The scalar results one per line, then the class IoU table (with names when known)."""
        lines = [f"{k}: {v:.6f}" for k, v in results.items() if k != "Class IoU"]
        lines.append("Class IoU:")
        for index, iou in results["Class IoU"].items():
            name = self.class_names[index] if self.class_names else str(index)
            lines.append(f"  {index:3d} {name:<16s} {'   n/a' if np.isnan(iou) else f'{iou:.4f}'}")
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
