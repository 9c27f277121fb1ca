"""Writing validation results: image, target, prediction and overlay PNGs (no matplotlib needed), each written
atomically."""
import os
from typing import Callable

import numpy as np
from PIL import Image

from utils.io.own_outputs import save_png

__all__ = ["overlay", "save_val_result"]

OVERLAY_ALPHA = 0.7


def overlay(image: np.ndarray, colour_mask: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Blend an (H, W, 3) uint8 colour mask over an (H, W, 3) uint8 image."""
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colour_mask.astype(np.float32)
    return blended.round().astype(np.uint8)


def save_val_result(folder: str, index: int, image: np.ndarray, target: np.ndarray, pred: np.ndarray,
                    decode: Callable[[np.ndarray], np.ndarray]) -> None:
    """``{index}_image.png``, ``_target.png``, ``_pred.png`` and ``_overlay.png`` in ``folder``."""
    coloured = decode(pred)
    for suffix, array in (("image", image), ("target", decode(target)), ("pred", coloured),
                          ("overlay", overlay(image, coloured))):
        save_png(Image.fromarray(array), os.path.join(folder, f"{index}_{suffix}.png"))
