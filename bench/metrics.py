"""StreamSegMetrics.update speed on the CPU vs the original's per-image numpy update, in one run.

Usage: python bench/metrics.py [--batch 8] [--size 513] [--repeats 20]
Target: >= 2x the original's update speed.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from metrics import StreamSegMetrics  # noqa: E402

NUM_CLASSES = 21


class OriginalUpdate:
    """The original's update: a masked numpy bincount per image, on arrays moved to the host."""

    def __init__(self, n: int):
        self.n = n
        self.confusion_matrix = np.zeros((n, n))

    def update(self, label_trues, label_preds):
        for lt, lp in zip(label_trues, label_preds):
            lt, lp = lt.flatten(), lp.flatten()
            mask = (lt >= 0) & (lt < self.n)
            self.confusion_matrix += np.bincount(self.n * lt[mask].astype(int) + lp[mask],
                                                 minlength=self.n ** 2).reshape(self.n, self.n)


def seconds_per_update(update, trues, preds, repeats: int) -> float:
    update(trues, preds)
    start = time.perf_counter()
    for _ in range(repeats):
        update(trues, preds)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=513)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    trues = rng.integers(0, NUM_CLASSES, (args.batch, args.size, args.size)).astype(np.int64)
    trues[:, :10] = 255
    preds = torch.from_numpy(rng.integers(0, NUM_CLASSES, trues.shape))  # argmax output: int64 tensor
    labels = torch.from_numpy(trues)

    original = OriginalUpdate(NUM_CLASSES)
    # The original converts predictions and labels to numpy first; that conversion is part of its cost.
    base = seconds_per_update(lambda t, p: original.update(t.numpy(), p.numpy()), labels, preds, args.repeats)
    ours = StreamSegMetrics(NUM_CLASSES)
    mine = seconds_per_update(ours.update, labels, preds, args.repeats)
    assert np.array_equal(original.confusion_matrix.astype(np.int64), ours.confusion_matrix.numpy())
    print(f"batch {args.batch} of {args.size}x{args.size}, {NUM_CLASSES} classes, CPU")
    print(f"original update  {base * 1e3:8.2f} ms")
    print(f"StreamSegMetrics {mine * 1e3:8.2f} ms   {base / mine:.2f}x faster")


if __name__ == "__main__":
    main()
