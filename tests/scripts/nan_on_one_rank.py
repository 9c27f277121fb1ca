"""Run main.py with a loss that turns NaN on process 1 alone at its second step (torchrun test helper)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

import main  # noqa: E402
from utils.loss import build_criterion  # noqa: E402


class NaNOnRankOne(torch.nn.Module):
    """The real loss, except on process 1 at its second call."""

    def __init__(self, *args, **kwargs):  # build_criterion's arguments, whichever main.py passes
        super().__init__()
        self.loss = build_criterion(*args, **kwargs)
        self.calls = 0

    def forward(self, outputs, labels):
        self.calls += 1
        loss = self.loss(outputs, labels)
        return loss * float("nan") if os.environ.get("RANK") == "1" and self.calls == 2 else loss


if __name__ == "__main__":
    main.build_criterion = NaNOnRankOne
    sys.exit(main.main())
