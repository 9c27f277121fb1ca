"""Sliding windows over a scene: tapered sums leave no seam where one window's edge meets the next one's middle."""
import torch

from utils.inference.predictor import TAPER_FLOOR, sliding_window_labels, window_taper

BORDER = 4


def _edge_biased(crop: torch.Tensor) -> torch.Tensor:
    """Probabilities of a model that is wrong near its input's edges (as zero padding makes models): class 1 at 0.8
    within BORDER pixels of the crop's edge, class 0 at 0.7 inside."""
    _, _, height, width = crop.shape
    near_edge = torch.zeros(height, width, dtype=torch.bool)
    near_edge[:BORDER], near_edge[-BORDER:], near_edge[:, :BORDER], near_edge[:, -BORDER:] = True, True, True, True
    class1 = torch.where(near_edge, 0.8, 0.3)
    return torch.stack([1 - class1, class1])[None]


def test_tapered_windows_leave_no_seam_and_plain_sums_do():
    image = torch.zeros(1, 100, 130)
    inside = (slice(BORDER, -BORDER), slice(BORDER, -BORDER))  # the scene's own edge is seen by one window only
    plain = sliding_window_labels(_edge_biased, image, 2, 48, 32)  # a third of each window overlaps, as by default
    tapered = sliding_window_labels(_edge_biased, image, 2, 48, 32, taper=True)
    assert plain[inside].sum() > 0  # lines of class 1 where windows meet
    assert tapered[inside].sum() == 0


def test_the_taper_ramps_over_the_overlap_and_stays_positive():
    weights = window_taper(8, 10, 4)
    assert torch.isclose(weights[0, 0], torch.tensor((1 / 4) ** 2 * (1 / 4) ** 2))  # a corner: 1 pixel of 4, squared
    assert weights[4, 5] == 1.0 and torch.equal(weights, weights.flip(0).flip(1))
    assert torch.isclose(window_taper(3, 3, 5000).min(), torch.tensor(TAPER_FLOOR ** 2))  # positive everywhere
